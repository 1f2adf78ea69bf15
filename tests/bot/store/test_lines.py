"""Two processes sharing one Redis serve a conversation's waiting turns first come, first served.

Each RedisStore stands for one process. When a turn ends, the lock goes straight to the oldest
waiter, so the releasing process cannot run its own next message ahead of the other process's.

The line holds a conversation's turns in arrival order, the owner first; a turn whose lock
lapsed keeps its place while its process lives (a Redis outage, a pause), and only a process
whose key lapsed while Redis was up is taken for dead: its journalled turns are handed to
another process in their places, and the dead one, should it wake up, can save nothing
(fencing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.store import LockLost, LockTimeout, RedisStore, Session, TurnStart, redis_key
from flows.types import ConvKey

URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY = ConvKey("telegram", "4242")
LEASE = 5.0
LOCK = redis_key("lock", KEY.channel, KEY.chat_id)
DAY = 86400


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    admin = Redis.from_url(URL, socket_connect_timeout=0.5)
    try:
        await admin.ping()
    except (RedisError, OSError):
        await admin.aclose()
        if os.environ.get("CI"):
            pytest.fail(f"no Redis at {URL}")
        pytest.skip(f"no Redis at {URL}")
    await admin.flushdb()
    first, second = RedisStore.from_url(URL), RedisStore.from_url(URL)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()
        await admin.aclose()


async def open_turn(store: RedisStore, event: str) -> TurnStart:
    start = await store.open_turn(
        KEY, event, rate_scope=f"rate:{KEY}", rate_window=60, rate_limit=100, lease=LEASE
    )
    assert start.claimed
    assert start.ticket is not None  # holding the lock, or in line
    return start


async def test_the_lock_goes_to_the_oldest_waiter_not_back_to_its_holder(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    served: list[str] = []

    async def wait_and_serve(store: RedisStore, name: str, start: TurnStart) -> None:
        async with store.lock(KEY, timeout=LEASE, wait=5.0, ticket=start.ticket):
            served.append(name)

    first = await open_turn(a, "1")
    assert first.locked  # process A runs message 1
    in_b = await open_turn(b, "2")
    assert not in_b.locked  # message 2 reached process B: it waits in line
    second = asyncio.create_task(wait_and_serve(b, "2", in_b))
    await asyncio.sleep(0.05)
    in_a = await open_turn(a, "3")
    assert not in_a.locked  # message 3, process A again: behind message 2
    third = asyncio.create_task(wait_and_serve(a, "3", in_a))
    await asyncio.sleep(0.05)
    await a.save_and_release(KEY, Session(state="main.menu"), 60, first.ticket)  # 1 ends
    await asyncio.wait_for(asyncio.gather(second, third), timeout=5)
    assert served == ["2", "3"]


async def test_turns_of_one_process_queue_in_the_line_without_taking_each_others_lock(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """Three messages of one conversation reach one process, a fourth the other, in that order:
    each waits in the shared line with its own ticket; a turn's release never gives back the
    lock its successor in the same process was just handed."""
    a, b = pair
    served: list[str] = []

    inside: list[str] = []  # the turns between taking the lock and giving it back
    entered = {name: asyncio.Event() for name in "1234"}

    async def turn(store: RedisStore, name: str, start: TurnStart) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if not start.locked:
                await stack.enter_async_context(
                    store.lock(KEY, timeout=LEASE, wait=5.0, ticket=start.ticket)
                )
            assert inside == [], (name, inside)  # nobody holds the lock beside this turn
            inside.append(name)
            entered[name].set()
            served.append(name)
            await asyncio.sleep(0.3)  # the turn runs past its predecessor's last step
            inside.remove(name)
            await store.save_and_release(KEY, Session(state=name), 60, start.ticket)
            if name != "4":  # the next turn, handed the lock, takes it
                await asyncio.wait_for(entered[str(int(name) + 1)].wait(), timeout=2)
            # The engine gives back the lock once more on the way out: a no-op for this turn,
            # and not the release of the next turn's lock.
            await store.release(KEY, start.ticket)

    starts = [await open_turn(a, "1"), await open_turn(a, "2"), await open_turn(a, "3")]
    starts.append(await open_turn(b, "4"))
    assert [s.locked for s in starts] == [True, False, False, False]
    stores = [a, a, a, b]
    tasks = [
        asyncio.create_task(turn(store, str(i + 1), start))
        for i, (store, start) in enumerate(zip(stores, starts, strict=True))
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert served == ["1", "2", "3", "4"]
    assert await a.client.get("wispbot:lock:telegram:4242") is None  # the last one freed it


async def test_a_waiter_that_died_does_not_block_the_line_for_longer_than_a_lease(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    first = await open_turn(a, "1")
    assert first.locked
    assert not (await open_turn(b, "2")).locked  # B queues, then dies without ever polling
    await b.aclose()
    in_a = await open_turn(a, "3")
    assert not in_a.locked
    await a.save_and_release(KEY, Session(state="main.menu"), 60, first.ticket)  # to dead B
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with a.lock(KEY, timeout=LEASE, wait=LEASE + 3, ticket=in_a.ticket):
        waited = loop.time() - started
    assert waited < LEASE + 2  # the handed lease lapsed, and the next in line took the lock


async def test_a_cancelled_waiter_leaves_the_line_at_once(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    served: list[str] = []

    async def wait_and_serve(store: RedisStore, name: str, start: TurnStart) -> None:
        async with store.lock(KEY, timeout=LEASE, wait=5.0, ticket=start.ticket):
            served.append(name)

    first = await open_turn(a, "1")
    assert first.locked
    in_b = await open_turn(b, "2")
    cancelled = asyncio.create_task(wait_and_serve(b, "2", in_b))
    await asyncio.sleep(0.05)
    cancelled.cancel()  # process B stops while its message waits in line
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    line = await a.client.lrange("wispbot:lock:telegram:4242:queue", 0, -1)
    assert line == [str(first.ticket).encode()]  # it left the line; the holder heads it
    in_a = await open_turn(a, "3")
    assert not in_a.locked
    third = asyncio.create_task(wait_and_serve(a, "3", in_a))
    await asyncio.sleep(0.05)
    await a.save_and_release(KEY, Session(state="main.menu"), 60, first.ticket)
    await asyncio.wait_for(third, timeout=LEASE - 1)  # handed over, not a lapsed lease
    assert served == ["3"]


async def journalled(store: RedisStore, event: str) -> TurnStart:
    """A customer's turn as the engine opens it: its event in the journal of turns in flight."""
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
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """A runs message 1 and has 2 and 3 waiting; 4 reached B. A dies: B takes 1, 2 and 3 over
    in their places (1 with the lock), ahead of its own 4, and only once."""
    a, b = pair
    admin = b.client
    starts = [await journalled(a, "1"), await journalled(a, "2"), await journalled(a, "3")]
    mine = await journalled(b, "4")
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
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """Redis lost the lock's lease (an outage longer than a lease): the next in line does not
    take it; the owner's next save takes it again and goes on."""
    a, b = pair
    admin = a.client
    first = await journalled(a, "1")
    second = await journalled(b, "2")
    await admin.delete(LOCK)  # the lease lapsed while Redis was down
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.5), b.lock(KEY, timeout=LEASE, wait=5, ticket=second.ticket):
            pytest.fail("the second turn overtook the first")
    await b.drop_turn(KEY, "2")  # the waiter gave up (as the engine does when cancelled)
    await a.save(KEY, Session(state="one"), DAY, "1", ticket=first.ticket)
    assert await admin.get(LOCK) == str(first.ticket).encode()  # taken again
    assert await b.take_orphans(0) == []  # alive: nothing to take over


