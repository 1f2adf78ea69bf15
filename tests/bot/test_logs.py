"""Structured logs: one JSON object a line, extra fields kept, secrets masked."""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
from pathlib import Path

import pytest

from bot.logs import JsonFormatter, log_key, pseudonym, setup_logging
from flows.types import ConvKey

ROOT = Path(__file__).resolve().parents[2]


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
    assert data["conv"] == pseudonym("telegram:1001")
    assert data["attempt"] == 2


NUMBER = "573001112233"
KEY = ConvKey("whatsapp", NUMBER)


def test_the_conversation_is_a_keyed_pseudonym_never_the_number() -> None:
    ours, theirs = log_key("our-wisphub-key"), log_key("another-isp")
    name = pseudonym(KEY, ours)
    assert re.fullmatch(r"whatsapp#[0-9a-f]{12}", name)
    assert pseudonym(str(KEY), ours) == name  # the key or its text: the same pseudonym
    assert pseudonym(KEY, theirs) != name  # another deployment (secret): another pseudonym
    assert pseudonym(ConvKey("whatsapp", "573001112234"), ours) != name
    data = json.loads(JsonFormatter(ours).format(record("sent", conv=KEY)))
    assert data["conv"] == name


def test_a_raw_key_anywhere_in_a_line_becomes_its_pseudonym() -> None:
    """Exceptions and messages built with ``str(key)`` (or a Redis key) cannot leak it."""
    key = log_key("secret")
    try:
        raise RuntimeError(f"{KEY}: the customer has not written for 24 hours")
    except RuntimeError:
        rec = record(f"reply to {KEY} not delivered", detail=f"wispbot:conv:{KEY}")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter(key).format(rec)
    assert NUMBER not in line
    data = json.loads(line)
    name = pseudonym(KEY, key)
    assert data["msg"] == f"reply to {name} not delivered"
    assert data["detail"] == f"wispbot:conv:{name}"
    assert f"{name}: the customer has not written" in data["exc"]


def test_a_business_scoped_user_id_key_anywhere_in_a_line_becomes_its_pseudonym() -> None:
    """A WhatsApp user without a visible number is keyed by a BSUID: the same rules apply."""
    bsuid = ConvKey("whatsapp", "US.13491208655302741918")
    line = JsonFormatter().format(record(f"reply to {bsuid} ({bsuid!r}) not delivered"))
    assert "13491208655302741918" not in line
    assert (
        json.loads(line)["msg"] == f"reply to {pseudonym(bsuid)} ({pseudonym(bsuid)}) not delivered"
    )


def test_a_whatsapp_message_id_which_carries_the_number_is_a_pseudonym_too() -> None:
    # Meta's ids are base64 of a record holding the customer's number ("573001112233" here).
    wamid = "wamid.HBgMNTczMDAxMTEyMjMzFQIAEhgUM0VCMEQ5RjY0RTg5NEI1OEQ3NjQA"
    line = JsonFormatter().format(record(f"mark-read failed for {wamid}", wamid=wamid))
    assert "HBgMNTczMDAxMTEyMjMz" not in line
    data = json.loads(line)
    assert re.fullmatch(r"wamid#[0-9a-f]{12}", data["wamid"])
    assert data["msg"] == f"mark-read failed for {data['wamid']}"  # the same message, the same id


def test_a_bare_number_in_free_text_is_masked_but_its_last_4_digits() -> None:
    text = f"no client with telefono 3001112233 ({KEY!r}); ticket 4711, update 123456789"
    data = json.loads(JsonFormatter().format(record(text, number_of_tries=3)))
    assert data["msg"] == (
        f"no client with telefono ******2233 ({pseudonym(KEY)}); ticket 4711, update *****6789"
    )


def test_secrets_in_messages_and_fields_are_masked() -> None:
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    line = JsonFormatter().format(
        record(f"GET https://api.telegram.org/bot{token}/getMe", url=f"bot{token}")
    )
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in line
    assert json.loads(line)["msg"].startswith("GET https://api.telegram.org/bot")


# ---- every ``extra`` key the code logs with ----------------------------------------------------

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


def test_chats_are_logged_under_conv_only() -> None:
    """The pseudonym applies to ``conv``: a chat id or a number logged under another name would
    be written as it is."""
    misnamed = {"chat", "chat_id", "wa_id", "to", "recipient", "sender", "number"}
    keys = extra_keys()
    assert not {k: sorted(keys[k]) for k in misnamed & keys.keys()}
