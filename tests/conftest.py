"""Shared fixtures: a clean environment, so a developer's .env or shell never leaks into tests."""

from __future__ import annotations

import os

import pytest

from bot.channels.whatsapp.settings import WhatsAppSettings
from bot.settings import BotSettings, TelegramSettings
from integrations.wisphub.settings import WispHubSettings


def setting_names() -> frozenset[str]:
    """Every environment name the settings classes read."""
    names: set[str] = set()
    for cls in (BotSettings, WispHubSettings, TelegramSettings, WhatsAppSettings):
        prefix = str(cls.model_config.get("env_prefix", ""))
        names.update((prefix + field).upper() for field in cls.model_fields)
    return frozenset(names)


_OURS = setting_names()

# The Redis the tests use: database 15 of the local server unless TEST_REDIS_URL says otherwise.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    """Drop every setting from the environment and run from an empty folder (no stray .env)."""
    for name in list(os.environ):
        if name.upper() in _OURS:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
