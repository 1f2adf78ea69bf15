"""The engine's own turns (the sweep, an agent's message, a notice) are fenced like a customer's.

They take the conversation with ``store.lock``; when their place in the conversation's line is
taken over meanwhile (their process stalled for longer than a lease and was taken for dead),
they save nothing, never act as the turn that holds the lock now, and give up with a warning:
what they did not do is left to the new owner or the next sweep. A real Redis: the fencing is
its scripts'.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.engine import Deliver
from bot.handoff import LocalAgents
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from bot.store import RedisStore, Session, redis_key
from flows.types import AgentMessage, ConvKey, Inbound, Kind, Outbound
from integrations.wisphub.sandbox import Sandbox

URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY = ConvKey("telegram", "5301")
LOCK = redis_key("lock", KEY.channel, KEY.chat_id)
LEASE = 5.0
DAY = 86400


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    client = Redis.from_url(URL, socket_connect_timeout=0.5)
    try:
        await client.ping()
    except (RedisError, OSError):
        await client.aclose()
        if os.environ.get("CI"):
            pytest.fail(f"no Redis at {URL}")
        pytest.skip(f"no Redis at {URL}")
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def rt(admin: Redis) -> AsyncIterator[Runtime]:
    store = RedisStore.from_url(URL)
    try:
        async with open_runtime(
            load_settings(), LocalAgents(), sandbox=Sandbox(), store=store
        ) as runtime:
            yield runtime
    finally:
        await store.aclose()


async def open_turn(store: RedisStore, event: str) -> str | None:
    start = await store.open_turn(
        KEY, event, rate_scope=f"rate:{KEY}", rate_window=60, rate_limit=100, lease=LEASE
    )
    return start.ticket if start.locked else None


def stall_once(
    store: RedisStore, admin: Redis, monkeypatch: pytest.MonkeyPatch, customer_turn: bool
) -> list[str | None]:
    """The next turn to load the conversation (holding its lock) stalls right after: its
    process's key and the lock's lease lapse; another process's turn, waiting in line, passes
    its place over and runs; then (``customer_turn``) this process's next customer turn takes
    the lock. The list gets that turn's lock once the stall happened (None without one)."""
    load = store.load
    stalled: list[str | None] = []

    async def load_then_stall(key: ConvKey) -> Session | None:
        loaded = await load(key)
        if stalled:
            return loaded
        beat = store._heartbeat
        if beat is not None:
            beat.cancel()
        await admin.delete(redis_key("alive", store._process), LOCK)
        other = RedisStore.from_url(URL)
        try:
            start = await other.open_turn(
                KEY, "ev2", rate_scope=f"rate:{KEY}", rate_window=60, rate_limit=100, lease=LEASE
            )
            async with other.lock(KEY, timeout=LEASE, wait=5, ticket=start.ticket):
                seen = await other.load(KEY)
                assert seen is not None
                await other.save_and_release(KEY, seen, DAY, start.ticket)
        finally:
            await other.aclose()
        stalled.append(await open_turn(store, "ev3") if customer_turn else None)
        return loaded

    monkeypatch.setattr(store, "load", load_then_stall)
    return stalled


def sending_to(sent: list[Outbound]) -> Deliver:
    """A channel that sends everything, into ``sent``."""

    async def deliver(replies: list[Outbound]) -> list[Outbound]:
        sent.extend(replies)
        return []

    return deliver


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("then_a_customer_turn", [False, True])
async def test_a_sweep_whose_place_was_taken_over_gives_up_and_leaves_the_outbox(
    rt: Runtime,
    admin: Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    then_a_customer_turn: bool,
) -> None:
    """The channel was down: the greeting waits in the outbox. The sweep takes the conversation
    to send it, and its process stalls: another process passes its place over and runs a turn
    (and then, maybe, this process's next customer turn takes the lock). The sweep sends
    nothing, saves nothing, leaves that turn's lock alone and warns (no traceback at ERROR);
    the greeting is sent once, by the next sweep (or that customer turn)."""
    store = rt.store
    assert isinstance(store, RedisStore)

    async def down(replies: list[Outbound]) -> list[Outbound]:
        return replies

    await rt.engine.handle(Inbound(KEY, "ev1", Kind.TEXT, text="/start"), down)
    stalled = stall_once(store, admin, monkeypatch, then_a_customer_turn)
    sent: list[Outbound] = []
    deliver = sending_to(sent)
    with caplog.at_level(logging.WARNING, logger="bot"):
        await rt.engine.sweep(deliver)
    [mine] = stalled
    assert sent == []
    assert errors(caplog) == []
    assert "sweep of a conversation given up" in caplog.text
    assert await admin.get(LOCK) == (None if mine is None else mine.encode())
    monkeypatch.undo()
    session = await store.load(KEY)
    assert session is not None
    assert len(session.outbox) == 2  # the greeting and its menu
    if mine is not None:  # the customer's turn, its lock still its own, sends them
        await store.save_and_release(KEY, session, DAY, mine)
    else:
        await rt.engine.sweep(deliver)
        assert len(sent) == 2


@pytest.mark.parametrize("turn", ["agent", "notice"])
async def test_an_agents_message_or_a_notice_whose_place_was_taken_over_runs_again_once(
    rt: Runtime,
    admin: Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    turn: str,
) -> None:
    """In a handoff, an agent's message (or the slow-agents notice) takes the conversation and
    its process stalls: another process's turn passes its place over. Nothing of it was
    delivered: it runs again at the end of the line and reaches the customer once, with a
    warning and no error."""
    store = rt.store
    assert isinstance(store, RedisStore)
    for n, text in enumerate(("/start", "Hablar con un asesor")):
        await rt.engine.handle(Inbound(KEY, f"ev-h{n}", Kind.TEXT, text=text))
    agents = rt.handoff
    assert isinstance(agents, LocalAgents)
    topic = agents.topic_of(KEY)
    assert topic is not None
    stalled = stall_once(store, admin, monkeypatch, False)
    sent: list[Outbound] = []
    deliver = sending_to(sent)
    with caplog.at_level(logging.WARNING, logger="bot"):
        if turn == "agent":
            message = AgentMessage(topic.thread_id, 1, "Hola, soy Luis", "Luis")
            await rt.engine.from_agent(message, deliver)
        else:
            await rt.engine.tell(topic.thread_id, "agents_slow", deliver)
    assert stalled == [None]  # the stall happened
    assert len(sent) == 1
    if turn == "agent":
        assert sent[0].text == "Hola, soy Luis"
    assert errors(caplog) == []
    assert "tried again: its place was taken over" in caplog.text
    assert await admin.get(LOCK) is None
