"""The command line as a user runs it: chat with piped input, diagrams, bad usage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.logs import log_key, pseudonym
from bot.types import ConvKey

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
    for flow in ("main", "identify", "client", "fault", "promise", "plans", "agent"):
        assert f"wispbot · {flow}" in result.stdout
    assert result.stdout.count("stateDiagram-v2") == 7


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
