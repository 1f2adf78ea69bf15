"""Pacing of Bot API calls: token buckets per chat and overall, behind a per-chat FIFO lane.

Pacing uses token buckets rather than a fixed gap: Telegram's documented limits (about one message
a second per private chat, 20 a minute per group, 30 a second overall) are averages, and a fixed
one-second gap would make a three-message reply take three seconds. A bucket of three lets a
normal reply go out at once and only slows a chat that keeps sending; a 429 that still happens is
honoured with its ``retry_after``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bot.channels.base import TokenBucket
from bot.concurrency import KeyedLock

__all__ = ["BURST", "Lanes", "TokenBucket"]

BURST = 3.0  # messages a chat may send at once before pacing starts
MAX_IDLE_LANES = 1024


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
