"""Waiting done once for the whole runtime: the per-key FIFO lock (the engine's conversations and
topics, the channels' chats) and the retry helper (the channels' senders, the relay outbox).

A package of its own, importing nothing from ``bot`` (nor ``flows``): the engine and the
channels both use it, so it sits below both. Hand-written:
each caller keeps its own rule for what is worth retrying and how long to wait (Telegram's
``retry_after``, Graph's ``Retry-After``, a 5xx backoff), which tenacity or stamina would take
as callbacks just the same; the loop itself is a dozen lines on every send's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class KeyedLock(Generic[K]):
    """One FIFO lock per key (a chat): holders of one key run one at a time in arrival order
    (asyncio.Lock wakes waiters first come, first served); an unused key is forgotten.

    The lock is taken before the holder's first await, so callers that enter in order keep it.
    """

    def __init__(self) -> None:
        self._locks: dict[K, asyncio.Lock] = {}
        self._users: dict[K, int] = {}

    def busy(self, key: K) -> bool:
        """Whether someone holds or waits for ``key``."""
        return key in self._users

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the block."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            users = self._users[key] - 1
            if users:
                self._users[key] = users
            else:
                del self._users[key]
                del self._locks[key]


def retry_delay(
    attempt: int, base: float, cap: float, jitter: tuple[float, float] = (1.0, 1.0)
) -> float:
    """The wait before retry ``attempt + 1``: ``base`` doubled per attempt, at most ``cap``,
    times a random factor within ``jitter`` (so many clients do not retry in step)."""
    return min(cap, base * 2.0 ** min(attempt, 30)) * random.uniform(*jitter)


class GaveUp(Exception):
    """``retrying``'s last attempt failed too: ``error`` is that failure."""

    def __init__(self, attempts: int, error: Exception) -> None:
        super().__init__(f"gave up after {attempts} attempts")
        self.attempts = attempts
        self.error = error


async def retrying(
    call: Callable[[], Awaitable[T]],
    wait_after: Callable[[Exception, int], float | None],
    *,
    attempts: int,
    on_retry: Callable[[Exception, int, float], None] | None = None,
) -> T:
    """``call()`` until it succeeds, ``attempts`` times at most.

    A failure asks ``wait_after(error, attempt)`` (``attempt`` counts from 0) how long to wait
    before the next attempt: None raises the error at once (not worth retrying: a refusal).
    Each wait is first told to ``on_retry(error, attempts made, wait)``. When the last attempt
    fails too, ``GaveUp`` is raised from its error. Cancellation is never retried.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as err:
            wait = wait_after(err, attempt)
            if wait is None:
                raise
            attempt += 1
            if attempt >= attempts:
                raise GaveUp(attempt, err) from err
            if on_retry is not None:
                on_retry(err, attempt, wait)
            await asyncio.sleep(wait)
