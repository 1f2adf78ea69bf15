"""Waiting done once for the whole runtime: the per-key FIFO lock (the engine's conversations and
topics, the channels' chats), the retry helper (the channels' senders, the relay outbox) and the
hook a send calls once it may go, just before its request leaves (``on_wire``).

A package of its own, importing nothing from ``bot`` (nor ``flows``): the engine and the
channels both use it, so it sits below both. Hand-written:
each caller keeps its own rule for what is worth retrying and how long to wait (Telegram's
``retry_after``, Graph's ``Retry-After``, a 5xx backoff), which tenacity or stamina would take
as callbacks just the same; the loop itself is a dozen lines on every send's path.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager
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

    def hold(self, key: K) -> AbstractAsyncContextManager[None]:
        """Hold ``key``'s lock for the block."""
        return _Held(self, key)


class _Held(Generic[K]):
    """``KeyedLock.hold``'s block (a class, not a generator: two locks a message pass here)."""

    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: KeyedLock[K], key: K) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        locks, key = self._locks, self._key
        lock = locks._locks.get(key)
        if lock is None:
            lock = locks._locks[key] = asyncio.Lock()
        self._lock = lock
        locks._users[key] = locks._users.get(key, 0) + 1  # before the first await: in order
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        users, key = self._locks._users, self._key
        left = users[key] - 1
        if left:
            users[key] = left
        else:
            del users[key]
            del self._locks._locks[key]


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


# What the current task does once a send has its pacing slots, just before its request leaves
# (``on_wire``): a notice's turn (``bot.notice_turn``) takes its replies out of its saved outbox
# there. A process killed while that request is out then loses the notice rather than sending it
# twice (the sweep resends an outbox, and no channel can say whether a request it never heard
# back from arrived), and one killed while the send waited for its slot still sends it.
ON_WIRE: contextvars.ContextVar[Callable[[], Awaitable[None]] | None] = contextvars.ContextVar(
    "on_wire", default=None
)


async def on_wire() -> None:
    """Run the current task's ``ON_WIRE`` hook, if it set one."""
    hook = ON_WIRE.get()
    if hook is not None:
        await hook()
