"""Fixtures for the runtime tests: the fake Telegram Bot API served on loopback, a real aiogram Bot.

``tests/fakes`` goes on ``sys.path`` here so tests import the fake as a plain module:
``from telegram_api import FakeTelegram`` (see that module's docstring).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from pydantic import SecretStr

from bot.channels.telegram.channel import TelegramChannel, make_bot

_FAKES = str(Path(__file__).resolve().parents[1] / "fakes")
if _FAKES not in sys.path:
    sys.path.insert(0, _FAKES)

from telegram_api import FakeTelegram, running_fake_telegram  # noqa: E402


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    """A fresh fake Bot API on a free loopback port."""
    async with running_fake_telegram() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    """aiogram's real client pointed at the fake."""
    client = make_bot(SecretStr(fake.token), fake.base_url)
    yield client
    session = client.session
    assert isinstance(session, AiohttpSession)
    # Close the aiohttp session directly: AiohttpSession.close() also waits 250 ms for TLS
    # shutdown, which plain-HTTP loopback does not need and every test would pay for.
    if session._session is not None:
        await session._session.close()


@pytest.fixture
async def channel(bot: Bot, fake: FakeTelegram) -> AsyncIterator[TelegramChannel]:
    """The channel with pacing off and quick backoff, so tests measure behaviour, not waits."""
    tg = TelegramChannel(
        bot,
        agents_chat_id=fake.agents_chat_id,
        per_chat_interval=0,
        global_rate=0,
        group_per_minute=0,
        retry_backoff=0.01,
    )
    yield tg
    await tg.aclose()
