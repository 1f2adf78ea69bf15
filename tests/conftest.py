"""Shared fixtures: a clean environment, so a developer's .env or shell never leaks into tests."""

from __future__ import annotations

import os

import pytest

_OURS = (
    "WISPHUB_",
    "TELEGRAM_",
    "WHATSAPP_",
    "REDIS_URL",
    "HTTP_",
    "BOT_",
    "ISP_",
    "TIMEZONE",
    "BUSINESS_",
    "DEFAULT_COUNTRY",
    "LOG_LEVEL",
    "SESSION_",
    "VERIFIED_",
    "HANDOFF_",
    "PROMISE_",
)

# The Redis the tests use: database 15 of the local server unless REDIS_URL says otherwise.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    """Drop the project's variables and run from an empty folder (no stray .env is read)."""
    for name in list(os.environ):
        if name.startswith(_OURS):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
