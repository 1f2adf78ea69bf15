"""The notices' lane (issue 15): an answer to a customer who writes never waits behind the
queued notices, only behind at most one notice's token."""

from __future__ import annotations

import asyncio
import time

from bot.channels.base import TokenBucket


async def test_an_answer_overtakes_the_queued_notices() -> None:
    bucket = TokenBucket(rate=50.0, burst=1.0)  # one call each 20 ms
    order: list[str] = []

    async def notice(i: int) -> None:
        await bucket.take(low=True)
        order.append(f"n{i}")

    notices = [asyncio.create_task(notice(i)) for i in range(20)]
    await asyncio.sleep(0.05)  # a few notices went out, the rest wait
    sent_before = len(order)
    await bucket.take()  # the answer
    order.append("answer")
    await asyncio.gather(*notices)
    # Behind at most the one notice already in the bucket's line, not behind the 20.
    assert order.index("answer") <= sent_before + 1, order


async def test_notices_alone_keep_the_rate() -> None:
    bucket = TokenBucket(rate=100.0, burst=1.0)
    started = time.monotonic()
    await asyncio.gather(*(bucket.take(low=True) for _ in range(21)))
    assert time.monotonic() - started >= 0.19  # 20 tokens after the first at 100 a second
