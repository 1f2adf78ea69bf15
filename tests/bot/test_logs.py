"""Structured logs: one JSON object a line, extra fields kept, secrets masked."""

from __future__ import annotations

import json
import logging

from bot.logs import JsonFormatter


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("bot.engine", logging.WARNING, __file__, 1, msg, (), None)
    for name, value in extra.items():
        setattr(rec, name, value)
    return rec


def test_a_line_is_json_with_the_conversation_key() -> None:
    line = JsonFormatter().format(record("flow step failed", conv="telegram:1001", attempt=2))
    data = json.loads(line)
    assert data["msg"] == "flow step failed"
    assert data["level"] == "warning"
    assert data["logger"] == "bot.engine"
    assert data["conv"] == "telegram:1001"
    assert data["attempt"] == 2


def test_secrets_in_messages_and_fields_are_masked() -> None:
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    line = JsonFormatter().format(
        record(f"GET https://api.telegram.org/bot{token}/getMe", url=f"bot{token}")
    )
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in line
    assert json.loads(line)["msg"].startswith("GET https://api.telegram.org/bot")
