"""The memory store's turn gate: one process, a lock per conversation handed down its line by
waking the next turn (no polling), leases that lapse by the clock when nobody renews them."""

from __future__ import annotations

import asyncio

import pytest

from bot.store import LockTimeout, MemoryStore
from flows.types import ConvKey

ANA = ConvKey("telegram", "1001")


async def test_a_released_lock_goes_to_the_next_turn_at_once() -> None:
    store = MemoryStore()
    first = await store.open_turn(ANA, "ev1", rate_scope="r", rate_window=60, rate_limit=9, lease=5)
    second = await store.open_turn(
        ANA, "ev2", rate_scope="r", rate_window=60, rate_limit=9, lease=5
    )
    entered = asyncio.Event()

    async def next_turn() -> None:
        async with store.lock(ANA, wait=5, ticket=second.ticket):
            entered.set()

    waiter = asyncio.create_task(next_turn())
    await asyncio.sleep(0)
    await store.release(ANA, first.ticket)
    for _ in range(5):  # a few loop turns, not a polling interval
        await asyncio.sleep(0)
    assert entered.is_set()
    await waiter
    await store.aclose()


async def test_a_waiter_that_gives_up_leaves_the_line_and_the_lock_goes_on() -> None:
    store = MemoryStore()
    async with store.lock(ANA):
        with pytest.raises(LockTimeout):
            async with store.lock(ANA, wait=0.01):
                pytest.fail("entered a held lock")
    async with store.lock(ANA, wait=0):  # the one that gave up holds nothing
        pass
    await store.aclose()


async def test_a_lock_nobody_renews_lapses_for_the_waiter_by_the_clock() -> None:
    now = [1_750_000_000.0]
    store = MemoryStore(clock=lambda: now[0])
    leaked = store.lock(ANA, timeout=1)
    await leaked.__aenter__()
    await store._leases.aclose()  # its renewals stop, as if its holder were gone
    now[0] += 2
    async with store.lock(ANA, wait=0.01):
        pass
    await store.aclose()
