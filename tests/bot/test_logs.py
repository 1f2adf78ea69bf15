"""Structured logs: one JSON object a line, extra fields kept, secrets masked."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest

from bot.logs import JsonFormatter, setup_logging


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


# ---- every ``extra`` key the code logs with ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("bot", "flows", "integrations")
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def _dict_keys(node: ast.expr) -> set[str] | None:
    if not isinstance(node, ast.Dict):
        return None
    keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return keys if len(keys) == len(node.keys) else None


def extra_keys() -> dict[str, set[str]]:
    """Every key of an ``extra={...}`` passed to a logging call in the sources, with where it is used.

    An ``extra`` given as a name is followed to that name's dict literal in the same module; any
    other expression fails the scan, so no call site escapes it."""
    found: dict[str, set[str]] = {}
    unresolved: list[str] = []
    for path in sorted(p for src in SOURCES for p in (ROOT / src).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        named: dict[str, set[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and (keys := _dict_keys(node.value)) is not None:
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        named.setdefault(target.id, set()).update(keys)
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_METHODS
            ):
                continue
            for keyword in node.keywords:
                if keyword.arg != "extra":
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                value = keyword.value
                keys = _dict_keys(value)
                if keys is None and isinstance(value, ast.Name):
                    keys = named.get(value.id)
                if keys is None:
                    unresolved.append(where)
                    continue
                for key in keys:
                    found.setdefault(key, set()).add(where)
    assert not unresolved, f"extra= not a dict literal (or a name bound to one): {unresolved}"
    return found


def test_every_extra_key_the_code_uses_can_be_logged(capsys: pytest.CaptureFixture[str]) -> None:
    """A key that a LogRecord already has (``thread``, ``name``, ``msg``...) makes ``logging``
    raise KeyError at the call site: the code path crashes instead of logging."""
    keys = extra_keys()
    assert {"conv", "error", "count"} <= keys.keys(), "the scan found too little"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("DEBUG")
        probe = logging.getLogger("bot.probe")
        for key, where in sorted(keys.items()):
            try:
                probe.warning("probe", extra={key: 7})
            except KeyError as err:
                pytest.fail(f"extra key {key!r} (used at {sorted(where)}) cannot be logged: {err}")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == len(keys)
    for key, line in zip(sorted(keys), lines, strict=True):
        assert key in line, (key, line)
