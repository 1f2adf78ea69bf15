"""The lease keeper: keeps the conversation locks a store holds alive while their turns run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.store.errors import StoreError

log = logging.getLogger(__name__)


# Lock polling: start fast (an uncontended handover is usually a few ms), back off to spare Redis.
_POLL_FIRST = 0.005
_POLL_MAX = 0.1


class _Hold:
    """One conversation lock a store holds: its owner token and its lease in seconds."""

    __slots__ = ("closing", "lease", "name", "released", "token")

    def __init__(self, name: str, token: str, lease: float) -> None:
        self.name = name
        self.token = token
        self.lease = lease
        self.released = False
        self.closing = False  # its final save was sent (once at least)


class _LeaseKeeper:
    """Keeps the locks a store holds alive while their turns run.

    A lock is taken for a short lease; every third of the shortest lease held, each lock that
    is still this store's own is extended by its lease (one call for all of them), or taken
    again when it lapsed while Redis was down (its turn still heads the line). A long turn
    (delivery waiting out Telegram's retry_after) keeps its lock for as long as it runs.
    """

    def __init__(self, extend: Callable[[list[_Hold]], Awaitable[list[bool]]]) -> None:
        self._extend = extend
        self.holds: dict[str, _Hold] = {}  # lock name -> the current hold of this store
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def add(self, hold: _Hold) -> None:
        """Keep a freshly taken lock alive."""
        self.holds[hold.name] = hold
        if self._timer is None and self._task is None:
            self._schedule()

    def discard(self, hold: _Hold) -> None:
        """Stop renewing a lock (it is being released)."""
        if self.holds.get(hold.name) is hold:
            del self.holds[hold.name]
        if not self.holds and self._timer is not None:
            # A timer, not a sleeping task: an idle store costs nothing and leaves nothing behind.
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        interval = min(h.lease for h in self.holds.values()) / 3
        self._timer = asyncio.get_running_loop().call_later(interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.holds:
            self._task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        holds = list(self.holds.values())
        try:
            kept = await self._extend(holds)
        except StoreError as err:
            # The lease outlives two missed renewals; the next tick tries again.
            log.warning("lock renewal failed", extra={"error": type(err).__name__})
        else:
            for hold, ok in zip(holds, kept, strict=True):
                if not ok and self.holds.get(hold.name) is hold:
                    del self.holds[hold.name]
                    log.warning("conversation lock lost while held", extra={"lock": hold.name})
        finally:
            self._task = None
            if self.holds and self._timer is None:
                self._schedule()

    async def aclose(self) -> None:
        """Stop renewing (the store is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
