"""Two processes sharing one Redis serve a conversation's waiting turns first come, first served.

Each RedisStore stands for one process. When a turn ends, the lock goes straight to the oldest
waiter, so the releasing process cannot run its own next message ahead of the other process's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.sessions import RedisStore, Session
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


async def open_turn(store: RedisStore, event: str) -> bool:
    start = await store.open_turn(
        KEY, event, rate_scope=f"rate:{KEY}", rate_window=60, rate_limit=100, lease=LEASE
    )
    assert start.claimed
    return start.locked


async def test_the_lock_goes_to_the_oldest_waiter_not_back_to_its_holder(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    served: list[str] = []

    async def wait_and_serve(store: RedisStore, name: str) -> None:
        async with store.lock(KEY, timeout=LEASE, wait=5.0):
            served.append(name)

    assert await open_turn(a, "1") is True  # process A runs message 1
    assert await open_turn(b, "2") is False  # message 2 reached process B: it waits in line
    second = asyncio.create_task(wait_and_serve(b, "2"))
    await asyncio.sleep(0.05)
    assert await open_turn(a, "3") is False  # message 3, process A again: behind message 2
    third = asyncio.create_task(wait_and_serve(a, "3"))
    await asyncio.sleep(0.05)
    await a.save_and_release(KEY, Session(state="main.menu"), ttl=60)  # message 1 ends
    await asyncio.wait_for(asyncio.gather(second, third), timeout=5)
    assert served == ["2", "3"]


async def test_a_waiter_that_died_does_not_block_the_line_for_longer_than_a_lease(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    assert await open_turn(a, "1") is True
    assert await open_turn(b, "2") is False  # B queues, then "dies" without ever polling
    assert await open_turn(a, "3") is False
    await a.save_and_release(KEY, Session(state="main.menu"), ttl=60)  # handed to dead B
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with a.lock(KEY, timeout=LEASE, wait=LEASE + 3):
        waited = loop.time() - started
    assert waited < LEASE + 2  # the handed lease lapsed, and the next in line took the lock


async def test_a_cancelled_waiter_leaves_the_line_at_once(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    served: list[str] = []

    async def wait_and_serve(store: RedisStore, name: str) -> None:
        async with store.lock(KEY, timeout=LEASE, wait=5.0):
            served.append(name)

    assert await open_turn(a, "1") is True
    assert await open_turn(b, "2") is False
    cancelled = asyncio.create_task(wait_and_serve(b, "2"))
    await asyncio.sleep(0.05)
    cancelled.cancel()  # process B stops while its message waits in line
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await a.client.llen("wispbot:lock:telegram:4242:queue") == 0  # it left the line
    assert await open_turn(a, "3") is False
    third = asyncio.create_task(wait_and_serve(a, "3"))
    await asyncio.sleep(0.05)
    await a.save_and_release(KEY, Session(state="main.menu"), ttl=60)
    await asyncio.wait_for(third, timeout=LEASE - 1)  # handed over, not a lapsed lease
    assert served == ["3"]
