"""The relay outbox: what the customer's turn queues reaches the agents' topic, merged, in order,
never lost to Telegram's group ceiling (fake Bot API and channel: tests/bot/conftest.py;
memory and Redis outboxes)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from telegram_api import FakeTelegram

from bot.channels.telegram.channel import TelegramChannel
from bot.channels.telegram.render import MAX_TEXT
from bot.channels.telegram.topics import TelegramAgents
from bot.engine import LOCK_LEASE_SECONDS
from bot.relay import RelayingAgents, RelayWorker, merge
from bot.store.outbox import MemoryOutbox, Outbox, RedisOutbox
from flows.ports import AgentRequest
from flows.types import ConvKey, Inbound, Kind, Media

ANA = ConvKey("telegram", "1001")


class Clock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def outbox(request: pytest.FixtureRequest) -> AsyncIterator[Outbox]:
    """Both outboxes; the Redis one on the test database, flushed."""
    if request.param == "memory":
        yield MemoryOutbox()
        return
    client = Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    try:
        await client.ping()
    except OSError:
        await client.aclose()
        pytest.skip("no Redis")
    await client.flushdb()
    try:
        yield RedisOutbox(client)
    finally:
        await client.aclose()


def text(at: float, body: str) -> dict[str, object]:
    return {"at": at, "text": body}


# ---- merging --------------------------------------------------------------------------------


def test_pending_texts_are_merged_up_to_telegrams_limit() -> None:
    entries = [text(1, "a" * 2000), text(2, "b" * 2000), text(3, "c" * 100)]
    count, merged = merge(entries)
    assert count == 2
    assert merged == "a" * 2000 + "\n\n" + "b" * 2000
    assert len(merged) <= MAX_TEXT


def test_media_goes_alone_and_stops_a_merge() -> None:
    media = {"at": 2, "inbound": "{}", "label": "[foto]"}
    assert merge([media, text(3, "x")]) == (1, None)
    assert merge([text(1, "x"), media, text(3, "y")]) == (1, "x")


def test_a_text_longer_than_the_limit_goes_alone() -> None:
    assert merge([text(1, "a" * 5000), text(2, "b")]) == (1, "a" * 5000)


# ---- the outbox contract --------------------------------------------------------------------


async def test_outbox_keeps_order_and_due_topics_oldest_first(outbox: Outbox) -> None:
    await outbox.push(7, text(10, "primero"))
    await outbox.push(8, text(5, "otro tema"))
    await outbox.push(7, text(20, "segundo"))
    assert await outbox.due(10) == [(8, 5.0), (7, 10.0)]
    assert [e["text"] for e in await outbox.peek(7, 10)] == ["primero", "segundo"]
    await outbox.ack(7, 1)
    # The topic is now as old as its first pending relay.
    assert await outbox.due(10) == [(8, 5.0), (7, 20.0)]
    await outbox.ack(7, 1)
    await outbox.ack(8, 1)
    assert await outbox.due(10) == []


async def test_a_customer_message_is_queued_once_however_often_its_turn_runs(
    outbox: Outbox,
) -> None:
    assert await outbox.push(7, text(1, "hola"), "telegram:41")
    assert not await outbox.push(7, text(2, "hola"), "telegram:41")
    assert await outbox.push(7, text(3, "nota"))
    assert [e["text"] for e in await outbox.peek(7, 10)] == ["hola", "nota"]


async def test_one_sender_a_topic_and_one_notice_a_handoff(outbox: Outbox) -> None:
    async with outbox.claim(7) as first, outbox.claim(7) as second:
        assert (first, second) == (True, False)
    async with outbox.claim(7) as again:
        assert again
    assert await outbox.first_tell(7)
    assert not await outbox.first_tell(7)
    await outbox.reset_tell(7)
    assert await outbox.first_tell(7)


# ---- the worker against the fake Bot API ----------------------------------------------------


def relay_parts(
    channel: TelegramChannel, outbox: Outbox, told: list[int], clock: Clock
) -> tuple[RelayingAgents, RelayWorker]:
    agents = TelegramAgents(channel, "es")

    async def tell(thread: int) -> None:
        told.append(thread)

    worker = RelayWorker(outbox, agents, tell, slow_after=30, clock=clock)
    return RelayingAgents(agents, outbox, clock=clock, wake=worker.wake), worker


async def drain(worker: RelayWorker) -> None:
    while await worker.drain_once():
        pass


async def test_a_turn_only_queues_and_the_worker_merges_in_order(
    fake: FakeTelegram, channel: TelegramChannel, outbox: Outbox
) -> None:
    told: list[int] = []
    port, worker = relay_parts(channel, outbox, told, Clock())
    thread = await port.open(AgentRequest(ANA, "Ana"), None)
    for n in (1, 2, 3):
        event = Inbound(key=ANA, event_id=str(n), kind=Kind.TEXT, text=f"mensaje {n}")
        await port.forward(thread, event, f"mensaje {n}")
    photo = Inbound(key=ANA, event_id="4", kind=Kind.MEDIA, media=Media("photo", "55"))
    await port.forward(thread, photo, "[foto]")
    await port.notify(thread, "nota del bot")
    assert fake.sent(fake.agents_chat_id) == []  # nothing sent during the turn

    await drain(worker)
    posts = fake.sent(fake.agents_chat_id)
    assert [p.method for p in posts] == ["sendMessage", "copyMessage", "sendMessage"]
    assert {p.message_thread_id for p in posts} == {thread}
    first = posts[0].text or ""
    assert first.startswith("Nueva conversación")
    assert first.index("mensaje 1") < first.index("mensaje 2") < first.index("mensaje 3")
    assert posts[1].source_message_id == 55
    assert posts[2].text == "nota del bot"
    assert await outbox.due(10) == []
    assert (worker.sent_messages, worker.relayed) == (3, 6)
    assert told == []


async def test_the_group_ceiling_delays_relays_but_loses_none(
    fake: FakeTelegram, channel: TelegramChannel, outbox: Outbox
) -> None:
    fake.flood_limit(per_window=1, window=1.0)
    port, worker = relay_parts(channel, outbox, [], Clock())
    threads = [await port.open(AgentRequest(ANA, f"Cliente {i}"), None) for i in range(3)]
    for thread in threads:
        await port.notify(thread, f"hola desde {thread}")
    await drain(worker)
    posts = fake.sent(fake.agents_chat_id)
    assert len(posts) == 3  # one merged message a topic
    assert fake.flood_refusals >= 1  # the ceiling was met, and waited out
    for thread, post in zip(threads, posts, strict=True):
        assert post.message_thread_id == thread
        assert (post.text or "").endswith(f"hola desde {thread}")


async def test_a_refused_send_stays_queued_and_is_sent_later(
    fake: FakeTelegram, channel: TelegramChannel, outbox: Outbox
) -> None:
    port, worker = relay_parts(channel, outbox, [], Clock())
    thread = await channel.create_topic("Ana")
    await port.notify(thread, "no se pierde")
    fake.fail("sendMessage", error_code=500, count=6)  # more than the channel's retries
    assert not await worker.drain_once()
    assert [e["text"] for e in await outbox.peek(thread, 10)] == ["no se pierde"]
    worker._retry_at.clear()  # the backoff has passed
    await drain(worker)
    assert [p.text for p in fake.sent(fake.agents_chat_id)] == ["no se pierde"]


async def test_the_customer_is_told_once_when_relays_wait_too_long(
    channel: TelegramChannel, outbox: Outbox
) -> None:
    told: list[int] = []
    clock = Clock()
    port, worker = relay_parts(channel, outbox, told, clock)
    thread = await channel.create_topic("Ana")
    await port.notify(thread, "uno")
    await worker.watch_once()
    assert told == []
    clock.now += 31
    await worker.watch_once()
    await worker.watch_once()
    assert told == [thread]
    # A new handoff in the topic: told again if it is slow again.
    await port.open(AgentRequest(ANA, "Ana"), thread)
    await worker.watch_once()
    assert told == [thread, thread]


async def test_a_copy_telegram_keeps_refusing_is_noted_and_does_not_hold_back_the_rest(
    fake: FakeTelegram, channel: TelegramChannel, outbox: Outbox
) -> None:
    port, worker = relay_parts(channel, outbox, [], Clock())
    thread = await channel.create_topic("Ana")
    photo = Inbound(key=ANA, event_id="1", kind=Kind.MEDIA, media=Media("photo", "55"))
    await port.forward(thread, photo, "[El cliente envió photo]")
    await port.notify(thread, "después de la foto")
    fake.fail(
        "copyMessage",
        error_code=400,
        count=None,
        description="Bad Request: message to copy not found",
    )
    for _ in range(3):
        worker._retry_at.clear()  # each backoff has passed
        await worker.drain_once()
    worker._retry_at.clear()
    await drain(worker)
    posts = fake.sent(fake.agents_chat_id)
    assert [p.text for p in posts] == ["[El cliente envió photo]\n\ndespués de la foto"]


async def test_a_claim_its_dead_sender_left_lapses_within_a_conversation_locks_lease() -> None:
    """A process killed while sending a topic's relays never gives its claim back: the topic's
    relays wait for it to lapse (CI saw an agent's topic miss a customer's message for 10 s after
    a restart), never longer than a conversation waits for its lock."""
    client = Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    try:
        await client.flushdb()
        claim = RedisOutbox(client).claim(7)
        assert await claim.__aenter__()  # and its process dies before it gives the claim back
        try:
            lease_ms = await client.pttl("wispbot:relay:lock:7")
            assert 0 < lease_ms <= LOCK_LEASE_SECONDS * 1000
        finally:
            await claim.__aexit__(None, None, None)
    finally:
        await client.flushdb()
        await client.aclose()
