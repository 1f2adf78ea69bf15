"""The command line as a user runs it: chat with piped input, diagrams, bad usage."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.logs import log_key, pseudonym
from flows.registry import FLOW_CLASSES
from flows.types import ConvKey

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    environ.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        timeout=60,
        check=False,
    )


def test_chat_with_piped_input_walks_a_demo_customer_to_the_account() -> None:
    result = run(["chat"], "1\n1020304050\nana ruiz\n1\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "FibraNet Demo" in out
    assert "[1] Soy cliente" in out
    assert "Gracias, Ana" in out
    assert "$ 89.900" in out
    assert "password" not in out.lower()


def test_chat_speaks_english_when_asked() -> None:
    result = run(["chat"], "#2\n", BOT_LANGUAGE="en")
    assert result.returncode == 0, result.stderr
    assert "Hello!" in result.stdout
    assert "Our internet plans" in result.stdout


def test_a_bad_setting_stops_with_one_line_naming_it() -> None:
    result = run(["chat"], "", BOT_LANGUAGE="fr")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "BOT_LANGUAGE" in lines[0]


def test_diagram_prints_mermaid_for_every_flow() -> None:
    result = run(["diagram"])
    assert result.returncode == 0
    flows = (
        "main",
        "identify",
        "client",
        "fault",
        "promise",
        "plans",
        "agent",
        "notice",
        "reminder",
        "payment_report",
        "payment_methods",
        "service_request",
    )
    for flow in flows:
        assert f"wispbot · {flow}" in result.stdout
    assert result.stdout.count("stateDiagram-v2") == len(FLOW_CLASSES)


def test_diagram_of_an_unknown_flow_fails_clearly() -> None:
    result = run(["diagram", "nope"])
    assert result.returncode == 2
    assert "unknown flow" in result.stderr


def test_logkey_prints_the_pseudonym_the_service_logs_a_customer_by() -> None:
    """How an operator finds a customer's lines: ``python -m bot logkey whatsapp +57 300...``
    under the deployment's settings (here its WispHub key) prints their ``conv`` value."""
    key = ConvKey("whatsapp", "573001112233")
    result = run(["logkey", "whatsapp", "+57 300 111 2233"], WISPHUB_API_KEY="tenant-api-key")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == pseudonym(key, log_key("tenant-api-key"))
    own = run(["logkey", "whatsapp", "573001112233"], LOG_KEY="own", WISPHUB_API_KEY="x")
    assert own.stdout.strip() == pseudonym(key, log_key("own"))  # LOG_KEY, when set, wins
    assert run(["logkey", "telegram", "ana"]).returncode == 2


def test_a_whole_handoff_goes_through_the_console() -> None:
    # The customer asks for an agent by the option's label, writes, the agent answers and
    # closes (lines starting with ! are the agent's), and the bot is back with its menu.
    handoff = "Hablar con un asesor\nmi internet no funciona\n!hola, soy Luis\n!/cerrar\n"
    result = run(["chat"], handoff)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    asked = out.index("Te comunico con un asesor")
    relayed = out.index(") mi internet no funciona")  # shown as it reached the agents' topic
    answered = out.index("bot> hola, soy Luis")
    closed = out.index("El asesor cerró la conversación")
    assert asked < relayed < answered < closed
    # The public menu is offered again after the agent closed, and the topic is told.
    assert "[3] Hablar con un asesor" in out[closed:]
    assert "Atención cerrada. El bot retoma la conversación." in out[closed:]


@pytest.mark.parametrize(
    ("language", "first_line"),
    [
        ("es", "Modo demo: las conversaciones se guardan solo en memoria y se borran al salir."),
        ("en", "Demo mode: conversations are kept in memory only and are gone when you quit."),
    ],
)
def test_the_chat_opens_with_a_friendly_line_about_memory_not_a_redis_warning(
    language: str, first_line: str
) -> None:
    result = run(["chat"], "", BOT_LANGUAGE=language)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == first_line
    assert "REDIS_URL" not in result.stderr
    assert "WARNING" not in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals only")
def test_a_handoff_typed_at_a_terminal_ends_when_the_input_does() -> None:
    # At a terminal the chat once hung after the crash: its reader thread kept the process alive.
    import pty

    environ = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    environ.update(PYTHONPATH=str(ROOT), TERM="dumb")
    terminal, child_side = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "bot", "chat"],
        stdin=child_side,
        stdout=child_side,
        stderr=child_side,
        cwd=ROOT,
        env=environ,
    ) as chat:
        os.close(child_side)
        os.write(terminal, b"3\nmi internet no funciona\n!hola, soy Luis\n!/cerrar\n\x04")
        out = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 1)
            if ready:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # the chat closed its terminal
                    break
                if not chunk:
                    break
                out += chunk
        os.close(terminal)
        try:
            code = chat.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            chat.kill()
            raise
    text = out.decode(errors="replace")
    assert code == 0, text
    assert "El asesor cerró la conversación" in text
    assert "Traceback" not in text
