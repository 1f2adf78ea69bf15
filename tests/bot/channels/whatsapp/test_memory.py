"""The WhatsApp channel's memory in Redis: any process serves "más opciones" and knows the
24-hour window (issue 12), against a real Redis (``TEST_REDIS_URL``)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from redis.asyncio import Redis

from bot.channels.base import WindowClosed
from bot.channels.whatsapp.channel import WINDOW_SECONDS, WhatsAppChannel
from bot.channels.whatsapp.memory import RedisMemory
from bot.channels.whatsapp.settings import WhatsAppSettings
from bot.channels.whatsapp.webhook import WhatsAppWebhook
from flows.types import ConvKey, Inbound, Option, Outbound

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "fakes"))

import graph_api
from graph_api import FakeGraph, running_fake_graph, signed_request
from whatsapp_kit import ANA, SECRET, TOKEN

KEY = ConvKey("whatsapp", ANA)


def settings(api_url: str) -> WhatsAppSettings:
    return WhatsAppSettings(
        access_token=SecretStr(TOKEN),
        phone_number_id=graph_api.PHONE_NUMBER_ID,
        app_secret=SecretStr(SECRET),
        verify_token=SecretStr("verify"),
        api_url=api_url,
    )


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    try:
        await client.ping()
    except OSError:
        await client.aclose()
        pytest.skip("no Redis")
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeGraph]:
    async with running_fake_graph(TOKEN) as graph:
        yield graph


class Process:
    """One process's WhatsApp channel and webhook, sharing the memory in Redis."""

    def __init__(self, fake: FakeGraph, redis: Redis, clock: list[float]) -> None:
        self.received: list[Inbound] = []
        self.channel = WhatsAppChannel(
            settings(fake.base_url),
            clock=lambda: clock[0],
            more_label="Ver más",
            memory=RedisMemory(redis),
        )

        async def sink(inbound: Inbound) -> None:
            self.received.append(inbound)

        self.webhook = WhatsAppWebhook(
            settings(fake.base_url), sink, channel=self.channel, clock=lambda: clock[0]
        )
        app = web.Application()
        app.router.add_post("/webhooks/whatsapp", self.webhook.post)
        self.client = TestClient(TestServer(app))

    async def press(self, row_id: str) -> None:
        body, headers = signed_request(graph_api.inbound_list(ANA, row_id, "x"), SECRET)
        response = await self.client.post("/webhooks/whatsapp", data=body, headers=headers)
        assert response.status == 200
        await self.webhook.drain()


@pytest.fixture
async def two(fake: FakeGraph, redis: Redis) -> AsyncIterator[tuple[Process, Process]]:
    clock = [100_000.0]
    first, second = Process(fake, redis, clock), Process(fake, redis, clock)
    async with first.client, second.client:
        yield first, second
    await first.channel.aclose()
    await second.channel.aclose()


async def test_another_process_serves_the_next_page_of_a_long_list(
    fake: FakeGraph, two: tuple[Process, Process]
) -> None:
    first, second = two
    options = tuple(Option(f"opt{i}", f"Plan número {i}") for i in range(1, 24))
    await first.channel.send(Outbound(KEY, "Elige tu plan", options))
    [page0] = await fake.wait_for_messages(ANA, 1)
    assert page0["interactive"]["action"]["sections"][0]["rows"][-1]["id"] == "__more:1"

    await second.press("__more:1")  # Meta sent the press to the other process
    sent = await fake.wait_for_messages(ANA, 2)
    rows = sent[-1]["interactive"]["action"]["sections"][0]["rows"]
    assert [r["id"] for r in rows[:-1]] == [f"opt{i}" for i in range(10, 19)]
    assert second.received == []  # served by the channel, never a turn of its own

    await first.press("opt12")  # a real choice ends the paging, in every process
    assert [i.payload for i in first.received] == ["opt12"]
    await second.press("__more:2")
    assert [i.payload for i in second.received] == ["__more:2"]  # a stray press: re-prompted
    assert len(fake.messages_to(ANA)) == 2


async def test_another_process_knows_the_window(
    fake: FakeGraph, redis: Redis, two: tuple[Process, Process]
) -> None:
    first, second = two
    await first.press("hola")  # the customer wrote, through the first process
    assert await second.channel.window_open(ANA)

    fake.close_window(ANA)
    with pytest.raises(WindowClosed):
        await second.channel.send(Outbound(KEY, "¿Sigues ahí?"))
    attempts = fake.attempts
    with pytest.raises(WindowClosed):  # known closed everywhere: no doomed call
        await first.channel.send(Outbound(KEY, "¿Hola?"))
    assert fake.attempts == attempts
    assert await redis.ttl(f"wispbot:wa:window:{ANA}") > WINDOW_SECONDS


async def test_an_unreachable_redis_leaves_the_window_unknown_and_replies_going(
    fake: FakeGraph,
) -> None:
    broken = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    channel = WhatsAppChannel(settings(fake.base_url), memory=RedisMemory(broken))
    try:
        await channel.note_inbound(ANA, 1.0)
        assert not await channel.window_known_closed(ANA)  # unknown: Graph decides
        options = tuple(Option(f"opt{i}", f"Plan {i}") for i in range(1, 24))
        await channel.send(Outbound(KEY, "Elige", options))
        assert len(fake.messages_to(ANA)) == 1
    finally:
        await channel.aclose()
        await broken.aclose()
