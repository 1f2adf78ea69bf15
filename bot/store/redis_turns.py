"""The Redis store's turn gate: sessions read and saved within a turn, the lock and its line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from redis.exceptions import RedisError

from bot.store.errors import LockLost, LockTimeout, SessionCorrupt
from bot.store.interfaces import TurnStart
from bot.store.keys import (
    JOURNAL_KEY,
    JOURNAL_TTL,
    PREFIX,
    _check_lease,
    _check_ttl,
    _journal_entry,
    _journal_field,
    _lock_key,
    _ms,
    _queue_of,
    conv_key,
    redis_key,
)
from bot.store.lease import _POLL_FIRST, _POLL_MAX, _Hold
from bot.store.redis_core import _DEFAULT_LEASE, RedisCore
from bot.store.session import Session
from flows.types import ConvKey

log = logging.getLogger(__name__)


class RedisTurns(RedisCore):
    """The turn gate in Redis (see ``bot.store.scripts`` for the line of turns)."""

    async def load(self, key: ConvKey) -> Session | None:
        """The conversation's session, or None (one GET; none right after taking its lock)."""
        name = conv_key(key)
        raw: bytes | str | None
        if name in self._prefetched:
            raw = self._prefetched.pop(name)
        else:
            raw = await self._call("load", lambda p: p.get(name))
        if raw is None:
            return None
        try:
            return Session.from_json(raw)
        except SessionCorrupt as err:
            msg = f"session {key} is corrupt: {err}"
            raise SessionCorrupt(msg) from err

    async def save(
        self,
        key: ConvKey,
        session: Session,
        ttl: int,
        closes: str | None = None,
        *,
        ticket: str | None = None,
    ) -> None:
        """Store the session with an idle TTL: within a turn, one fenced script (``LockLost``
        when the turn's place was taken over); else one SET EX."""
        seconds = _check_ttl(ttl, "ttl")
        name = conv_key(key)
        self._prefetched.pop(name, None)
        value = session.to_json()
        hold = self._own_hold(key, ticket)
        if ticket is None and hold is None:
            await self._call("save", lambda p: p.set(name, value, ex=seconds))
            if closes is not None:
                await self.drop_turn(key, closes)
            return
        token = ticket if hold is None or ticket is not None else hold.token
        assert token is not None
        lease = (self._alive_lease or _DEFAULT_LEASE) if hold is None else hold.lease
        lock = _lock_key(key)
        args: list[str | int] = [
            value,
            seconds,
            token,
            _ms(lease),
            "" if closes is None else _journal_field(key, closes),
        ]
        keys = [name, lock, _queue_of(lock), JOURNAL_KEY]
        if not await self._call("save", self._script(self._save_done, keys, args)):
            self._lost(hold, lock)

    async def drop_turn(self, key: ConvKey, event_id: str) -> None:
        """HDEL the turn's journal entry."""
        field = _journal_field(key, event_id)
        await self._call("drop_turn", lambda p: p.hdel(JOURNAL_KEY, field))

    def lock(
        self,
        key: ConvKey,
        *,
        timeout: float = 30.0,
        wait: float = 20.0,
        ticket: str | None = None,
    ) -> AbstractAsyncContextManager[str]:
        """Hold the conversation lock (SET NX PX with a random token; owner-only release)."""
        return self._lock(_lock_key(key), conv_key(key), _check_lease(timeout), wait, ticket)

    @asynccontextmanager
    async def _lock(
        self, name: str, conv: str, expire: float, wait: float, ticket: str | None
    ) -> AsyncIterator[str]:
        hold = await self._acquire(name, conv, expire, wait, ticket)
        try:
            yield hold.token
        finally:
            await self._give_back(hold, conv)

    async def open_turn(
        self,
        key: ConvKey,
        event_id: str,
        *,
        rate_scope: str,
        rate_window: int,
        rate_limit: int,
        lease: float,
        seen_ttl: int = 86400,
        journal: str | None = None,
    ) -> TurnStart:
        """Claim, count, journal, take a place in line (at its head, the lock) and read the
        session: one script, one trip. A retry after a lost answer finds its own claim."""
        lease = _check_lease(lease)
        name, conv = _lock_key(key), conv_key(key)
        keys = [
            redis_key("seen", key.channel, event_id),
            redis_key("rate", rate_scope),
            name,
            conv,
            _queue_of(name),
            JOURNAL_KEY,
            self._alive_key,
        ]
        opening = (conv, event_id)
        token = self._opening.setdefault(
            opening, self._token(event_id if journal is not None else None)
        )
        args: list[str | int] = [
            _check_ttl(seen_ttl, "ttl"),
            _check_ttl(rate_window, "window"),
            rate_limit,
            token,
            _ms(lease),
            _ms(lease),
            _journal_field(key, event_id),
            "" if journal is None else _journal_entry(journal, self._clock(), token),
            JOURNAL_TTL,
        ]
        self._keep_alive(lease)
        found = await self._call("open_turn", self._script(self._open_turn, keys, args))
        del self._opening[opening]
        claimed, hits, locked = bool(found[0]), int(found[1]), bool(found[2])
        queued = len(found) > 4 and bool(found[4])  # in line: the lock wait polls with the token
        if locked:
            self._prefetched[conv] = found[3] if len(found) > 3 else None
            self._leases.add(_Hold(name, token, lease))
        ticket = token if locked or queued else None
        return TurnStart(claimed=claimed, hits=hits, locked=locked, ticket=ticket)

    def _lost(self, hold: _Hold | None, lock: str) -> None:
        """A fenced write found the turn's place taken over: drop its lock, tell the caller."""
        if hold is not None:
            hold.released = True
            self._leases.discard(hold)
        log.warning("turn's place taken over by another process", extra={"lock": lock})
        raise LockLost(f"conversation lock {lock} was taken over")

    def _own_hold(self, key: ConvKey, ticket: str | None) -> _Hold | None:
        hold = self._leases.holds.get(_lock_key(key))
        if hold is None or (ticket is not None and hold.token != ticket):
            return None
        return hold

    async def release(self, key: ConvKey, ticket: str | None = None) -> None:
        """Give back the lock ``open_turn`` took (owner-only)."""
        hold = self._own_hold(key, ticket)
        if hold is not None:
            await self._give_back(hold, conv_key(key))

    async def save_and_release(
        self,
        key: ConvKey,
        session: Session,
        ttl: int,
        ticket: str | None = None,
        closes: str | None = None,
    ) -> None:
        """The final save, the turn out of the journal and the release to the next in line:
        one fenced script (``LockLost`` when the turn's place was taken over)."""
        hold = self._own_hold(key, ticket)
        if hold is None or hold.released:
            await self.save(key, session, ttl, closes, ticket=ticket)
            return
        seconds = _check_ttl(ttl, "ttl")
        name = conv_key(key)
        self._prefetched.pop(name, None)
        args: list[str | int] = [
            session.to_json(),
            seconds,
            hold.token,
            _ms(hold.lease),
            "" if closes is None else _journal_field(key, closes),
        ]
        keys = [name, hold.name, _queue_of(hold.name), JOURNAL_KEY]
        # A second try of a call whose answer was lost (Redis went down) finds the place gone
        # because the first one ran: that is no loss.
        again, hold.closing = hold.closing, True
        released = await self._call("save", self._script(self._save_release, keys, args))
        # Given back only once the script ran: when it did not, ``release`` still owes it.
        hold.released = True
        self._leases.discard(hold)
        if not released and not again:
            self._lost(hold, hold.name)

    async def _give_back(self, hold: _Hold, conv: str) -> None:
        if hold.released:
            return  # and what is prefetched now belongs to the next holder
        self._prefetched.pop(conv, None)
        hold.released = True
        self._leases.discard(hold)
        await self._unlock(hold.name, hold.token, hold.lease)

    async def _acquire(
        self, name: str, conv: str, expire: float, wait: float, ticket: str | None
    ) -> _Hold:
        px = _ms(expire)
        keys = [name, conv, _queue_of(name)]
        token = ticket
        if token is None:  # not in line yet: join it (at its head, the lock is taken)
            token = self._token(None)
            self._keep_alive(expire)
            taken = await self._call(
                "lock",
                self._script(self._acquire_load, [*keys, self._alive_key], [token, px, px]),
            )
            if taken[0]:
                return self._held(name, conv, token, expire, taken)
        try:
            return await self._wait_in_line(name, conv, token, expire, wait)
        except BaseException:
            # Cancelled (a stopping process) or failed while in line: leave it, and pass the
            # lock on if it was handed over meanwhile, so nobody waits out a lease for us.
            with contextlib.suppress(Exception):
                await self._call(
                    "lock", self._script(self._leave, [name, _queue_of(name)], [token, px])
                )
            raise

    async def _wait_in_line(
        self, name: str, conv: str, token: str, expire: float, wait: float
    ) -> _Hold:
        px = _ms(expire)
        keys = [name, conv, _queue_of(name), JOURNAL_KEY]
        # A dead process's place is passed over only once Redis has been up this long.
        journalled = conv.removeprefix(f"{PREFIX}:conv:")  # its entries' fields start so
        args: list[str | int] = [token, px, max(1, int(2 * expire)), journalled]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait, 0.0)
        delay = _POLL_FIRST
        while True:
            taken = await self._call("lock", self._script(self._wait_turn, keys, args))
            if taken[0] == 1:
                return self._held(name, conv, token, expire, taken)
            if taken[0] == -1:
                log.warning("turn's place taken over by another process", extra={"lock": name})
                msg = f"conversation lock {name}: this turn's place was taken over"
                raise LockLost(msg)
            remaining = deadline - loop.time()
            if remaining <= 0:
                mine = await self._call(
                    "lock", self._script(self._abandon, [name, _queue_of(name)], [token])
                )
                if mine:  # handed over just now: take it after all
                    taken = await self._call("lock", self._script(self._wait_turn, keys, args))
                    if taken[0] == 1:
                        return self._held(name, conv, token, expire, taken)
                msg = f"conversation lock {name} still busy after {wait:g} s"
                raise LockTimeout(msg)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)

    def _held(self, name: str, conv: str, token: str, expire: float, taken: list[Any]) -> _Hold:
        self._prefetched[conv] = taken[1] if len(taken) > 1 else None
        hold = _Hold(name, token, expire)
        self._leases.add(hold)
        return hold

    async def _unlock(self, name: str, token: str, lease: float) -> None:
        try:
            args: list[str | int] = [token, _ms(lease)]
            released = await self._pipe.run(
                self._script(self._release, [name, _queue_of(name)], args)
            )
        except (RedisError, OSError) as err:
            # Raising here would hide the body's own outcome; the lock expires by itself.
            log.warning("lock release failed", extra={"lock": name, "error": type(err).__name__})
            return
        if not released:
            log.warning("lock expired before its owner released it", extra={"lock": name})
