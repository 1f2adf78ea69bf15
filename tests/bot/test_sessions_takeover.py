"""A dead process's turns are taken over in their places; a live one's never are.

Each RedisStore stands for one process. A conversation's line holds its turns in arrival order,
the owner first; a turn whose lock lapsed keeps its place while its process lives (a Redis
outage, a pause), and only a process whose key lapsed while Redis was up is taken for dead: its
journalled turns are handed to another process in their places, and the dead one, should it
wake up, can save nothing (fencing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.sessions import LockLost, RedisStore, Session, TurnStart, redis_key
from bot.types import ConvKey

URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY = ConvKey("telegram", "5151")
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
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def pair(admin: Redis) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    first, second = RedisStore.from_url(URL), RedisStore.from_url(URL)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def open_turn(store: RedisStore, event: str) -> TurnStart:
    start = await store.open_turn(
        KEY,
        event,
        rate_scope=f"rate:{KEY}",
        rate_window=60,
        rate_limit=100,
        lease=LEASE,
        journal=f'{{"e": "{event}"}}',
    )
    assert start.claimed
    assert start.ticket is not None
    return start


async def taken_for_dead(admin: Redis, store: RedisStore) -> None:
    """The store's process key lapses (it died, or paused for longer than a lease)."""
    name = redis_key("alive", store._process)
    for _ in range(100):  # its first renewal is on its way: let it land, then lapse it
        if await admin.exists(name):
            break
        await asyncio.sleep(0.01)
    await admin.delete(name)  # renewed again only a third of a lease later


async def test_a_dead_processs_turns_are_taken_over_in_their_order(
    pair: tuple[RedisStore, RedisStore], admin: Redis
) -> None:
    """A runs message 1 and has 2 and 3 waiting; 4 reached B. A dies: B takes 1, 2 and 3 over
    in their places (1 with the lock), ahead of its own 4, and only once."""
    a, b = pair
    starts = [await open_turn(a, "1"), await open_turn(a, "2"), await open_turn(a, "3")]
    mine = await open_turn(b, "4")
    assert [s.locked for s in starts] == [True, False, False]
    await a.aclose()  # killed: its key goes (here at once; by its lease when killed -9)

    taken = await b.take_orphans(0)

    assert [o.event for o in taken] == ['{"e": "1"}', '{"e": "2"}', '{"e": "3"}']
    assert [o.start.locked if o.start else None for o in taken] == [True, False, False]
    assert await b.take_orphans(0) == []  # taken once
    served: list[str] = []

    async def turn(name: str, start: TurnStart) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if not start.locked:
                await stack.enter_async_context(
                    b.lock(KEY, timeout=LEASE, wait=5.0, ticket=start.ticket)
                )
            served.append(name)
            await b.save_and_release(KEY, Session(state=name), DAY, start.ticket, name)

    tasks = [turn("4", mine)]
    tasks += [turn(str(i + 1), o.start) for i, o in enumerate(taken) if o.start is not None]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert served == ["1", "2", "3", "4"]
    assert not await admin.hlen("wispbot:turns:inflight")


async def test_a_lapsed_lock_keeps_its_place_while_its_process_lives(
    pair: tuple[RedisStore, RedisStore], admin: Redis
) -> None:
    """Redis lost the lock's lease (an outage longer than a lease): the next in line does not
    take it; the owner's next save takes it again and goes on."""
    a, b = pair
    first = await open_turn(a, "1")
    second = await open_turn(b, "2")
    await admin.delete(LOCK)  # the lease lapsed while Redis was down
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.5), b.lock(KEY, timeout=LEASE, wait=5, ticket=second.ticket):
            pytest.fail("the second turn overtook the first")
    await b.drop_turn(KEY, "2")  # the waiter gave up (as the engine does when cancelled)
    await a.save(KEY, Session(state="one"), DAY, "1", ticket=first.ticket)
    assert await admin.get(LOCK) == str(first.ticket).encode()  # taken again
    assert await b.take_orphans(0) == []  # alive: nothing to take over


async def test_a_turn_taken_over_saves_nothing(
    pair: tuple[RedisStore, RedisStore], admin: Redis
) -> None:
    """A pauses mid-turn for longer than a lease: B takes its turn over; when A wakes up, its
    saves are refused (fencing) and what B saved stays."""
    a, b = pair
    paused = await open_turn(a, "1")
    await taken_for_dead(admin, a)
    [orphan] = await b.take_orphans(0)
    assert orphan.start is not None
    assert orphan.start.locked
    await b.save(KEY, Session(state="by-b"), DAY, "1", ticket=orphan.start.ticket)

    with pytest.raises(LockLost):
        await a.save(KEY, Session(state="by-a"), DAY, "1", ticket=paused.ticket)
    with pytest.raises(LockLost):
        await a.save_and_release(KEY, Session(state="by-a"), DAY, paused.ticket, "1")
    stored = await b.load(KEY)
    assert stored is not None
    assert stored.state == "by-b"
    await b.save_and_release(KEY, Session(state="by-b"), DAY, orphan.start.ticket)
    assert await admin.get(LOCK) is None


async def test_open_turn_again_after_a_lost_answer_finds_its_own_turn(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """The first call ran but its answer was lost (Redis died after writing it): the engine's
    retry of the same call is the same turn, not a repeat of the event to drop."""
    a, _ = pair
    first = await open_turn(a, "1")
    a._opening[(f"wispbot:conv:{KEY}", "1")] = str(first.ticket)  # the retry reuses its token
    again = await open_turn(a, "1")
    assert again == first
    assert again.ticket == first.ticket
    other = await a.open_turn(
        KEY, "1", rate_scope=f"rate:{KEY}", rate_window=60, rate_limit=100, lease=LEASE
    )
    assert not other.claimed  # a true repeat is still dropped