async def test_a_turn_taken_over_saves_nothing(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """A pauses mid-turn for longer than a lease: B takes its turn over; when A wakes up, its
    saves are refused (fencing) and what B saved stays."""
    a, b = pair
    admin = a.client
    paused = await journalled(a, "1")
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
    first = await journalled(a, "1")
    a._opening[(f"wispbot:conv:{KEY}", "1")] = str(first.ticket)  # the retry reuses its token
    again = await journalled(a, "1")
    assert again == first
    assert again.ticket == first.ticket
    other = await a.open_turn(
        KEY, "1", rate_scope=f"rate:{KEY}", rate_window=60, rate_limit=100, lease=LEASE
    )
    assert not other.claimed  # a true repeat is still dropped


async def test_a_dead_turn_whose_outcome_is_saved_is_passed_over(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """A dies after its turn saved its outcome (the replies in the outbox) but before giving
    the lock back: nothing is left to take over, so the next in line passes it once its lease
    lapsed. One still in the journal is not passed: it is taken over in its place."""
    a, b = pair
    admin = b.client
    saved = await journalled(a, "1")
    await a.save(
        KEY, Session(state="one", outbox=[{"text": "hola"}]), DAY, "1", ticket=saved.ticket
    )
    await a.aclose()  # killed: its key goes
    await admin.delete(LOCK)  # and its lease lapses
    async with b.lock(KEY, timeout=LEASE, wait=2):
        stored = await b.load(KEY)
    assert stored is not None
    assert stored.outbox == [{"text": "hola"}]  # the next turn sends what was not sent

    c = RedisStore.from_url(URL)
    try:
        await journalled(c, "2")
        await c.aclose()  # dies mid-turn, its event still in the journal
        await admin.delete(LOCK)
        with pytest.raises(LockTimeout):
            async with b.lock(KEY, timeout=LEASE, wait=0.3):
                pytest.fail("a turn in the journal was passed over")
        [orphan] = await b.take_orphans(0)
        assert orphan.start is not None
        assert orphan.start.locked
    finally:
        await c.aclose()


async def paused(admin: Redis, store: RedisStore) -> None:
    """The store's process stalls for longer than a lease (a loaded machine): its key and its
    locks' leases lapse, and it renews nothing meanwhile."""
    beat = store._heartbeat
    if beat is not None:
        beat.cancel()
    await admin.delete(redis_key("alive", store._process), LOCK)


async def test_a_lock_taken_over_saves_nothing_and_never_uses_the_next_turns_lock(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """A's sweep holds the lock (``lock``, not ``open_turn``) and A stalls: B's waiting turn
    passes its place over and runs; then A's next customer turn takes the lock. The sweep's
    saves, with the place ``lock`` yielded, are refused (fencing) instead of saving and
    releasing as the customer's turn, whose lock and session stay as they were."""
    a, b = pair
    admin = b.client
    async with a.lock(KEY, timeout=LEASE, wait=1) as swept:
        assert swept is not None  # the sweep's place in the line
        await paused(admin, a)
        waiting = await open_turn(b, "1")
        async with b.lock(KEY, timeout=LEASE, wait=5, ticket=waiting.ticket):
            await b.save_and_release(KEY, Session(state="by-b"), DAY, waiting.ticket)
        mine = await open_turn(a, "2")
        assert mine.locked  # the customer's next turn, in the sweep's process

        with pytest.raises(LockLost):
            await a.save(KEY, Session(state="swept"), DAY, ticket=swept)
        with pytest.raises(LockLost):
            await a.save_and_release(KEY, Session(state="swept"), DAY, swept)
        assert await admin.get(LOCK) == str(mine.ticket).encode()
    assert await admin.get(LOCK) == str(mine.ticket).encode()  # its exit took nothing either
    stored = await a.load(KEY)
    assert stored is not None
    assert stored.state == "by-b"
    await a.save_and_release(KEY, Session(state="two"), DAY, mine.ticket)
    assert await admin.get(LOCK) is None
