"""The session store: one JSON value per conversation, plus the small keys around it.

Every key is built by ``redis_key`` (``wispbot:{kind}:{parts...}``)::

    wispbot:conv:{channel}:{chat_id}     the session JSON, idle TTL (SESSION_TTL)
    wispbot:lock:{channel}:{chat_id}     per-conversation lock: its owner's token, a short PX lease
                                         renewed while its holder works
    wispbot:lock:{channel}:{chat_id}:queue  the conversation's line of turns, oldest (the owner)
                                         first; a TTL of the journal's, renewed by each arrival
    wispbot:alive:{process}              a process's key, renewed while it runs (tells a dead
                                         process's turns from live ones)
    wispbot:seen:{channel}:{event_id}    dedupe of channel events, SET NX EX
    wispbot:topic:{thread_id}            agents' forum topic -> conversation key, an idle TTL
                                         (the store's ``topic_ttl``: SESSION_TTL) renewed on use
    wispbot:lockout:{scope}              failed verifications in a window (per document, per chat)
    wispbot:rate:{scope}                 fixed-window flood counter
    wispbot:turns:inflight               the journal of turns in flight (a hash); its TTL is
                                         renewed by each write and the sweep drops entries older
                                         than ``JOURNAL_MAX_AGE``
    wispbot:inbox:pending                events a stopping process kept (a list), TTL renewed by
                                         each push

Every key expires: none is written without a TTL, so nothing grows with the customers served.

Two implementations pass one contract suite: ``RedisStore`` (the service) and ``MemoryStore``
(demo, console, scenarios, unit tests; TTLs follow an injected clock).

A customer's turn costs the Redis store three round trips: ``open_turn`` (dedupe claim, rate
count, lock, session read: one script), the save of the session with its outbox, and
``save_and_release`` (the final save and the unlock: one script). Commands that different
conversations issue in the same event-loop tick leave together in one pipeline
(``bot.autopipe``), so under load a trip carries many turns' commands. Errors::

    StoreError
     ├── StoreUnavailable   the backend did not answer (Redis down, timeout, connection lost)
     ├── LockTimeout        the conversation lock stayed busy for longer than ``wait``
     ├── LockLost           the turn's place was taken over (its process was taken for dead)
     └── SessionCorrupt     a stored session is not a readable session JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
import orjson
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.autopipe import AutoPipeline, Queue
from flows.ports import PortUnavailable
from flows.types import ConvKey

log = logging.getLogger(__name__)

Clock = Callable[[], float]
KeyKind = Literal[
    "conv", "lock", "seen", "topic", "lockout", "rate", "chatlock", "inbox", "turns", "alive"
]
PREFIX = "wispbot"
SCHEMA_VERSION = 1

_T = TypeVar("_T")


class StoreError(Exception):
    """Anything that went wrong in the session store."""


class StoreUnavailable(StoreError, PortUnavailable):
    """The backend did not answer; the operation may work later."""


class LockTimeout(StoreError):
    """The conversation lock was still held by someone else when ``wait`` ran out."""


class LockLost(StoreError):
    """The turn no longer owns its conversation: another process took its place over (this one
    was taken for dead, e.g. after a long pause). Nothing of the turn may be saved or sent."""


class SessionCorrupt(StoreError):
    """A stored session could not be read back."""


@dataclass
class Session:
    """One conversation's state: the flow state name, its data, language and verification."""

    state: str = "start"
    data: dict[str, Any] = field(default_factory=dict)  # JSON-safe values only
    lang: str = "es"
    verified_until: float | None = None  # epoch seconds
    updated_at: float = 0.0
    outbox: list[dict[str, Any]] = field(default_factory=list)  # replies saved before sending
    v: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """Serialise to the stored JSON (compact, UTF-8 kept readable)."""
        # Built by hand: dataclasses.asdict deep-copies ``data`` and the outbox first, which
        # cost more than the encoding itself on every turn (twice: the snapshot and the save).
        fields = {
            "state": self.state,
            "data": self.data,
            "lang": self.lang,
            "verified_until": self.verified_until,
            "updated_at": self.updated_at,
            "outbox": self.outbox,
            "v": self.v,
        }
        return orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Session:
        """Parse stored JSON; unknown keys are ignored; unreadable input raises SessionCorrupt."""
        try:
            obj = orjson.loads(raw)
        except (ValueError, TypeError) as err:  # JSONDecodeError and UnicodeDecodeError
            msg = f"session is not valid JSON: {err}"
            raise SessionCorrupt(msg) from err
        if not isinstance(obj, dict):
            msg = f"session JSON is a {type(obj).__name__}, not an object"
            raise SessionCorrupt(msg)
        default = cls()
        out = cls(
            state=_typed(obj, "state", str, default.state),
            data=_typed(obj, "data", dict, default.data),
            lang=_typed(obj, "lang", str, default.lang),
            verified_until=_number_or_none(obj, "verified_until"),
            updated_at=float(_typed(obj, "updated_at", (int, float), default.updated_at)),
            outbox=_typed(obj, "outbox", list, default.outbox),
            v=_typed(obj, "v", int, default.v),
        )
        if not all(isinstance(item, dict) for item in out.outbox):
            msg = "session field 'outbox' holds a non-object"
            raise SessionCorrupt(msg)
        return out


