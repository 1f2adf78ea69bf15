"""The session codec: one conversation's state as the JSON stored under its key."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from bot.store.errors import SessionCorrupt
from flows.types import ConvKey

log = logging.getLogger(__name__)


SCHEMA_VERSION = 1

_T = TypeVar("_T")


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


def _parse_or_skip(key: ConvKey, raw: str | bytes) -> Session | None:
    try:
        return Session.from_json(raw)
    except SessionCorrupt as err:
        log.warning("corrupt session skipped", extra={"conv": str(key), "error": str(err)})
        return None
