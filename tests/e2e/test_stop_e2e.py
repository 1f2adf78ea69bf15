"""SIGTERM while customers' turns wait on a slow WispHub (issue 10, item 14), end to end.

One ``python -m bot run`` in webhook mode for both channels: Telegram (the fake Bot API) and
WhatsApp (the fake Graph API, signed calls), against the WispHub sandbox and a real Redis
(conftest's fixtures). Customers' document look-ups are in flight, taking seconds each, when
SIGTERM lands; more customers write right after it.

Expected: every turn in flight finishes with its real answer (the holder's name is asked), never
"Tuve un problema" (a client closed under it); a webhook call after SIGTERM is answered 503 on
both channels, so Telegram and Meta send it again (to the next process), and nothing of it is
handled by the stopping one; the process exits 0.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_harness import (
    WEBHOOK_SECRET,
    BotProcess,
    Chat,
    bot_env,
    eventually,
    fold,
    free_port,
    launched,
    post_update,
    running,
)
from graph_api import FakeGraph, inbound_text, running_fake_graph, sign
from telegram_api import FakeTelegram

from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "EAAG-e2e-stop-token"
APP_SECRET = "e2e-stop-app-secret"
PHONE_NUMBER_ID = "106540352242922"
# Demo clients' documents, one per customer: look-ups of one document share one request.
DOCUMENTS = ("1020304050", "79856321", "52123456", "1098765432", "80123456", "1032456789")
STRANGER = "573125550001"  # no client has this number
LATENCY = 3.0  # seconds WispHub takes per client look-up while SIGTERM lands
ASKS_NAME = "nombre completo del titular"
PROBLEM = "tuve un problema"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def graph() -> AsyncIterator[FakeGraph]:
    """The fake Graph API (where the bot sends WhatsApp replies)."""
    async with running_fake_graph(TOKEN, phone_number_id=PHONE_NUMBER_ID) as served:
        yield served


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def both(
    request: pytest.FixtureRequest,
    webhook_fake: FakeTelegram,
    graph: FakeGraph,
    sandbox: Sandbox,
    workdir: Path,
) -> AsyncIterator[BotProcess]:
    """The bot, in webhook mode for Telegram and with WhatsApp on."""
    port = free_port()
    env = bot_env(
        webhook_fake,
        sandbox.url,
        port,
        TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/telegram",
        TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
        WHATSAPP_ACCESS_TOKEN=TOKEN,
        WHATSAPP_PHONE_NUMBER_ID=PHONE_NUMBER_ID,
        WHATSAPP_APP_SECRET=APP_SECRET,
        WHATSAPP_VERIFY_TOKEN="e2e-stop-verify",
        WHATSAPP_API_URL=graph.base_url,
    )
    bot = BotProcess("stop", env, workdir)
    bot.telegram = webhook_fake
    async with launched({"stop": bot}, str(request.path)):
        yield bot


@pytest_asyncio.fixture(loop_scope="module")
async def bot(both: BotProcess, clean: None, graph: FakeGraph) -> BotProcess:
    """The bot, running, with a flushed Redis database and a fresh sandbox and Graph fake."""
    graph.reset()
    return await running(both)


def whatsapp_call(wa_id: str, text: str) -> bytes:
    """The body of Meta's webhook call for a customer's text."""
    return json.dumps(inbound_text(wa_id, text)).encode()


async def whatsapp(bot: BotProcess, body: bytes) -> int:
    """Meta posts a (signed) webhook call: the HTTP status."""
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, APP_SECRET)}
    status, _ = await bot.request("POST", "/webhooks/whatsapp", data=body, headers=headers)
    return status


def said(graph: FakeGraph, wa_id: str) -> str:
    """Everything the bot sent one WhatsApp customer, folded."""
    parts = []
    for message in graph.messages_to(wa_id):
        if message.get("type") == "text":
            parts.append(message["text"]["body"])
        elif message.get("type") == "interactive":
            inter = message["interactive"]
            parts.append(inter["body"]["text"])
            parts += [b["reply"]["title"] for b in inter["action"].get("buttons", [])]
            parts += [r["title"] for s in inter["action"].get("sections", []) for r in s["rows"]]
    return fold("\n".join(parts))


async def whatsapp_expect(graph: FakeGraph, wa_id: str, pattern: str) -> None:
    """Wait (bounded) until the customer was told something matching ``pattern``."""
    try:
        await graph.wait_until(lambda: re.search(fold(pattern), said(graph, wa_id)) is not None, 15)
    except TimeoutError:
        msg = f"{wa_id} was never told {pattern!r}: {said(graph, wa_id)!r}"
        raise AssertionError(msg) from None


async def to_document_question_telegram(bot: BotProcess, chat: Chat) -> None:
    """Walk a Telegram customer to the document question (WispHub fast)."""
    assert await post_update(bot, chat.say("/start")) == 200
    await chat.expect("Soy cliente")
    assert await post_update(bot, chat.press("Soy cliente")) == 200
    await chat.expect("numero de documento")


async def to_document_question_whatsapp(bot: BotProcess, graph: FakeGraph, wa_id: str) -> None:
    """Walk a WhatsApp customer (a number WispHub does not know) to the document question."""
    assert await whatsapp(bot, whatsapp_call(wa_id, "/start")) == 200
    await whatsapp_expect(graph, wa_id, "Soy cliente")
    assert await whatsapp(bot, whatsapp_call(wa_id, "Soy cliente")) == 200
    await whatsapp_expect(graph, wa_id, "documento")


async def test_sigterm_under_wisphub_latency_finishes_turns_and_refuses_new_webhooks(
    bot: BotProcess, webhook_fake: FakeTelegram, graph: FakeGraph, sandbox: Sandbox
) -> None:
    """Four customers' look-ups wait on WispHub when SIGTERM lands; then a Telegram customer
    and a WhatsApp customer write. The four get their real answers from the stopping process;
    the two are refused with 503 and answered by the next process, when their calls come
    again (as Telegram and Meta send them)."""
    names = ("Ana", "Luz", "Rosa", "Pedro")
    early = [Chat(webhook_fake, 880_001 + n, name) for n, name in enumerate(names)]
    late = Chat(webhook_fake, 880_010, "Marta")
    for chat in (*early, late):
        await to_document_question_telegram(bot, chat)
    await to_document_question_whatsapp(bot, graph, STRANGER)

    sandbox.add_fault("^/clientes/", status=0, delay=LATENCY, count=None)
    seen = len(sandbox.requests)
    for chat, document in zip(early, DOCUMENTS, strict=False):
        assert await post_update(bot, chat.say(document)) == 200

    async def looking_up() -> bool:
        return len(sandbox.requests) - seen >= len(early)

    await eventually(looking_up, "the four document look-ups to reach WispHub")
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)

    async def stop_begun() -> bool:
        return "stopping: draining" in bot.logs()

    await eventually(stop_begun, "the bot to log that it stops")
    late_update = late.say(DOCUMENTS[4])
    late_call = whatsapp_call(STRANGER, DOCUMENTS[5])
    statuses = (await post_update(bot, late_update), await whatsapp(bot, late_call))

    assert await bot.terminate(timeout=40) == 0, bot.logs()
    told = [fold(m.text or "") for chat in (*early, late) for m in chat.window()]
    told.append(said(graph, STRANGER))
    assert not [t for t in told if PROBLEM in t], told
    for chat in early:
        await chat.expect(ASKS_NAME)
    assert statuses == (503, 503)
    # Not handled by the stopping process: they come again, to the next one.
    assert late.window() == [], late.transcript()
    assert ASKS_NAME not in said(graph, STRANGER)

    sandbox.clear_faults()
    await bot.start()
    assert await post_update(bot, late_update) == 200
    assert await whatsapp(bot, late_call) == 200
    await late.expect(ASKS_NAME)
    await whatsapp_expect(graph, STRANGER, ASKS_NAME)
    assert not [m for m in late.window() if PROBLEM in fold(m.text or "")]
