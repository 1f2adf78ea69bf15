"""The store in Redis: orphans taken over, dedupe, the inbox, counters, topics, the scan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import date

from bot.store.interfaces import Orphan, TurnStart
from bot.store.keys import (
    INBOX_KEY,
    INBOX_TTL,
    JOURNAL_KEY,
    JOURNAL_MAX_AGE,
    PREFIX,
    _check_ttl,
    _Entry,
    _journal_entry,
    _key_from_conv,
    _lock_key,
    _log_stale,
    _ms,
    _parse_journal,
    _parse_promise,
    _parse_topic,
    _promise_value,
    _queue_of,
    _text,
    conv_key,
    promise_key,
    redis_key,
)
from bot.store.lease import _Hold
from bot.store.redis_core import _DEFAULT_LEASE, _MAX_TRIES, _SCAN_BATCH, _exists, _lrange
from bot.store.redis_turns import RedisTurns
from bot.store.session import Session, _parse_or_skip
from flows.ports import Promise
from flows.types import ConvKey

log = logging.getLogger(__name__)


class RedisStore(RedisTurns):
    """The store in Redis: shared by every process of the service."""

    async def take_orphans(self, older_than: float) -> list[Orphan]:
        """HGETALL the journal; read the lines of its conversations and which of their tokens'
        processes still run; take over, in line order, the places of dead ones (one script
        each, checked again there, so one process takes each)."""
        found = await self._call("take_orphans", lambda p: p.hgetall(JOURNAL_KEY))
        stale = self._clock() - JOURNAL_MAX_AGE
        entries: list[_Entry] = []
        unreadable: list[str | bytes] = []
        for name, raw in (found or {}).items():
            entry = _parse_journal(name, raw)
            if entry is None:
                unreadable.append(name)
            elif entry.at < stale:
                unreadable.append(name)  # and stale: dropped
                _log_stale(entry.key)
            else:
                entries.append(entry)
        if unreadable:
            await self._call("take_orphans", lambda p: p.hdel(JOURNAL_KEY, *unreadable))
        if not entries:
            return []
        by_ticket = {e.ticket: e for e in entries if e.ticket}
        keys = list(dict.fromkeys(e.key for e in entries))
        queues = [_queue_of(_lock_key(k)) for k in keys]
        lines = await asyncio.gather(*(self._call("take_orphans", _lrange(q)) for q in queues))
        tokens = {k: [_text(t) for t in line or []] for k, line in zip(keys, lines, strict=True)}
        processes = list({t.partition(".")[0] for line in tokens.values() for t in line})
        alive = await asyncio.gather(
            *(self._call("take_orphans", _exists(redis_key("alive", n))) for n in processes)
        )
        dead = {n for n, up in zip(processes, alive, strict=True) if not up}
        taken = await asyncio.gather(
            *(self._adopt_line(k, tokens[k], dead, by_ticket, older_than) for k in keys)
        )
        orphans = [orphan for line in taken for orphan in line]
        placed = {t for line in tokens.values() for t in line}
        limit = self._clock() - older_than
        for entry in entries:
            if entry.ticket not in placed and entry.at <= limit:
                orphans.extend(await self._take_unplaced(entry))
        return orphans

    async def _adopt_line(
        self,
        key: ConvKey,
        line: list[str],
        dead: set[str],
        by_ticket: dict[str, _Entry],
        uptime: float,
    ) -> list[Orphan]:
        """Take over a line's places of dead processes, oldest first."""
        lock = _lock_key(key)
        taken: list[Orphan] = []
        for token in line:
            if token.partition(".")[0] not in dead:
                continue
            entry = by_ticket.get(token)
            new = self._token(entry.event_id if entry is not None else None)
            lease = self._alive_lease or _DEFAULT_LEASE
            args: list[str | int] = [token, new, "", "", "", _ms(lease), max(1, int(uptime))]
            if entry is not None:
                again = entry.tries < _MAX_TRIES
                fresh = _journal_entry(entry.event, entry.at, new, entry.tries + 1)
                args[2:5] = [entry.field, entry.raw, fresh if again else ""]
            keys = [_queue_of(lock), lock, JOURNAL_KEY]
            done = await self._call("take_orphans", self._script(self._adopt, keys, args))
            if done in (1, 2) and entry is not None:
                locked = done == 2
                if locked:
                    self._leases.add(_Hold(lock, new, lease))
                self._keep_alive(lease)
                start = TurnStart(claimed=True, hits=0, locked=locked, ticket=new)
                taken.append(Orphan(entry.event, start))
            elif entry is not None and not args[4] and done == 3:
                log.error(
                    "message not handled again: it was in flight in two processes that died",
                    extra={"conv": str(key)},
                )
        return taken

    async def _take_unplaced(self, entry: _Entry) -> list[Orphan]:
        """A journal entry with no place in its line: handed back as a new event, once."""
        seen = redis_key("seen", entry.key.channel, entry.event_id)
        keys = [JOURNAL_KEY, _queue_of(_lock_key(entry.key)), seen]
        args = [entry.field, entry.raw, entry.ticket or "-"]
        took = await self._call("take_orphans", self._script(self._take_orphan, keys, args))
        return [Orphan(entry.event)] if took else []

    async def move(self, old: ConvKey, new: ConvKey) -> bool:
        """RENAMENX in one script (RENAMENX alone fails when there is nothing to move)."""
        source, dest = conv_key(old), conv_key(new)
        self._prefetched.pop(source, None)
        self._prefetched.pop(dest, None)
        return bool(await self._call("move", self._script(self._move, [source, dest], [])))

    async def claim_event(self, channel: str, event_id: str, ttl: int = 86400) -> bool:
        """True the first time only (SET NX EX)."""
        seconds = _check_ttl(ttl, "ttl")
        name = redis_key("seen", channel, event_id)
        return bool(await self._call("claim_event", lambda p: p.set(name, 1, nx=True, ex=seconds)))

    async def unclaim_event(self, channel: str, event_id: str) -> None:
        """DEL the dedupe mark."""
        name = redis_key("seen", channel, event_id)
        await self._call("unclaim_event", lambda p: p.delete(name))

    async def push_inbox(self, raw: str) -> None:
        """RPUSH onto the shared inbox (its TTL renewed)."""
        queue = self._script(self._push_inbox, [INBOX_KEY], [raw, INBOX_TTL])
        await self._call("push_inbox", queue)

    async def pop_inbox(self, limit: int = 1000) -> list[str]:
        """LPOP up to ``limit`` kept events."""
        raw = await self._call("pop_inbox", lambda p: p.lpop(INBOX_KEY, limit))
        if not raw:
            return []
        items = raw if isinstance(raw, list) else [raw]
        return [i.decode() if isinstance(i, bytes) else str(i) for i in items]

    async def register_failure(self, scope: str, window: int) -> int:
        """Count one failure in the window (one atomic script)."""
        seconds = _check_ttl(window, "window")
        name = redis_key("lockout", scope)
        return int(
            await self._call("register_failure", self._script(self._window_incr, [name], [seconds]))
        )

    async def failures(self, scope: str) -> int:
        """Failures in the current window."""
        name = redis_key("lockout", scope)
        raw = await self._call("failures", lambda p: p.get(name))
        return int(raw or 0)

    async def failures_many(self, scopes: list[str]) -> list[int]:
        """Failures of each scope (one MGET)."""
        if not scopes:
            return []
        names = [redis_key("lockout", scope) for scope in scopes]
        raws = await self._call("failures", lambda p: p.mget(names))
        return [int(raw or 0) for raw in raws]

    async def clear_failures(self, *scopes: str) -> None:
        """Reset the counters (one DEL)."""
        if scopes:
            names = [redis_key("lockout", scope) for scope in scopes]
            await self._call("clear_failures", lambda p: p.delete(*names))

    async def hit_rate(self, scope: str, window: int) -> int:
        """Count one hit in the fixed window (one atomic script)."""
        seconds = _check_ttl(window, "window")
        name = redis_key("rate", scope)
        return int(await self._call("hit_rate", self._script(self._window_incr, [name], [seconds])))

    async def set_topic(self, thread_id: int, key: ConvKey) -> None:
        """Remember the topic's conversation (SET EX)."""
        name = redis_key("topic", str(thread_id))
        value, seconds = str(key), self._topic_ttl
        await self._call("set_topic", lambda p: p.set(name, value, ex=seconds))

    async def get_topic(self, thread_id: int) -> ConvKey | None:
        """The topic's conversation (GETEX: a topic in use keeps its mapping)."""
        name = redis_key("topic", str(thread_id))
        seconds = self._topic_ttl
        raw = await self._call("get_topic", lambda p: p.getex(name, ex=seconds))
        return _parse_topic(thread_id, raw)

    async def remember(
        self, service_id: int, day: date, invoices: Sequence[int], until: float
    ) -> None:
        """Remember the service's promise (SET PX: Redis forgets it at ``until``)."""
        left = until - self._clock()
        if left <= 0:
            return
        name, value, ms = promise_key(service_id), _promise_value(day, invoices), _ms(left)
        await self._call("remember_promise", lambda p: p.set(name, value, px=ms))

    async def active(self, service_id: int) -> Promise | None:
        """The service's promise, or None once past its ``until``."""
        name = promise_key(service_id)
        raw = await self._call("active_promise", lambda p: p.get(name))
        return _parse_promise(service_id, raw)

    async def scan_conversations(self) -> AsyncIterator[tuple[ConvKey, Session]]:
        """Every stored conversation (SCAN in batches + MGET, never KEYS)."""
        cursor: int = 0
        pattern = f"{PREFIX}:conv:*"
        while True:
            # Off the hot path: straight to Redis, not through the auto-pipeline.
            with self._wrap("scan"):
                cursor, names = await self._redis.scan(cursor, match=pattern, count=_SCAN_BATCH)
            if names:
                with self._wrap("scan"):
                    values = await self._redis.mget(names)
                for raw_name, raw in zip(names, values, strict=True):
                    name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
                    key = _key_from_conv(name)
                    if key is None or raw is None:  # expired between SCAN and MGET
                        continue
                    session = _parse_or_skip(key, raw)
                    if session is not None:
                        yield key, session
            if int(cursor) == 0:
                return
