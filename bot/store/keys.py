"""The key builder: every Redis key of the service, and the small codecs of what they hold."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

import orjson

from flows.ports import Promise
from flows.types import ConvKey

log = logging.getLogger(__name__)


Clock = Callable[[], float]
KeyKind = Literal[
    "conv",
    "lock",
    "seen",
    "topic",
    "lockout",
    "rate",
    "chatlock",
    "inbox",
    "turns",
    "alive",
    "promise",
]
PREFIX = "wispbot"


def redis_key(kind: KeyKind, *parts: str) -> str:
    """Build any wispbot key: ``wispbot:{kind}:{part}:{part}...``."""
    if not parts or "" in parts:
        msg = f"a {kind} key needs non-empty parts, got {parts!r}"
        raise ValueError(msg)
    return ":".join((PREFIX, kind, *parts))


def conv_key(key: ConvKey) -> str:
    """The session key of a conversation: ``wispbot:conv:{channel}:{chat_id}``."""
    return redis_key("conv", key.channel, key.chat_id)


def promise_key(service_id: int) -> str:
    """The payment promise the bot registered for a service: ``wispbot:promise:{service_id}``."""
    return redis_key("promise", str(int(service_id)))


def _promise_value(day: date, invoices: Sequence[int]) -> str:
    return orjson.dumps({"day": day.isoformat(), "invoices": [int(i) for i in invoices]}).decode()


def _parse_promise(service_id: int, raw: str | bytes | None) -> Promise | None:
    """The stored promise, or None (an unreadable one is logged and ignored)."""
    if raw is None:
        return None
    try:
        entry = orjson.loads(raw)
        return Promise(date.fromisoformat(entry["day"]), tuple(int(i) for i in entry["invoices"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("unreadable payment promise ignored", extra={"service_id": service_id})
        return None


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


def _ms(seconds: float) -> int:
    """Milliseconds for PX (at least 1)."""
    return max(1, int(seconds * 1000))


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
