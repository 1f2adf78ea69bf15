"""Structured JSON logs, one object a line, with the conversation key and no secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
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


def scrub(text: str) -> str:
    """Mask anything shaped like a secret."""
    text = _SECRETS[0].sub("<token>", text)
    text = _SECRETS[1].sub(lambda m: f"{m[1]} <secret>", text)
    return _SECRETS[2].sub(lambda m: f"{m[1]}=<secret>", text)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields}``."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                out[name] = (
                    value
                    if isinstance(value, (int, float, bool)) or value is None
                    else scrub(str(value))
                )
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str) -> None:
    """JSON logs to stderr at ``level``; noisy libraries kept at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "httpx", "httpcore", "aiogram.event", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
