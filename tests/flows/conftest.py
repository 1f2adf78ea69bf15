"""Fixtures of the flow tests: the notices' engines (tests/fakes/notices_kit.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from notices_kit import Bot, make_bot


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    async for b in make_bot():
        yield b


@pytest.fixture
async def quiet_bot() -> AsyncIterator[Bot]:
    """Notices disabled (NOTIFY_ENABLED=false): no subscriptions port."""
    async for b in make_bot(notices=False):
        yield b
