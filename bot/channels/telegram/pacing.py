"""Pacing of Bot API calls: token buckets per chat, a sliding window overall, behind a per-chat
FIFO lane.

Pacing uses token buckets rather than a fixed gap: Telegram's documented limits (about one message
a second per private chat, 20 a minute per group, 30 a second overall) are averages, and a fixed
one-second gap would make a three-message reply take three seconds. A bucket of three lets a
normal reply go out at once and only slows a chat that keeps sending; a 429 that still happens is
honoured with its ``retry_after``.

The overall limit is a sliding window instead (``SlidingWindow``): a bucket lets its burst AND a
second's refill out within one second (15 + 30 = 45 messages, a 429 under a storm of customers),
and so does a leaky bucket such as aiolimiter's; a window over the last ``rate`` calls never lets
more than ``rate`` out in any window. It is hand-written for that reason (thirty lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

from bot.channels.base import TokenBucket
from bot.concurrency import KeyedLock

__all__ = ["BURST", "Lanes", "SlidingWindow", "TokenBucket"]

BURST = 3.0  # messages a chat may send at once before pacing starts
MAX_IDLE_LANES = 1024


class SlidingWindow:
    """At most ``rate`` calls in any ``window`` seconds as Telegram counts them; rate <= 0 means
    unlimited.

    A call's time is when it RETURNED (``slot``): Telegram saw it before that, and the next
    call reaches Telegram after it starts, so calls a window apart here are a window apart
    there too, whatever the network's jitter (a send's start time would not be: the first of
    a burst can reach Telegram late, squeezing 31 into one of its seconds).
    """

    def __init__(self, rate: float, window: float = 1.0) -> None:
        # ``rate`` a second as whole calls per window (0.5 a second: one call every 2 s).
        self.limit = max(1, int(rate)) if rate > 0 else 0
        self.window = window * self.limit / rate if rate > 0 else window
        self._done: deque[float] = deque()  # when the last calls returned, oldest first
        self._busy = 0  # calls under way
        # Waiters queue here in call order; only the first watches the window (a storm's
        # hundreds of waiters are not all woken each time a call returns).
        self._turn = asyncio.Lock()
        self._returned = asyncio.Event()
        self._high = 0  # ordinary callers (answers) waiting for a place
        self._low = asyncio.Lock()  # low-priority callers (notices), one at a time
        # A notice leaves this many places of the window to the answers (when the limit allows).
        self._reserve = 2 if self.limit >= 10 else (1 if self.limit >= 2 else 0)

    @contextlib.asynccontextmanager
    async def slot(self, *, low: bool = False) -> AsyncIterator[None]:
        """Make one call in the block, once the window has room for it.

        ``low`` (notices the bot sends first): the call waits outside the answers' line and
        goes only when no answer waits and a place is left over for one, so an answer to a
        customer who is writing never waits behind queued notices; alone, notices get the
        whole rate.
        """
        if self.limit <= 0:
            yield
            return
        if low:
            await self._low_place()
        else:
            self._high += 1
            try:
                await self._place()
            finally:
                self._high -= 1
        try:
            yield
        finally:
            self._busy -= 1
            self._done.append(time.monotonic())
            self._returned.set()

    def _used(self, now: float) -> int:
        while self._done and self._done[0] <= now - self.window:
            self._done.popleft()
        return len(self._done) + self._busy

    async def _place(self) -> None:
        async with self._turn:
            while True:
                now = time.monotonic()
                if self._used(now) < self.limit:
                    break
                if self._done:  # room comes when the oldest call leaves the window
                    await asyncio.sleep(self._done[0] + self.window - now)
                else:  # every call of the window is under way: wait for one to return
                    self._returned.clear()
                    await self._returned.wait()
            self._busy += 1

    async def _low_place(self) -> None:
        async with self._low:
            while True:
                now = time.monotonic()
                if not self._high and self._used(now) + self._reserve < self.limit:
                    break
                # Room comes when the oldest call leaves the window; answers first: look again.
                wait = self._done[0] + self.window - now if self._done and not self._high else 0.05
                await asyncio.sleep(max(wait, 0.005))
            self._busy += 1


class Lanes:
    """One lane per chat: a FIFO lock (one reply at a time, in call order) and a pacing bucket
    (private chats one message per ``per_chat_interval``, groups ``group_per_minute``). A lane
    nobody uses is forgotten once its bucket is full again."""

    def __init__(self, per_chat_interval: float, group_per_minute: int) -> None:
        self.per_chat_interval = per_chat_interval
        self.group_per_minute = group_per_minute
        self._locks: KeyedLock[int | str] = KeyedLock()
        self._buckets: dict[int | str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, chat: int | str) -> TokenBucket:
        """The pacing bucket of a chat whose lane is held."""
        return self._buckets[chat]

    @contextlib.asynccontextmanager
    async def hold(self, chat: int | str, *, paced: bool = True) -> AsyncIterator[TokenBucket]:
        """Hold a chat's lane for the block; its bucket paces the calls made in it."""
        bucket = self._buckets.get(chat)
        if bucket is None:
            if len(self._buckets) >= MAX_IDLE_LANES:
                self._sweep()
            group = isinstance(chat, str) or chat < 0
            if not paced:
                bucket = TokenBucket(0.0, BURST)
            elif group:
                bucket = TokenBucket(self.group_per_minute / 60, BURST)
            else:
                rate = 1 / self.per_chat_interval if self.per_chat_interval > 0 else 0.0
                bucket = TokenBucket(rate, BURST)
            self._buckets[chat] = bucket
        try:
            async with self._locks.hold(chat):
                yield bucket
        finally:
            if not self._locks.busy(chat) and bucket.idle:
                self._buckets.pop(chat, None)

    def _sweep(self) -> None:
        # Lanes left behind with a not-yet-full bucket are forgotten once they are full again.
        for chat, bucket in list(self._buckets.items()):
            if not self._locks.busy(chat) and bucket.idle:
                del self._buckets[chat]
