"""The store in one process's memory (demo, console, scenarios, unit tests).

One process: the turn gate is a lock per conversation with its line of waiting turns in a
dict, handed over by waking a future (no polling, no emulation of the Redis scripts). Leases
still lapse by the injected clock, as the contract asks of a lock whose holder stopped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date

from bot.store.errors import LockTimeout, SessionCorrupt
from bot.store.interfaces import Orphan, SessionStore, TurnStart
from bot.store.keys import (
    DEFAULT_TOPIC_TTL,
    JOURNAL_MAX_AGE,
    Clock,
    _check_lease,
    _check_ttl,
    _journal_field,
    _key_from_conv,
    _lock_key,
    _log_stale,
    _parse_promise,
    _parse_topic,
    _promise_value,
    conv_key,
    promise_key,
    redis_key,
)
from bot.store.lease import _Hold, _LeaseKeeper
from bot.store.session import Session, _parse_or_skip
from flows.ports import Promise
from flows.types import ConvKey

log = logging.getLogger(__name__)


_PURGE_EVERY = 1000  # memory store: sweep expired values every so many writes


class _Gate:
    """One conversation's lock in one process: its holder (a turn's token) with a lease, and
    the line of turns waiting for it, oldest first (each with the future that wakes it)."""

    __slots__ = ("expires", "holder", "line")

    def __init__(self) -> None:
        self.holder: str | None = None
        self.expires = 0.0  # by the store's clock; renewed by the lease keeper while held
        self.line: dict[str, asyncio.Future[None] | None] = {}  # None: not waiting yet


class MemoryStore(SessionStore):
    """The store in one process's memory: same behaviour, TTLs against the injected clock."""

    def __init__(self, clock: Clock = time.time, *, topic_ttl: int = DEFAULT_TOPIC_TTL) -> None:
        self._clock = clock
        self._topic_ttl = _check_ttl(topic_ttl, "topic_ttl")
        # name -> (value, expires_at or None); values are kept as JSON text like in Redis so a
        # caller mutating its Session never changes what is stored.
        self._values: dict[str, tuple[str, float | None]] = {}
        self._gates: dict[str, _Gate] = {}  # lock name -> its holder and line
        # The journal of turns in flight: field -> (conversation, event id, written at, event).
        self._journal: dict[str, tuple[ConvKey, str, float, str]] = {}
        self._writes = 0
        self._leases = _LeaseKeeper(self._extend)
        self._inbox: list[str] = []

    def _get(self, name: str) -> str | None:
        item = self._values.get(name)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self._clock():
            del self._values[name]
            return None
        return value

    def _set(self, name: str, value: str, ttl: float | None) -> None:
        expires = None if ttl is None else self._clock() + ttl
        self._values[name] = (value, expires)
        self._writes += 1
        if self._writes % _PURGE_EVERY == 0:
            self._purge()

    def _purge(self) -> None:
        # Expired values are otherwise dropped only when read again; dedupe marks never are.
        now = self._clock()
        for name, (_, expires) in list(self._values.items()):
            if expires is not None and expires <= now:
                del self._values[name]
        for name, gate in list(self._gates.items()):
            if gate.expires <= now and not gate.line:
                del self._gates[name]

    async def load(self, key: ConvKey) -> Session | None:
        """The conversation's session, or None."""
        raw = self._get(conv_key(key))
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
        """Store the session with an idle TTL (one process: no other can take a turn over)."""
        self._set(conv_key(key), session.to_json(), _check_ttl(ttl, "ttl"))
        if closes is not None:
            self._journal.pop(_journal_field(key, closes), None)

    async def drop_turn(self, key: ConvKey, event_id: str) -> None:
        """Forget the turn's journal entry."""
        self._journal.pop(_journal_field(key, event_id), None)

    async def take_orphans(self, older_than: float) -> list[Orphan]:
        """Entries old enough whose conversation has neither a lock nor a line."""
        limit = self._clock() - older_than
        stale = self._clock() - JOURNAL_MAX_AGE
        taken: list[Orphan] = []
        for name, (key, event_id, at, event) in list(self._journal.items()):
            lock = _lock_key(key)
            if at < stale:
                del self._journal[name]
                _log_stale(key)
                continue
            gate = self._gates.get(lock)
            if at > limit or (gate is not None and (gate.line or not self._free(gate))):
                continue
            del self._journal[name]
            await self.unclaim_event(key.channel, event_id)
            taken.append(Orphan(event))
        return taken

    async def move(self, old: ConvKey, new: ConvKey) -> bool:
        """Like RENAMENX."""
        source, dest = conv_key(old), conv_key(new)
        if self._get(source) is None or self._get(dest) is not None:
            return False
        self._values[dest] = self._values.pop(source)
        return True

    async def claim_event(self, channel: str, event_id: str, ttl: int = 86400) -> bool:
        """True the first time only."""
        seconds = _check_ttl(ttl, "ttl")
        name = redis_key("seen", channel, event_id)
        if self._get(name) is not None:
            return False
        self._set(name, "1", seconds)
        return True

    async def unclaim_event(self, channel: str, event_id: str) -> None:
        """Forget the event id."""
        self._values.pop(redis_key("seen", channel, event_id), None)

    async def push_inbox(self, raw: str) -> None:
        """Keep an unhandled event."""
        self._inbox.append(raw)

    async def pop_inbox(self, limit: int = 1000) -> list[str]:
        """Take the kept events, oldest first."""
        taken, self._inbox[:] = self._inbox[:limit], self._inbox[limit:]
        return taken

    def lock(
        self,
        key: ConvKey,
        *,
        timeout: float = 30.0,
        wait: float = 20.0,
        ticket: str | None = None,
    ) -> AbstractAsyncContextManager[str]:
        """Hold the conversation lock (asyncio-based, expiry by the injected clock)."""
        return self._lock(_lock_key(key), _check_lease(timeout), wait, ticket)

    @asynccontextmanager
    async def _lock(
        self, name: str, expire: float, wait: float, ticket: str | None
    ) -> AsyncIterator[str]:
        hold = await self._acquire(name, expire, wait, ticket)
        try:
            yield hold.token
        finally:
            self._give_back(hold)

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
        """Claim, count, journal, try the lock or join its line (``SessionStore.open_turn``)."""
        lease = _check_lease(lease)
        if not await self.claim_event(key.channel, event_id, seen_ttl):
            return TurnStart(claimed=False, hits=0, locked=False)
        hits = await self.hit_rate(rate_scope, rate_window)
        if hits > rate_limit:
            return TurnStart(claimed=True, hits=hits, locked=False)
        if journal is not None:
            entry = (key, event_id, self._clock(), journal)
            self._journal[_journal_field(key, event_id)] = entry
        hold = _Hold(_lock_key(key), secrets.token_hex(16), lease)
        if not self._take_or_queue(hold.name, hold.token, lease):
            return TurnStart(claimed=True, hits=hits, locked=False, ticket=hold.token)
        self._leases.add(hold)
        return TurnStart(claimed=True, hits=hits, locked=True, ticket=hold.token)

    async def release(self, key: ConvKey, ticket: str | None = None) -> None:
        """Give back the lock ``open_turn`` took."""
        hold = self._leases.holds.get(_lock_key(key))
        if hold is not None and (ticket is None or hold.token == ticket):
            self._give_back(hold)

    async def save_and_release(
        self,
        key: ConvKey,
        session: Session,
        ttl: int,
        ticket: str | None = None,
        closes: str | None = None,
    ) -> None:
        """Save, then give back the lock."""
        await self.save(key, session, ttl, closes)
        await self.release(key, ticket)

    def _give_back(self, hold: _Hold) -> None:
        if hold.released:
            return
        hold.released = True
        self._leases.discard(hold)
        self._release(hold.name, hold.token, hold.lease)

    async def _extend(self, holds: list[_Hold]) -> list[bool]:
        now = self._clock()
        kept: list[bool] = []
        for hold in holds:
            gate = self._gates.get(hold.name)
            if gate is None or gate.holder != hold.token or gate.expires <= now:
                kept.append(False)
                continue
            gate.expires = now + hold.lease
            kept.append(True)
        return kept

    def _free(self, gate: _Gate) -> bool:
        """Nobody holds it, or its holder's lease lapsed (it stopped renewing: a leak)."""
        return gate.holder is None or gate.expires <= self._clock()

    def _take(self, gate: _Gate, token: str, lease: float) -> None:
        gate.holder, gate.expires = token, self._clock() + lease
        gate.line.pop(token, None)

    def _take_or_queue(self, name: str, token: str, lease: float) -> bool:
        """Take the lock when it is free and nobody waits, else join the end of its line."""
        gate = self._gates.setdefault(name, _Gate())
        if not gate.line and self._free(gate):
            self._take(gate, token, lease)
            return True
        gate.line[token] = None
        return False

    async def _acquire(self, name: str, lease: float, wait: float, ticket: str | None) -> _Hold:
        token = ticket or secrets.token_hex(16)
        if ticket is not None or not self._take_or_queue(name, token, lease):
            try:
                await self._wait_in_line(name, token, lease, wait)
            except BaseException:
                # Gave up or cancelled: leave the line, and pass the lock on if it was handed
                # over meanwhile, so nobody waits for us.
                gate = self._gates.get(name)
                if gate is not None:
                    gate.line.pop(token, None)
                    if gate.holder == token:
                        self._release(name, token, lease)
                raise
        hold = _Hold(name, token, lease)
        self._leases.add(hold)
        return hold

    async def _wait_in_line(self, name: str, token: str, lease: float, wait: float) -> None:
        """Until the lock is handed to this place in line (``_release`` wakes it), or found
        free (a leaked lock whose lease lapsed); ``LockTimeout`` after ``wait`` s."""
        gate = self._gates.setdefault(name, _Gate())
        if gate.holder == token:
            return
        if self._free(gate):
            self._take(gate, token, lease)
            return
        woken = asyncio.get_running_loop().create_future()
        gate.line[token] = woken
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                await woken
        except TimeoutError:
            if gate.holder != token and not self._free(gate):
                msg = f"conversation lock {name} still busy after {wait:g} s"
                raise LockTimeout(msg) from None
            if gate.holder != token:
                self._take(gate, token, lease)

    def _release(self, name: str, token: str, lease: float) -> None:
        """Give the lock back; it goes straight to the oldest place in line."""
        gate = self._gates.get(name)
        if gate is None or gate.holder != token:
            log.warning("lock expired before its owner released it", extra={"lock": name})
            return
        if not gate.line:
            del self._gates[name]
            return
        token, woken = next(iter(gate.line.items()))
        self._take(gate, token, lease)
        if woken is not None and not woken.done():
            woken.set_result(None)

    async def register_failure(self, scope: str, window: int) -> int:
        """Count one failure in the window."""
        return self._incr(redis_key("lockout", scope), window)

    def _incr(self, name: str, window: int) -> int:
        seconds = _check_ttl(window, "window")
        current = self._get(name)
        if current is None:
            self._set(name, "1", seconds)
            return 1
        count = int(current) + 1
        self._values[name] = (str(count), self._values[name][1])  # keep the window's end
        return count

    async def failures(self, scope: str) -> int:
        """Failures in the current window."""
        return int(self._get(redis_key("lockout", scope)) or 0)

    async def failures_many(self, scopes: list[str]) -> list[int]:
        """Failures of each scope."""
        return [int(self._get(redis_key("lockout", scope)) or 0) for scope in scopes]

    async def clear_failures(self, *scopes: str) -> None:
        """Reset the counters."""
        for scope in scopes:
            self._values.pop(redis_key("lockout", scope), None)

    async def hit_rate(self, scope: str, window: int) -> int:
        """Count one hit in the fixed window."""
        return self._incr(redis_key("rate", scope), window)

    async def set_topic(self, thread_id: int, key: ConvKey) -> None:
        """Remember the topic's conversation."""
        self._set(redis_key("topic", str(thread_id)), str(key), self._topic_ttl)

    async def get_topic(self, thread_id: int) -> ConvKey | None:
        """The topic's conversation (its mapping's TTL renewed)."""
        name = redis_key("topic", str(thread_id))
        raw = self._get(name)
        if raw is not None:
            self._values[name] = (raw, self._clock() + self._topic_ttl)
        return _parse_topic(thread_id, raw)

    async def remember(
        self, service_id: int, day: date, invoices: Sequence[int], until: float
    ) -> None:
        """Remember the service's promise until ``until`` (the injected clock's seconds)."""
        left = until - self._clock()
        if left > 0:
            self._set(promise_key(service_id), _promise_value(day, invoices), left)

    async def active(self, service_id: int) -> Promise | None:
        """The service's promise, or None once past its ``until``."""
        return _parse_promise(service_id, self._get(promise_key(service_id)))

    async def scan_conversations(self) -> AsyncIterator[tuple[ConvKey, Session]]:
        """Every stored conversation."""
        for name in list(self._values):
            key = _key_from_conv(name)
            raw = self._get(name) if key is not None else None
            if key is None or raw is None:
                continue
            session = _parse_or_skip(key, raw)
            if session is not None:
                yield key, session

    async def ping(self) -> bool:
        """Memory always answers."""
        return True

    async def aclose(self) -> None:
        """Stop renewing locks."""
        await self._leases.aclose()
