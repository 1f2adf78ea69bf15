"""Nothing the store writes grows for ever: every key expires (issue 10, item 13).

Against a real Redis (``TEST_REDIS_URL``, database 15 by default, flushed) and, where the
contract has a time to it, against the in-memory store too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.store import (
    INBOX_KEY,
    JOURNAL_KEY,
    JOURNAL_MAX_AGE,
    MemoryStore,
    RedisStore,
    Session,
    SessionStore,
    redis_key,
)
from flows.types import ConvKey

ANA = ConvKey("telegram", "1001")
LUIS = ConvKey("whatsapp", "573001112233")
DAY = 86400
TOPIC_TTL = 3600
LIMITS: dict[str, Any] = {"rate_scope": "r:ana", "rate_window": 60, "rate_limit": 30, "lease": 5.0}


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    """A client of the test database, flushed before and after."""
    client = Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    try:
        await client.ping()
    except OSError as err:
        pytest.skip(f"no Redis for the store tests: {err}")
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
async def redis_store(admin: Redis) -> AsyncIterator[tuple[RedisStore, FakeClock]]:
    """The Redis store on the test database, with a clock the test moves."""
    clock = FakeClock()
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    store = RedisStore.from_url(url, clock=clock, topic_ttl=TOPIC_TTL)
    try:
        yield store, clock
    finally:
        await store.aclose()


async def ttls(admin: Redis) -> dict[str, int]:
    """Every key of the database and its TTL in seconds (-1: none)."""
    return {k.decode(): await admin.ttl(k) async for k in admin.scan_iter(count=500)}


async def test_every_key_the_store_writes_expires(
    redis_store: tuple[RedisStore, FakeClock], admin: Redis
) -> None:
    """Every kind of key, each through the store's own operations, has a TTL."""
    store, _ = redis_store
    first = await store.open_turn(ANA, "ev1", journal='{"e": 1}', **LIMITS)
    # A second turn of the same conversation waits in the lock's line, journalled too.
    second = await store.open_turn(ANA, "ev2", journal='{"e": 2}', **LIMITS)
    assert (first.locked, second.locked) == (True, False)
    await store.claim_event("whatsapp", "wamid.1")
    await store.register_failure("doc:123", window=1800)
    await store.hit_rate("whatsapp:573001112233", window=60)
    await store.set_topic(5501, ANA)
    await store.push_inbox('{"kept": 1}')
    await store.save(LUIS, Session(state="main.menu"), ttl=DAY)

    found = await ttls(admin)

    kinds = {name.split(":")[1] for name in found}
    assert {"conv", "lock", "seen", "rate", "lockout", "topic", "turns", "inbox"} <= kinds
    assert redis_key("lock", "telegram", "1001") + ":queue" in found
    assert {name: ttl for name, ttl in found.items() if ttl < 0} == {}
    await store.save_and_release(ANA, Session(), DAY, first.ticket, "ev1")


async def test_a_topic_mapping_expires_unless_used(
    redis_store: tuple[RedisStore, FakeClock], admin: Redis
) -> None:
    store, _ = redis_store
    name = redis_key("topic", "5501")
    await store.set_topic(5501, ANA)
    assert 0 < await admin.ttl(name) <= TOPIC_TTL
    await admin.expire(name, 10)  # most of its life gone

    assert await store.get_topic(5501) == ANA  # an agent writes in the topic: renewed
    assert await admin.ttl(name) > 10

    await admin.expire(name, 10)
    await store.set_topic(5501, ANA)  # the customer asks for an agent again: renewed
    assert await admin.ttl(name) > 10


async def test_a_topic_mapping_expires_in_memory_too() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock, topic_ttl=TOPIC_TTL)
    await store.set_topic(5501, ANA)
    clock.now += TOPIC_TTL - 1
    assert await store.get_topic(5501) == ANA  # used: a whole TTL again from now
    clock.now += TOPIC_TTL - 1
    assert await store.get_topic(5501) == ANA
    clock.now += TOPIC_TTL + 1
    assert await store.get_topic(5501) is None


async def _journal_one_dead_turn(store: SessionStore) -> None:
    opened = await store.open_turn(ANA, "ev1", journal='{"e": 1}', **LIMITS)
    await store.release(ANA, opened.ticket)  # its process died: the lock lapsed


async def test_the_journal_of_turns_in_flight_is_bounded(
    redis_store: tuple[RedisStore, FakeClock], admin: Redis
) -> None:
    """The hash expires after its last write, and the sweep drops an entry older than the
    limit instead of handling a day-old message again."""
    store, clock = redis_store
    await _journal_one_dead_turn(store)
    assert 0 < await admin.ttl(JOURNAL_KEY) <= 2 * JOURNAL_MAX_AGE

    clock.now += JOURNAL_MAX_AGE + 1
    assert await store.take_orphans(0) == []
    assert not await admin.exists(JOURNAL_KEY)


async def test_a_recent_dead_turn_is_still_handled_again(
    redis_store: tuple[RedisStore, FakeClock],
) -> None:
    """The bound keeps the recovery: a turn younger than the limit is taken as before."""
    store, clock = redis_store
    await _journal_one_dead_turn(store)
    clock.now += JOURNAL_MAX_AGE - 60
    assert [o.event for o in await store.take_orphans(0)] == ['{"e": 1}']


async def test_the_memory_journal_is_bounded_too() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await _journal_one_dead_turn(store)
    clock.now += JOURNAL_MAX_AGE + 1
    assert await store.take_orphans(0) == []
    assert store._journal == {}


async def test_the_inbox_expires_after_its_last_push(
    redis_store: tuple[RedisStore, FakeClock], admin: Redis
) -> None:
    store, _ = redis_store
    await store.push_inbox('{"kept": 1}')
    await admin.expire(INBOX_KEY, 10)
    await store.push_inbox('{"kept": 2}')
    assert await admin.ttl(INBOX_KEY) > 10
    assert await store.pop_inbox() == ['{"kept": 1}', '{"kept": 2}']
