"""Two processes sharing one Redis serve a conversation's waiting turns first come, first served.

Each RedisStore stands for one process. When a turn ends, the lock goes straight to the oldest
waiter, so the releasing process cannot run its own next message ahead of the other process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.sessions import RedisStore, Session, TurnStart
from bot.types import ConvKey

URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY = ConvKey("telegram", "4242")
LEASE = 5.0


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
