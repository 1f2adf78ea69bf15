"""The WhatsApp channel's per-customer memory is bounded (issue 10, item 13)."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from bot.channels.whatsapp.channel import WINDOW_SECONDS, WhatsAppChannel
from bot.channels.whatsapp.memory import LocalMemory
from bot.channels.whatsapp.settings import WhatsAppSettings

KEPT = 3


@pytest.fixture
async def channel() -> WhatsAppChannel:
    """A channel that remembers the windows of three customers at most (never sends)."""
    settings = WhatsAppSettings(
        access_token=SecretStr("EAAG-memory-test"),
        phone_number_id="106540352242922",
        app_secret=SecretStr("app-secret"),
        verify_token=SecretStr("verify"),
        api_url="http://127.0.0.1:9/v21.0",
    )
    return WhatsAppChannel(settings, memory=LocalMemory(windows_kept=KEPT, paged_kept=KEPT))


async def test_the_24_hour_windows_kept_are_bounded(channel: WhatsAppChannel) -> None:
    """Customers by the thousand do not grow the process: the least recently seen customer is
    forgotten (their window is unknown again, and Graph decides), the recent ones are kept."""
    now = time.time()
    await channel.note_inbound("570000000000", now - WINDOW_SECONDS - 60)  # known closed
    assert await channel.window_known_closed("570000000000")
    for n in range(1, 2000):
        await channel.note_inbound(f"57{n:010d}", now)

    assert isinstance(channel.memory, LocalMemory)
    assert len(channel.memory.windows) == KEPT
    assert not await channel.window_known_closed("570000000000")  # forgotten: not known any more
    assert await channel.window_open(f"57{1999:010d}")  # the latest customers are remembered


async def test_a_customer_in_use_is_not_the_one_forgotten(channel: WhatsAppChannel) -> None:
    now = time.time()
    await channel.note_inbound("571", now - WINDOW_SECONDS - 60)
    await channel.note_inbound("572", now)
    await channel.note_inbound("573", now)
    assert await channel.window_known_closed("571")  # looked at: the most recently used now
    await channel.note_inbound("574", now)

    assert await channel.window_known_closed("571")
    assert not await channel.window_open("572")  # the least recently used went instead


async def test_paged_lists_kept_are_bounded(channel: WhatsAppChannel) -> None:
    for n in range(100):
        await channel.memory.keep_pages(f"57{n}", ("body", []))
    assert isinstance(channel.memory, LocalMemory)
    assert len(channel.memory.paged) == KEPT
