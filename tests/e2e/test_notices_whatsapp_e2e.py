"""Notices on WhatsApp end to end (issue 15): ``python -m bot run`` with the fake Graph API, the
sandbox and Redis (database 12, flushed), NOTIFY_POLL_SECONDS=1.

A customer whose 24-hour window is known closed gets the approved template of a notice kind
that has one (WHATSAPP_TEMPLATE_OUTAGE_RESOLVED), never free text; a kind without one
(ticket updates here) is not sent at all, and counted in ``wispbot_notices_skipped_total``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from e2e_harness import BotProcess, bot_env, free_port, launched, running
from graph_api import FakeGraph, running_fake_graph

from bot.channels.whatsapp.memory import window_key
from bot.store.subscriptions import RedisRegistry
from flows.types import ConvKey
from integrations.wisphub.sandbox import Sandbox, running_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

REDIS_URL = os.environ.get("E2E_WHATSAPP_REDIS_URL", "redis://127.0.0.1:6379/12")
TOKEN = "EAAG-e2e-notices-token"
WA = "573001112233"
ROUTER, SERVICE = 2, 12
TEMPLATE = "servicio_restablecido"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def graph() -> AsyncIterator[FakeGraph]:
    async with running_fake_graph(TOKEN) as fake:
        yield fake


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(Sandbox()) as served:
        yield served


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(
    request: pytest.FixtureRequest,
    graph: FakeGraph,
    sandbox: Sandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[BotProcess]:
    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()
    env = bot_env(
        None,
        sandbox.url,
        free_port(),
        REDIS_URL=REDIS_URL,
        NOTIFY_POLL_SECONDS="1",
        WHATSAPP_ACCESS_TOKEN=TOKEN,
        WHATSAPP_PHONE_NUMBER_ID=graph.phone_number_id,
        WHATSAPP_APP_SECRET="e2e-app-secret",
        WHATSAPP_VERIFY_TOKEN="e2e-verify-token",
        WHATSAPP_API_URL=graph.base_url,
        WHATSAPP_TEMPLATE_OUTAGE_RESOLVED=TEMPLATE,
        WHATSAPP_TEMPLATE_LANGUAGE="es_CO",
    )
    bots = {"wa": BotProcess("wa-notices", env, tmp_path_factory.mktemp("wa-notices"))}
    async with launched(bots, str(request.path)):
        yield await running(bots["wa"])


async def _skipped(bot: BotProcess, reason: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{bot.url}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(f'wispbot_notices_skipped_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_outside_the_window_a_template_or_nothing(
    bot: BotProcess, graph: FakeGraph, sandbox: Sandbox
) -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.set(window_key(WA), "0", ex=3600)  # the window is known closed
        registry = RedisRegistry(client)
        until = time.time() + 3600
        key = ConvKey("whatsapp", WA)
        ticket = str(sandbox.tickets[0]["id_ticket"])
        await registry.subscribe("outage", str(ROUTER), key, service_id=SERVICE, until=until)
        await registry.subscribe("ticket", ticket, key, service_id=SERVICE, until=until)
    finally:
        await client.aclose()
    sandbox.set_ticket_status(int(ticket), "3")
    sandbox.set_outage(ROUTER, False)
    [message] = await graph.wait_for_messages(WA, 1, timeout=20.0)
    assert message["type"] == "template"
    assert message["template"]["name"] == TEMPLATE
    assert message["template"]["language"] == {"code": "es_CO"}
    deadline = time.monotonic() + 20.0
    while await _skipped(bot, "no_template") < 1:
        assert time.monotonic() < deadline, "the ticket's notice was not counted as skipped"
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)  # two more ticks: nothing else is sent
    assert len(graph.messages_to(WA)) == 1
