"""The overall sliding window: never more than ``rate`` calls in any window, counted from when
calls returned (only lower bounds on time are asserted: a loaded machine is only ever slower)."""

from __future__ import annotations

import asyncio
import time

from bot.channels.telegram.pacing import SlidingWindow


async def test_no_window_holds_more_than_the_rate_of_calls() -> None:
    window = SlidingWindow(3, window=0.2)
    spans: list[tuple[float, float]] = []

    async def call() -> None:
        async with window.slot():
            started = time.monotonic()
            await asyncio.sleep(0.01)  # the call's round trip
            spans.append((started, time.monotonic()))

    await asyncio.gather(*(call() for _ in range(8)))
    spans.sort()
    # When a call starts, at most 2 others are under way or returned within the window.
    for started, _ in spans:
        others = [s for s, returned in spans if s < started and returned > started - 0.2]
        assert len(others) <= 2
    # And the calls after the first 3 waited for a window to pass: 8 calls take 2 windows.
    assert spans[-1][0] - spans[0][0] >= 0.4


async def test_a_rate_of_zero_is_unlimited() -> None:
    window = SlidingWindow(0)
    async with window.slot(), window.slot():
        pass


def test_a_rate_under_one_a_second_is_one_call_per_longer_window() -> None:
    window = SlidingWindow(0.5)
    assert (window.limit, window.window) == (1, 2.0)
