"""Start-up as an operator meets it: ``python -m bot run`` with a setting or a peer that is wrong.

Each problem is told in one line that names it, without a traceback: the HTTP port already taken,
Telegram unreachable or refusing the webhook, WhatsApp half configured (the service stops,
non-zero), and a WispHub API key that WispHub refuses (the service runs, ``/readyz`` stays 503,
and one ERROR line says why). No secret is ever printed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import (
    START_SECONDS,
    WEBHOOK_SECRET,
    BotProcess,
    bot_env,
    eventually,
    free_port,
)
from telegram_api import running_fake_telegram

from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

BOT_TOKEN = "123456789:AAE-startup-test-token-abcdefghijklmnop"
WRONG_KEY = "not-the-sandbox-key-7f3a9c"


async def stopped(name: str, env: dict[str, str], workdir: Path) -> str:
    """Run the bot, wait (bounded, without blocking the loop) until it stops by itself, check
    the exit code is non-zero; everything it wrote."""
    bot = BotProcess(name, env, workdir)
    bot.launch()
    assert bot.proc is not None
    deadline = time.monotonic() + START_SECONDS
    while bot.proc.poll() is None:
        if time.monotonic() > deadline:
            bot.kill9()
            msg = f"bot {name} kept running:\n{bot.logs()}"
            raise AssertionError(msg)
        await asyncio.sleep(0.05)
    assert bot.proc.returncode != 0, bot.logs()
    return bot.logs()


def lines_with(output: str, *words: str) -> list[str]:
    """The lines of the output that contain every one of ``words``."""
    return [line for line in output.splitlines() if all(w in line for w in words)]


def assert_told_once(output: str, *words: str) -> str:
    """Exactly one line names the problem, and no traceback came with it; that line."""
    assert "Traceback" not in output, output
    found = lines_with(output, *words)
    assert len(found) == 1, output
    return found[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_a_port_in_use_is_one_line_naming_it(
    sandbox: Sandbox, workdir: Path, taken_port: int
) -> None:
    output = await stopped("port-taken", bot_env(None, sandbox.url, taken_port), workdir)
    line = assert_told_once(output, "HTTP_PORT", str(taken_port))
    assert "already in use" in line


async def test_telegram_unreachable_is_one_line_naming_it(sandbox: Sandbox, workdir: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = bot_env(
        None, sandbox.url, free_port(), TELEGRAM_BOT_TOKEN=BOT_TOKEN, TELEGRAM_API_URL=dead
    )
    output = await stopped("telegram-dead", env, workdir)
    line = assert_told_once(output, "TELEGRAM_API_URL")
    assert "cannot reach Telegram" in line
    assert dead in line
    assert BOT_TOKEN.split(":")[1] not in output


async def test_a_webhook_telegram_refuses_is_one_line_naming_it(
    sandbox: Sandbox, workdir: Path
) -> None:
    refusal = "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
    async with running_fake_telegram() as fake:
        fake.fail("setWebhook", 400, count=None, description=refusal)
        env = bot_env(
            fake,
            sandbox.url,
            free_port(),
            TELEGRAM_WEBHOOK_URL="http://bot.example/webhooks/telegram",
            TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
        )
        output = await stopped("webhook-refused", env, workdir)
    line = assert_told_once(output, "TELEGRAM_WEBHOOK_URL")
    assert "Telegram refused setWebhook" in line
    assert refusal in line
    assert fake.token.split(":")[1] not in output


async def test_whatsapp_half_configured_names_the_missing_settings(
    sandbox: Sandbox, workdir: Path
) -> None:
    env = bot_env(
        None,
        sandbox.url,
        free_port(),
        WHATSAPP_ACCESS_TOKEN="EAAG-secret-access-token",
        WHATSAPP_PHONE_NUMBER_ID="1098765",
    )
    output = await stopped("whatsapp-half", env, workdir)
    line = assert_told_once(output, "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN")
    assert "WHATSAPP_ACCESS_TOKEN" not in line
    assert "WHATSAPP_PHONE_NUMBER_ID" not in line
    assert "EAAG-secret-access-token" not in output


async def test_a_refused_wispHub_key_is_one_error_line_and_the_service_runs(
    sandbox: Sandbox, workdir: Path
) -> None:
    env = bot_env(None, sandbox.url, free_port(), WISPHUB_API_KEY=WRONG_KEY)
    bot = BotProcess("wisphub-key", env, workdir)
    await bot.start()
    try:

        async def told() -> bool:
            return bool(lines_with(bot.logs(), "WISPHUB_API_KEY"))

        await eventually(told, "the line about the refused key")
        status, _ = await bot.request("GET", "/readyz")
        assert status == 503
    finally:
        assert await bot.terminate() == 0
    output = bot.logs()
    line = assert_told_once(output, "WISPHUB_API_KEY")
    record = json.loads(line)
    assert record["level"] == "error"
    assert record["msg"].startswith("WispHub refused the API key (WISPHUB_API_KEY)")
    assert WRONG_KEY not in output
