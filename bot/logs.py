"""Structured JSON logs, one object a line, with the conversation key and no secrets.

A conversation is named in logs by a pseudonym, never by its chat id (a WhatsApp chat id is the
customer's phone number): ``whatsapp#3f9a1c2b7d0e``, the first 12 hex digits of an HMAC-SHA256
of ``channel:chat_id`` under a per-deployment key (``log_key``). The formatter applies it to
every record, so no call site can log a raw key: the ``conv`` field is always turned into its
pseudonym, and a raw key (``whatsapp:573001112233``, or a ``ConvKey`` repr) anywhere in a
message, a text field or a traceback is replaced by its pseudonym too, so is a WhatsApp message
id (``wamid.…`` carries the number in base64); any other run of 9 or more digits there (a bare
number) is masked but its last 4. ``python -m bot logkey CHANNEL CHAT_ID``
prints a customer's pseudonym, to find their lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# Belt and braces: tokens that look like Telegram bot tokens or bearer/api keys are masked even
# if some library put them in a message.
_SECRETS = [
    re.compile(r"(?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,}"),
    re.compile(r"(?i)(api-key|bearer)\s+[A-Za-z0-9._-]{8,}"),
    re.compile(r"(?i)(password[a-z_]*)[\"']?\s*[:=]\s*[\"']?[^\s,\"'}]+"),
]


# In every text (messages, fields, tracebacks), in one pass: a conversation key as
# ``str(ConvKey)`` or its repr writes it (console keys name no person), which becomes its
# pseudonym; a WhatsApp message id, which carries the customer's number (base64), becomes one of
# its own; any other run of 9+ digits (a bare phone number, a document) is masked but its last 4.
_IDENTIFIERS = re.compile(
    r"(?P<conv>\b(?:telegram|whatsapp):(?:-?\d+|[A-Z]{2}(?:\.ENT)?\.\w+)\b)"
    r"|ConvKey\(channel='(?P<channel>telegram|whatsapp)', "
    r"chat_id='(?P<chat>-?\d+|[A-Z]{2}(?:\.ENT)?\.\w+)'\)"
    r"|(?P<wamid>\bwamid\.[\w+/=-]+)"
    r"|(?<![\w#])(?P<digits>\d{5,})(?P<last>\d{4})(?!\w)"
)
_CONV_FIELDS = frozenset({"conv"})
# Without a secret to derive it from (the console, tests): pseudonyms are still no numbers.
DEFAULT_LOG_KEY = hashlib.sha256(b"wispbot log pseudonyms").digest()


def log_key(secret: str | None) -> bytes:
    """The deployment's pseudonym key, derived from a secret setting (``LOG_KEY``, else
    ``WISPHUB_API_KEY``), so that nobody without the secret can tell a number's pseudonym."""
    if not secret:
        return DEFAULT_LOG_KEY
    return hmac.new(DEFAULT_LOG_KEY, secret.encode(), hashlib.sha256).digest()


def pseudonym(conv: object, key: bytes = DEFAULT_LOG_KEY) -> str:
    """``channel#<12 hex digits>`` for a conversation key (``ConvKey`` or ``channel:chat_id``):
    stable for one key, and not reversible without it."""
    text = str(conv)
    channel, sep, _ = text.partition(":")
    digest = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:12]
    if text.startswith("wamid."):  # a WhatsApp message id (see _IDENTIFIERS)
        return f"wamid#{digest}"
    return f"{channel}#{digest}" if sep and channel.isalpha() else f"conv#{digest}"


def scrub(text: str) -> str:
    """Mask anything shaped like a secret."""
    text = _SECRETS[0].sub("<token>", text)
    text = _SECRETS[1].sub(lambda m: f"{m[1]} <secret>", text)
    return _SECRETS[2].sub(lambda m: f"{m[1]}=<secret>", text)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields}``; conversations by pseudonym."""

    def __init__(self, key: bytes = DEFAULT_LOG_KEY) -> None:
        super().__init__()
        self._key = key

    def _clean(self, text: str) -> str:
        return _IDENTIFIERS.sub(self._hide, scrub(text))

    def _hide(self, found: re.Match[str]) -> str:
        if found["conv"]:
            return pseudonym(found["conv"], self._key)
        if found["channel"]:
            return pseudonym(f"{found['channel']}:{found['chat']}", self._key)
        if found["wamid"]:
            return pseudonym(found["wamid"], self._key)
        return "*" * len(found["digits"]) + found["last"]

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._clean(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name in _STANDARD or name.startswith("_"):
                continue
            if name in _CONV_FIELDS and value is not None:
                out[name] = pseudonym(value, self._key)
            elif isinstance(value, (int, float, bool)) or value is None:
                out[name] = value
            else:
                out[name] = self._clean(str(value))
        if record.exc_info:
            out["exc"] = self._clean(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, key: bytes = DEFAULT_LOG_KEY) -> None:
    """JSON logs to stderr at ``level``, conversations named by pseudonyms under ``key``
    (``log_key``); noisy libraries kept at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(key))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "httpx", "httpcore", "aiogram.event", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def bounded_step(
    step: Coroutine[Any, Any, None], name: str, seconds: float, done: Callable[[str], None]
) -> None:
    """One step of a stop, given ``seconds``: an overrun is logged with where every task waits."""
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        logging.getLogger("bot.service").warning(
            "stop: step given up", extra={"step": name, "seconds": seconds}
        )
        report_stuck_stop()
    else:
        done(name)


def report_stuck_stop() -> None:
    """A stop that overruns: log every task still running, where it waits (no locals)."""
    for task in asyncio.all_tasks():
        logging.getLogger("bot.service").warning(
            "stop: still waiting on a task",
            extra={"task": task.get_name(), "at": " <- ".join(reversed(_awaiting(task)))},
        )


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The chain of coroutines a task is suspended in, outermost first (file:line function),
    ending with what the innermost one awaits when that is no coroutine (a future, a sleep)."""
    where: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(where) < 40:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            where.append(type(awaited).__name__)
            break
        where.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return where[-6:]