@dataclass(frozen=True)
class TurnStart:
    """What opening a customer's turn found (``SessionStore.open_turn``)."""

    claimed: bool  # False: a repeat of an event already seen; nothing else was done
    hits: int  # events in the conversation's rate window, this one included (0 for a repeat)
    locked: bool  # the conversation lock is now held by this store
    # The turn's place: the token of the lock it holds (``locked``) or of its place in the
    # conversation's line of waiters (busy); None for a repeat or a message over the limit.
    # Given back to ``lock``, ``release`` and ``save_and_release``, it tells this turn's lock
    # from that of the next turn of the same conversation in the same process.
    ticket: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Orphan:
    """A turn of a dead process, taken over (``SessionStore.take_orphans``)."""

    event: str  # the event's JSON, to handle again
    # Its place, taken over in its conversation's line: handle it with this start (no
    # ``open_turn``). None: it had no place left; handle it as a new event.
    start: TurnStart | None = None


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


def _typed(obj: dict[str, Any], name: str, kind: type[_T] | tuple[type, ...], default: _T) -> _T:
    if name not in obj:
        return default
    value = obj[name]
    # bool is an int in Python; a stored true/false is never a valid number here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        msg = f"session field {name!r} has type {type(value).__name__}"
        raise SessionCorrupt(msg)
    return value  # type: ignore[return-value]


def _number_or_none(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    return float(_typed(obj, name, (int, float), 0.0))


def redis_key(kind: KeyKind, *parts: str) -> str:
    """Build any wispbot key: ``wispbot:{kind}:{part}:{part}...``."""
    if not parts or any(p == "" for p in parts):
        msg = f"a {kind} key needs non-empty parts, got {parts!r}"
        raise ValueError(msg)
    return ":".join((PREFIX, kind, *parts))


def conv_key(key: ConvKey) -> str:
    """The session key of a conversation: ``wispbot:conv:{channel}:{chat_id}``."""
    return redis_key("conv", key.channel, key.chat_id)


def _lock_key(key: ConvKey) -> str:
    return redis_key("lock", key.channel, key.chat_id)


def _queue_of(lock: str) -> str:
    """The waiters' line of a conversation lock."""
    return lock + ":queue"


# The journal of turns in flight: one hash, a field per turn from ``open_turn`` to the save that
# makes its outcome durable. What a dead process left there is handled by another.
JOURNAL_KEY = redis_key("turns", "inflight")
# A hash has no TTL per field: an entry this old is dropped by the sweep instead of handled
# (the event's dedupe mark has expired by then, and Telegram keeps an update no longer); the
# hash itself expires this long after its last write, when every entry is older still.
JOURNAL_MAX_AGE = 86400
JOURNAL_TTL = 2 * JOURNAL_MAX_AGE
INBOX_KEY = redis_key("inbox", "pending")
INBOX_TTL = JOURNAL_MAX_AGE  # renewed by each push; the next process to start empties it
DEFAULT_TOPIC_TTL = 7 * 24 * 3600  # SESSION_TTL's default


def _journal_field(key: ConvKey, event_id: str) -> str:
    """A turn's field in the journal: its conversation and event (neither holds a ``|``)."""
    return f"{key}|{event_id}"


def _journal_entry(event: str, at: float, ticket: str = "", tries: int = 1) -> str:
    return orjson.dumps({"at": at, "event": event, "ticket": ticket, "tries": tries}).decode()


@dataclass(frozen=True)
class _Entry:
    """One turn of the journal of turns in flight, as read."""

    field: str
    key: ConvKey
    event_id: str
    at: float
    event: str
    ticket: str  # its place in the line ('' for an entry of an older version)
    tries: int
    raw: str


def _parse_journal(field: str | bytes, raw: str | bytes) -> _Entry | None:
    """The journal entry, or None when unreadable."""
    try:
        name = field.decode() if isinstance(field, bytes) else field
        text = raw.decode() if isinstance(raw, bytes) else raw
        conv, _, event_id = name.partition("|")
        entry = orjson.loads(text)
        return _Entry(
            name,
            ConvKey.parse(conv),
            event_id,
            float(entry["at"]),
            str(entry["event"]),
            str(entry.get("ticket", "")),
            int(entry.get("tries", 1)),
            text,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        log.warning("unreadable journal entry dropped")
        return None


def _key_from_conv(name: str) -> ConvKey | None:
    """Reverse of ``conv_key``; None for a key that is not a conversation key."""
    head = f"{PREFIX}:conv:"
    if not name.startswith(head):
        return None
    try:
        return ConvKey.parse(name[len(head) :])
    except ValueError:
        return None


_DEFAULT_LEASE = 5.0  # a process key's lease before its first turn said otherwise
_MAX_TRIES = 2  # a message whose process died is taken over once: one that kills every
# process handling it is not tried forever


def _ms(seconds: float) -> int:
    """Milliseconds for PX (at least 1)."""
    return max(1, int(seconds * 1000))


def _lrange(name: str) -> Queue:
    return lambda p: p.lrange(name, 0, -1)


def _set_px(name: str, px: int) -> Queue:
    return lambda p: p.set(name, 1, px=px)


def _exists(name: str) -> Queue:
    return lambda p: p.exists(name)


def _text(raw: str | bytes) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _check_lease(timeout: float) -> float:
    if timeout <= 0:
        msg = f"lock timeout must be positive, got {timeout}"
        raise ValueError(msg)
    return timeout


def _check_ttl(ttl: float, what: str) -> int:
    """Whole seconds (Redis EX takes integers), refusing what would never or instantly expire."""
    if ttl < 1:
        msg = f"{what} must be at least 1 second, got {ttl}"
        raise ValueError(msg)
    return int(ttl)


# Lock polling: start fast (an uncontended handover is usually a few ms), back off to spare Redis.
_POLL_FIRST = 0.005
_POLL_MAX = 0.1
_PURGE_EVERY = 1000  # memory store: sweep expired values every so many writes


class SessionStore(ABC):
    """Where sessions, locks, dedupe marks, counters and topic mappings live."""

    @abstractmethod
    async def load(self, key: ConvKey) -> Session | None:
        """The conversation's session, or None when there is none (or it expired)."""

    @abstractmethod
    async def save(
        self,
        key: ConvKey,
        session: Session,
        ttl: int,
        closes: str | None = None,
        *,
        ticket: str | None = None,
    ) -> None:
        """Store the session with an idle TTL in seconds (one write). ``closes``: the event id
        of the turn whose outcome this save makes durable; it leaves the journal. Within a
        turn (``ticket``, or a lock this store holds) the save is fenced: ``LockLost`` when the
        turn's place was taken over, and nothing is saved."""

    @abstractmethod
    async def delete(self, key: ConvKey) -> None:
        """Forget the conversation's session."""

    @abstractmethod
    async def move(self, old: ConvKey, new: ConvKey) -> bool:
        """Give the session of ``old`` to ``new`` (the customer's number changed), keeping its
        TTL; False, and nothing changed, when ``old`` has none or ``new`` already has one."""

    @abstractmethod
    async def claim_event(self, channel: str, event_id: str, ttl: int = 86400) -> bool:
        """True the first time an event id is seen on a channel, False for every repeat."""

    @abstractmethod
    async def unclaim_event(self, channel: str, event_id: str) -> None:
        """Forget an event id, so the event is handled when it comes again (it was not)."""

    @abstractmethod
    async def push_inbox(self, raw: str) -> None:
        """Keep an event a stopping process received but could not handle, for the next one."""

    @abstractmethod
    async def pop_inbox(self, limit: int = 1000) -> list[str]:
        """Take the kept events, oldest first."""

    @abstractmethod
    def lock(
        self,
        key: ConvKey,
        *,
        timeout: float = 30.0,
        wait: float = 20.0,
        ticket: str | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Hold the conversation lock, waiting ``wait`` s at most for it.

        ``timeout`` is the lock's lease: renewed while the lock is held; it never cuts a
        running turn short, and a lapsed lock goes to nobody but its holder while that
        holder's process lives (a dead process's place is taken over or passed over).
        Waiters are served first come, first served; ``ticket`` is the place ``open_turn``
        already took in the line (else the caller joins the line's end).
        """

    @abstractmethod
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
        """Open a customer's turn in one step: claim the event; when it is new, count it in the
        rate window; when within ``rate_limit``, write ``journal`` (the event's JSON) in the
        journal of turns in flight, try the conversation lock once (no waiting) and
        read the session for the next ``load``. A busy conversation puts the turn in its line
        of waiters (``TurnStart.ticket``), for the caller to wait on with ``lock``. A lock taken
        here is given back with ``release`` or ``save_and_release``."""

    @abstractmethod
    async def release(self, key: ConvKey, ticket: str | None = None) -> None:
        """Give back the conversation lock this store holds (nothing when none is held).

        With ``ticket``, only the lock of that turn: the next turn of the conversation may
        already hold the lock (handed over by this turn's ``save_and_release``).
        """

    @abstractmethod
    async def save_and_release(
        self,
        key: ConvKey,
        session: Session,
        ttl: int,
        ticket: str | None = None,
        closes: str | None = None,
    ) -> None:
        """Save the session (``closes`` as in ``save``), then give back the lock (one step);
        the lock goes to the conversation's oldest waiter."""

    @abstractmethod
    async def drop_turn(self, key: ConvKey, event_id: str) -> None:
        """Take a turn out of the journal without a save (it ended some other way)."""

    @abstractmethod
    async def take_orphans(self, older_than: float) -> list[Orphan]:
        """Take over the journal's turns whose process died (its key lapsed while the store was
        up for ``older_than`` s): each keeps its place in its conversation's line, now this
        store's, so it is handled in its order (``Orphan.start``). A turn that had no place
        left (written ``older_than`` s ago or more) is handed back as a new event (its dedupe
        mark cleared). Each is taken by one caller only."""

    @abstractmethod
    async def register_failure(self, scope: str, window: int) -> int:
        """Count one failure in a window of ``window`` s started by the first; return the count."""

    @abstractmethod
    async def failures(self, scope: str) -> int:
        """Failures counted in the current window (0 when none)."""

    @abstractmethod
    async def failures_many(self, scopes: list[str]) -> list[int]:
        """``failures`` of several scopes at once, in their order."""

    @abstractmethod
    async def clear_failures(self, *scopes: str) -> None:
        """Reset the failure counters of these scopes (a successful verification)."""

    @abstractmethod
    async def hit_rate(self, scope: str, window: int) -> int:
        """Count one hit in a fixed window of ``window`` s; return the hits so far in it."""

    @abstractmethod
    async def set_topic(self, thread_id: int, key: ConvKey) -> None:
        """Remember which conversation an agents' forum topic belongs to (for the store's
        ``topic_ttl``, renewed by each ``set_topic`` and ``get_topic``)."""

    @abstractmethod
    async def get_topic(self, thread_id: int) -> ConvKey | None:
        """The conversation of a forum topic, or None; a topic in use keeps its mapping."""

    @abstractmethod
    async def drop_topic(self, thread_id: int) -> None:
        """Forget a forum topic's conversation."""

    @abstractmethod
    def scan_conversations(self) -> AsyncIterator[tuple[ConvKey, Session]]:
        """Every stored conversation (unreadable ones are logged and skipped)."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers (readiness)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections."""


# --------------------------------------------------------------------------- memory


class MemoryStore(SessionStore):
    """The store in one process's memory: same behaviour, TTLs against the injected clock."""

    def __init__(self, clock: Clock = time.time, *, topic_ttl: int = DEFAULT_TOPIC_TTL) -> None:
        self._clock = clock
        self._topic_ttl = _check_ttl(topic_ttl, "topic_ttl")
        # name -> (value, expires_at or None); values are kept as JSON text like in Redis so a
        # caller mutating its Session never changes what is stored.
        self._values: dict[str, tuple[str, float | None]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._released: dict[str, asyncio.Event] = {}
        self._lines: dict[str, deque[str]] = {}  # lock name -> tokens waiting, oldest first
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
        for name, (_, lock_expires) in list(self._locks.items()):
            if lock_expires <= now:
                del self._locks[name]

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
            if at > limit or not self._free(lock) or self._lines.get(lock):
                continue
            del self._journal[name]
            await self.unclaim_event(key.channel, event_id)
            taken.append(Orphan(event))
        return taken

    async def delete(self, key: ConvKey) -> None:
        """Forget the session."""
        self._values.pop(conv_key(key), None)

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
    ) -> AbstractAsyncContextManager[None]:
        """Hold the conversation lock (asyncio-based, expiry by the injected clock)."""
        return self._lock(_lock_key(key), _check_lease(timeout), wait, ticket)

    @asynccontextmanager
    async def _lock(
        self, name: str, expire: float, wait: float, ticket: str | None
    ) -> AsyncIterator[None]:
        hold = await self._acquire(name, expire, wait, ticket)
        try:
            yield
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
            held = self._locks.get(hold.name)
            ours = held is not None and held[0] == hold.token and held[1] > now
            if ours:
                self._locks[hold.name] = (hold.token, now + hold.lease)
            kept.append(ours)
        return kept

    def _free(self, name: str) -> bool:
        held = self._locks.get(name)
        return held is None or held[1] <= self._clock()

    def _take_or_queue(self, name: str, token: str, expire: float) -> bool:
        """Take the lock when it is free and nobody waits, else join the line (the Redis
        store's ``_ACQUIRE_LOAD``)."""
        line = self._lines.get(name)
        if not line and self._free(name):
            self._locks[name] = (token, self._clock() + expire)
            return True
        self._lines.setdefault(name, deque()).append(token)
        return False

    def _my_turn(self, name: str, token: str, expire: float) -> bool:
        """Handed the lock, or found it free (its holder died): take it, leave the line."""
        held = self._locks.get(name)
        mine = held is not None and held[0] == token and held[1] > self._clock()
        if not mine and not self._free(name):
            return False
        self._locks[name] = (token, self._clock() + expire)
        self._leave_line(name, token)
        return True

    def _leave_line(self, name: str, token: str) -> None:
        line = self._lines.get(name)
        if line is not None:
            with contextlib.suppress(ValueError):
                line.remove(token)
            if not line:
                del self._lines[name]

    async def _acquire(self, name: str, expire: float, wait: float, ticket: str | None) -> _Hold:
        token = ticket or secrets.token_hex(16)
        if ticket is not None or not self._take_or_queue(name, token, expire):
            try:
                await self._wait_in_line(name, token, expire, wait)
            except BaseException:
                # Gave up or cancelled: leave the line, and pass the lock on if it was handed
                # over meanwhile, so nobody waits out a lease for us.
                held = self._locks.get(name)
                if held is not None and held[0] == token:
                    self._release(name, token, expire)
                self._leave_line(name, token)
                raise
        hold = _Hold(name, token, expire)
        self._leases.add(hold)
        return hold

    async def _wait_in_line(self, name: str, token: str, expire: float, wait: float) -> None:
        loop = asyncio.get_running_loop()
        # The wait is measured in real time: a simulated clock may stand still while we wait.
        deadline = loop.time() + max(wait, 0.0)
        delay = _POLL_FIRST
        while not self._my_turn(name, token, expire):
            remaining = deadline - loop.time()
            if remaining <= 0:
                msg = f"conversation lock {name} still busy after {wait:g} s"
                raise LockTimeout(msg)
            event = self._released.setdefault(name, asyncio.Event())
            # Woken by a release; the timeout also notices a lock that expired by the clock.
            try:
                await asyncio.wait_for(event.wait(), min(delay, remaining))
            except TimeoutError:
                delay = min(delay * 2, _POLL_MAX)

    def _release(self, name: str, token: str, lease: float) -> None:
        held = self._locks.get(name)
        if held is None or held[0] != token:
            log.warning("lock expired before its owner released it", extra={"lock": name})
            return
        del self._locks[name]
        line = self._lines.get(name)
        if line:
            # Straight to the oldest waiter, as the Redis store's release does.
            self._locks[name] = (line.popleft(), self._clock() + lease)
            if not line:
                del self._lines[name]
        event = self._released.pop(name, None)
        if event is not None:
            event.set()

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

    async def drop_topic(self, thread_id: int) -> None:
        """Forget the topic."""
        self._values.pop(redis_key("topic", str(thread_id)), None)

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


def _parse_topic(thread_id: int, raw: str | bytes | None) -> ConvKey | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return ConvKey.parse(text)
    except ValueError:
        log.warning("unreadable topic mapping ignored", extra={"thread_id": thread_id})
        return None


def _log_stale(key: ConvKey) -> None:
    log.warning(
        "journal entry older than its limit dropped",
        extra={"conv": str(key), "max_age": JOURNAL_MAX_AGE},
    )


def _parse_or_skip(key: ConvKey, raw: str | bytes) -> Session | None:
    try:
        return Session.from_json(raw)
    except SessionCorrupt as err:
        log.warning("corrupt session skipped", extra={"conv": str(key), "error": str(err)})
        return None


# --------------------------------------------------------------------------- redis

# The conversation's line (``wispbot:lock:{conv}:queue``, a list of tokens) holds every turn of
# the conversation from its arrival to its end, in arrival order: its head is the turn whose
# time it is. The lock key holds the head's token with a short lease that its process renews;
# only the head may take a free lock, so a holder that lapsed (its process died, or Redis was
# down) keeps its place: nobody runs a later message first. A token names its process
# (``{process}.{random}.j{event}``, or ``.n`` for a turn no journal keeps), and each
# process keeps ``wispbot:alive:{process}`` alive while it runs: a token whose process key lapsed
# while Redis was up belongs to a dead process. Its journalled turns are taken over in their
# places by another process (``take_orphans``); its other places (an agent's message, a turn
# whose outcome is saved) are passed over. Every write of a turn checks that its token still
# owns the conversation (fencing): a turn whose place was taken over saves nothing.
_OWNERSHIP = """
local function alive(token)
    local process = string.match(token, '^([^.]+)%.')
    if not process then
        return true
    end
    return redis.call('exists', 'wispbot:alive:' .. process) == 1
end
local function settled(uptime)
    local up = string.match(redis.call('info', 'server'), 'uptime_in_seconds:(%d+)')
    return tonumber(up) >= tonumber(uptime)
end
local function owns(lock, queue, token)
    if redis.call('lindex', queue, 0) ~= token then
        return false
    end
    local holder = redis.call('get', lock)
    return (not holder) or holder == token
end
local function hand_off(lock, queue, lease)
    local nxt = redis.call('lindex', queue, 0)
    if nxt then
        redis.call('set', lock, nxt, 'PX', lease)
    else
        redis.call('del', lock)
    end
end
local function release(lock, queue, token, lease)
    if owns(lock, queue, token) then
        redis.call('lpop', queue)
        hand_off(lock, queue, lease)
        return 1
    end
    redis.call('lrem', queue, 0, token)
    return 0
end
local function take(lock, conv, token, lease)
    redis.call('set', lock, token, 'PX', lease)
    local session = redis.call('get', conv)
    if session then
        return {1, session}
    end
    return {1}
end
"""

# KEYS: lock, queue; ARGV: token, lease ms for the next holder.
_RELEASE = (
    _OWNERSHIP
    + """
return release(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
"""
)

# Join the line and, at its head, take the lock and read the session in the same round trip.
# KEYS: lock, session, queue, process key; ARGV: token, lease ms, process key lease ms.
_ACQUIRE_LOAD = (
    _OWNERSHIP
    + """
redis.call('set', KEYS[4], 1, 'PX', ARGV[3])
redis.call('rpush', KEYS[3], ARGV[1])
redis.call('persist', KEYS[3])  -- (a line of an older version had a TTL)
if owns(KEYS[1], KEYS[3], ARGV[1]) then
    return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
end
return {0}
"""
)

# A waiter's poll. KEYS: lock, session, queue, journal; ARGV: token, lease ms, uptime s, the
# conversation as in journal fields. At the head: take the lock, read the session. A dead
# process's head that no journal entry keeps (an agent's message, a turn whose outcome is saved
# with its outbox), its lock lapsed, is passed over. -1: this place is gone (taken over: this
# process was taken for dead).
_WAIT_TURN = (
    _OWNERSHIP
    + """
if owns(KEYS[1], KEYS[3], ARGV[1]) then
    return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
end
if not redis.call('lpos', KEYS[3], ARGV[1]) then
    return {-1}
end
local head = redis.call('lindex', KEYS[3], 0)
local event = string.match(head, '^[^.]+%.[^.]+%.j(.*)$')
local kept = event and redis.call('hexists', KEYS[4], ARGV[4] .. '|' .. event) == 1
if redis.call('exists', KEYS[1]) == 0 and not kept and not alive(head) and settled(ARGV[3]) then
    redis.call('lpop', KEYS[3])
    hand_off(KEYS[1], KEYS[3], ARGV[2])
    if owns(KEYS[1], KEYS[3], ARGV[1]) then
        return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
    end
end
return {0}
"""
)

# A waiter leaving for good (cancelled): its place, and the lock if it was handed over.
# KEYS: lock, queue; ARGV: token, lease ms.
_LEAVE = _RELEASE

# A waiter giving up. KEYS: lock, queue; ARGV: token. 1 when it is at the head after all (it
# takes the lock), else it leaves the line.
_ABANDON = (
    _OWNERSHIP
    + """
if owns(KEYS[1], KEYS[2], ARGV[1]) then
    return 1
end
redis.call('lrem', KEYS[2], 0, ARGV[1])
return 0
"""
)

# Open a customer's turn in one round trip: claim the event (its mark holds the turn's token; a
# repeat stops here), count it in the conversation's rate window, and within the limit write
# the event in the journal of turns in flight, take a place in the line and, at its head, the
# lock, reading the session. The same call again (its answer was lost: Redis went down) finds
# its own mark and answers where the turn stands.
# KEYS: seen mark, rate counter, lock, session, queue, journal, process key; ARGV: seen TTL,
# window, limit, token, lease ms, process key lease ms, journal field, journal entry ('' none).
_OPEN_TURN = (
    _OWNERSHIP
    + """
local function placed(hits)
    if owns(KEYS[3], KEYS[5], ARGV[4]) then
        local taken = take(KEYS[3], KEYS[4], ARGV[4], ARGV[5])
        return {1, hits, 1, taken[2]}
    end
    if redis.call('lpos', KEYS[5], ARGV[4]) then
        return {1, hits, 0, false, 1}
    end
    return {1, math.max(hits, tonumber(ARGV[3]) + 2), 0}
end
local seen = redis.call('get', KEYS[1])
if seen then
    if seen ~= ARGV[4] then
        return {0, 0, 0}
    end
    return placed(tonumber(redis.call('get', KEYS[2]) or '1'))
end
redis.call('set', KEYS[1], ARGV[4], 'EX', ARGV[1])
redis.call('set', KEYS[2], 0, 'EX', ARGV[2], 'NX')
local hits = redis.call('incr', KEYS[2])
if hits > tonumber(ARGV[3]) then
    return {1, hits, 0}
end
if ARGV[8] ~= '' then
    redis.call('hset', KEYS[6], ARGV[7], ARGV[8])
    redis.call('expire', KEYS[6], ARGV[9])
end
redis.call('set', KEYS[7], 1, 'PX', ARGV[6])
redis.call('rpush', KEYS[5], ARGV[4])
-- A backstop, not a timer: a line lives as long as its turns (seconds); the TTL (renewed by
-- each arrival) only clears a line a crash left with nobody to pass its dead head over.
redis.call('expire', KEYS[5], ARGV[9])
return placed(hits)
"""
)

# A save of a turn (fenced): only while its token owns the conversation; the lease is renewed
# (taken again after a Redis restart). With a journal field, the save makes the turn's outcome
# durable: it leaves the journal. KEYS: session, lock, queue, journal; ARGV: session, TTL,
# token, lease ms, journal field ('' none). 0: not the owner, nothing saved.
_SAVE_DONE = (
    _OWNERSHIP
    + """
if not owns(KEYS[2], KEYS[3], ARGV[3]) then
    return 0
end
redis.call('set', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[5] ~= '' then
    redis.call('hdel', KEYS[4], ARGV[5])
end
return 1
"""
)

# Close a turn in one round trip (fenced): the final save, the turn out of the journal, then the
# release to the next in line. Same KEYS and ARGV as _SAVE_DONE. 0: not the owner.
_SAVE_RELEASE = (
    _OWNERSHIP
    + """
if not owns(KEYS[2], KEYS[3], ARGV[3]) then
    return 0
end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[5] ~= '' then
    redis.call('hdel', KEYS[4], ARGV[5])
end
return release(KEYS[2], KEYS[3], ARGV[3], ARGV[4])
"""
)

# Take over a dead process's place in a line, once Redis has been up long enough for every live
# process to have renewed its key. With its journal entry (unchanged since it was read): the
# place gets the new token, the entry the new one (2 when at the head: the lock is taken too;
# 1 waiting). Without one, or with an empty new entry (tried twice already), the place is
# removed and the lock passed on (3). 0: nothing done (alive after all, or taken by another).
# KEYS: queue, lock, journal; ARGV: old token, new token, journal field ('' none), entry read,
# new entry ('' drop), lease ms, uptime s.
_ADOPT = (
    _OWNERSHIP
    + """
if not settled(ARGV[7]) or alive(ARGV[1]) then
    return 0
end
local pos = redis.call('lpos', KEYS[1], ARGV[1])
if not pos then
    return 0
end
if ARGV[3] ~= '' and ARGV[5] ~= '' and redis.call('hget', KEYS[3], ARGV[3]) == ARGV[4] then
    redis.call('lset', KEYS[1], pos, ARGV[2])
    redis.call('hset', KEYS[3], ARGV[3], ARGV[5])
    if pos == 0 then
        redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[6])
        return 2
    end
    return 1
end
if ARGV[3] ~= '' and ARGV[5] == '' then
    redis.call('hdel', KEYS[3], ARGV[3])
end
redis.call('lrem', KEYS[1], 1, ARGV[1])
if pos == 0 then
    hand_off(KEYS[2], KEYS[1], ARGV[6])
end
return 3
"""
)

# A session to a new key (the customer's number changed), unless the new key has one already.
# KEYS: old session, new session. 1 when moved.
_MOVE = """
if redis.call('exists', KEYS[1]) == 0 then
    return 0
end
return redis.call('renamenx', KEYS[1], KEYS[2])
"""

# Take a journal entry that has no place in its line (its turn ended without saving, e.g. the
# store stayed down past the engine's retries): it is handled again as a new event, so its
# dedupe mark goes. KEYS: journal, queue, seen mark; ARGV: journal field, entry read, ticket.
_TAKE_ORPHAN = """
if redis.call('lpos', KEYS[2], ARGV[3]) or redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then
    return 0
end
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('del', KEYS[3])
return 1
"""

# Renew the lease of every lock whose token still owns its conversation (KEYS: lock, queue,
# lock, queue, ...; ARGV: token, lease ms, token, ...).
_RENEW = (
    _OWNERSHIP
    + """
local kept = {}
for i = 1, #KEYS / 2 do
    if owns(KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 * i - 1]) then
        redis.call('set', KEYS[2 * i - 1], ARGV[2 * i - 1], 'PX', ARGV[2 * i])
        kept[i] = 1
    else
        kept[i] = 0
    end
end
return kept
"""
)

# Keep an event for the next process. KEYS: inbox; ARGV: the event, the inbox's TTL.
_PUSH_INBOX = """
redis.call('rpush', KEYS[1], ARGV[1])
redis.call('expire', KEYS[1], ARGV[2])
"""

# One round trip: start the window (SET NX EX keeps an existing window's end), then count.
_WINDOW_INCR = """
redis.call('set', KEYS[1], 0, 'EX', ARGV[1], 'NX')
return redis.call('incr', KEYS[1])
"""

_SCAN_BATCH = 200
_MAX_CONNECTIONS = 64
_POOL_WAIT = 5.0
_PING_DEADLINE = 2.0


class _HiredisPacking:
    """``pack_command`` through hiredis's C packer.

    redis-py packs commands in Python on its asyncio connections (its sync ones already use
    hiredis): a few microseconds per argument, and a turn's scripts carry a dozen arguments and
    the session JSON. The result is the same RESP bytes.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as err:
            raise DataError(str(err)) from err


class _Connection(_HiredisPacking, Connection):
    pass


class _SSLConnection(_HiredisPacking, SSLConnection):
    pass


class _UnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


class _SentinelConnection(_HiredisPacking, SentinelManagedConnection):
    pass


_FAST_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _Connection,
    SSLConnection: _SSLConnection,
    UnixDomainSocketConnection: _UnixConnection,
    SentinelManagedConnection: _SentinelConnection,
}


def _pack_fast(pool: ConnectionPool) -> None:
    """Let the pool's new connections pack commands with hiredis."""
    pool.connection_class = _FAST_PACKING.get(pool.connection_class, pool.connection_class)


def _connection_options() -> dict[str, Any]:
    """Options that make a client survive a Redis restart or a dropped connection."""
    return {
        "decode_responses": False,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 3.0,
        "health_check_interval": 15,
        # A few quick retries ride over a dropped connection or a failover; a longer outage
        # surfaces as StoreUnavailable and the next message tries again.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, dict[str, Any]]:
    """Read ``redis+sentinel://[user:pass@]host:port[,host:port]/service[/db]``.

    Returns the sentinel addresses, the service name, the database and the master's credentials.
    ``?sentinel_password=`` sets a separate password for the sentinels themselves.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis+sentinel":
        msg = "expected a redis+sentinel:// URL"
        raise ValueError(msg)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    auth: dict[str, Any] = {}
    if userinfo:
        user, has_pw, password = userinfo.partition(":")
        if has_pw:
            auth["password"] = unquote(password)
            if user:
                auth["username"] = unquote(user)
        else:
            auth["password"] = unquote(user)  # redis+sentinel://secret@host form
    hosts: list[tuple[str, int]] = []
    for item in filter(None, hostlist.split(",")):
        host, port = item, "26379"
        if item.startswith("["):  # [::1]:26379
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or port
        elif ":" in item:
            host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            msg = "sentinel URL has a bad host:port"
            raise ValueError(msg)
        hosts.append((host, int(port)))
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not hosts or not segments or len(segments) > 2:
        msg = "expected redis+sentinel://host:port[,host:port]/service_name[/db]"
        raise ValueError(msg)
    if len(segments) == 2 and not segments[1].isdigit():
        msg = "sentinel URL database must be a number"
        raise ValueError(msg)
    db = int(segments[1]) if len(segments) == 2 else 0
    query = parse_qs(parts.query)
    if "sentinel_password" in query:
        auth["sentinel_password"] = query["sentinel_password"][0]
    return hosts, segments[0], db, auth


class RedisStore(SessionStore):
    """The store in Redis: shared by every process of the service."""

    def __init__(
        self,
        redis: Redis,
        *,
        clock: Clock = time.time,
        sentinel: Sentinel | None = None,
        topic_ttl: int = DEFAULT_TOPIC_TTL,
    ) -> None:
        self._redis = redis
        self._topic_ttl = _check_ttl(topic_ttl, "topic_ttl")
        self._pipe = AutoPipeline(redis)
        self._clock = clock
        self._sentinel = sentinel  # closed with the store when from_url built it
        self._release = self._pipe.register(_RELEASE)
        self._acquire_load = self._pipe.register(_ACQUIRE_LOAD)
        self._wait_turn = self._pipe.register(_WAIT_TURN)
        self._abandon = self._pipe.register(_ABANDON)
        self._leave = self._pipe.register(_LEAVE)
        # Session JSON read together with a lock this process holds (conv key -> raw or None),
        # handed to the next ``load`` of that conversation; dropped by a save or the release.
        self._prefetched: dict[str, bytes | str | None] = {}
        self._window_incr = self._pipe.register(_WINDOW_INCR)
        self._open_turn = self._pipe.register(_OPEN_TURN)
        self._save_release = self._pipe.register(_SAVE_RELEASE)
        self._save_done = self._pipe.register(_SAVE_DONE)
        self._move = self._pipe.register(_MOVE)
        self._take_orphan = self._pipe.register(_TAKE_ORPHAN)
        self._adopt = self._pipe.register(_ADOPT)
        self._renew = self._pipe.register(_RENEW)
        self._push_inbox = self._pipe.register(_PUSH_INBOX)
        self._leases = _LeaseKeeper(self._extend)
        # This process's name in its tokens, and its key kept alive while it runs.
        self._process = secrets.token_hex(6)
        self._alive_key = redis_key("alive", self._process)
        self._alive_lease = 0.0
        self._heartbeat: asyncio.Task[None] | None = None
        # Tokens of open_turn calls not yet answered: a retry of the call reuses its token, so
        # it finds its own claim when the first call ran and only its answer was lost.
        self._opening: dict[tuple[str, str], str] = {}

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock = time.time, topic_ttl: int = DEFAULT_TOPIC_TTL
    ) -> RedisStore:
        """Connect lazily to redis://, rediss://, unix:// or redis+sentinel:// URLs."""
        options = _connection_options()
        if url.startswith("redis+sentinel://"):
            hosts, service, db, auth = parse_sentinel_url(url)
            sentinel_password = auth.pop("sentinel_password", None)
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": options["socket_timeout"],
                "socket_connect_timeout": options["socket_connect_timeout"],
            }
            if sentinel_password is not None:
                sentinel_kwargs["password"] = sentinel_password
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                hosts, sentinel_kwargs=sentinel_kwargs, **options, **auth
            )
            master = sentinel.master_for(service, db=db)
            _pack_fast(master.connection_pool)
            return cls(master, clock=clock, sentinel=sentinel, topic_ttl=topic_ttl)
        # A blocking pool makes a burst wait for a free connection instead of failing with
        # "Too many connections" (the default pool raises at its limit).
        pool = BlockingConnectionPool.from_url(
            url, max_connections=_MAX_CONNECTIONS, timeout=_POOL_WAIT, **options
        )
        _pack_fast(pool)
        return cls(Redis.from_pool(pool), clock=clock, topic_ttl=topic_ttl)

    @property
    def client(self) -> Redis:
        """The underlying redis-py client (for readiness details and tests)."""
        return self._redis

    @contextmanager
    def _wrap(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as err:
            # The error text names host and port at most; redis-py never puts the password in it.
            msg = f"session store unavailable ({what}): {type(err).__name__}: {err}"
            raise StoreUnavailable(msg) from err

    async def _call(self, what: str, queue: Queue) -> Any:
        with self._wrap(what):
            return await self._pipe.run(queue)

    def _script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Queue:
        return self._pipe.script(script, keys, args)

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

    async def delete(self, key: ConvKey) -> None:
        """Forget the session."""
        name = conv_key(key)
        self._prefetched.pop(name, None)
        await self._call("delete", lambda p: p.delete(name))

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

    def lock(
        self,
        key: ConvKey,
        *,
        timeout: float = 30.0,
        wait: float = 20.0,
        ticket: str | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Hold the conversation lock (SET NX PX with a random token; owner-only release)."""
        return self._lock(_lock_key(key), conv_key(key), _check_lease(timeout), wait, ticket)

    @asynccontextmanager
    async def _lock(
        self, name: str, conv: str, expire: float, wait: float, ticket: str | None
    ) -> AsyncIterator[None]:
        hold = await self._acquire(name, conv, expire, wait, ticket)
        try:
            yield
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

    def _token(self, journalled: str | None) -> str:
        """A new place's token: this process, a random part, and the event whose journal entry
        may keep it (``journalled``; none for an agent's message or a second try)."""
        kept = "n" if journalled is None else f"j{journalled}"
        return f"{self._process}.{secrets.token_hex(8)}.{kept}"

    def _keep_alive(self, lease: float) -> None:
        """Keep this process's key alive (from its first turn on) every third of a lease."""
        self._alive_lease = max(self._alive_lease, lease)
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        name = self._alive_key
        while True:
            px = _ms(self._alive_lease)
            # Redis down: every process's key lapses alike; tried again shortly.
            with contextlib.suppress(StoreError):
                await self._call("alive", _set_px(name, px))
            await asyncio.sleep(self._alive_lease / 3)

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

    async def _extend(self, holds: list[_Hold]) -> list[bool]:
        args: list[str | int] = []
        names: list[str] = []
        for hold in holds:
            args += [hold.token, _ms(hold.lease)]
            names += [hold.name, _queue_of(hold.name)]
        kept = await self._call("renew", self._script(self._renew, names, args))
        return [bool(k) for k in kept]

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

    async def drop_topic(self, thread_id: int) -> None:
        """Forget the topic."""
        name = redis_key("topic", str(thread_id))
        await self._call("drop_topic", lambda p: p.delete(name))

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

    async def ping(self) -> bool:
        """True when Redis answers PING within a short deadline."""
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), _PING_DEADLINE))
        except (RedisError, OSError, TimeoutError):
            return False

    async def aclose(self) -> None:
        """Close the client (and the sentinel connections when this store made them)."""
        await self._leases.aclose()
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            # What this process leaves in lines is another's to take over at once.
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(self._alive_key)
        await self._pipe.aclose()
        await self._redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()


def make_store(
    redis_url: str | None, *, clock: Clock = time.time, topic_ttl: int = DEFAULT_TOPIC_TTL
) -> SessionStore:
    """The Redis store for a URL, or the in-memory store (with a warning) when there is none."""
    if not redis_url:
        log.warning(
            "REDIS_URL is not set: sessions live in memory, are lost on restart "
            "and are not shared between processes"
        )
        return MemoryStore(clock=clock, topic_ttl=topic_ttl)
    return RedisStore.from_url(redis_url, clock=clock, topic_ttl=topic_ttl)
