"""The webhook fixture of the WhatsApp channel's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from whatsapp_kit import Hook, hook_with, serve

from flows.types import Inbound


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    received: list[Inbound] = []
    webhook, reads = hook_with(received)
    async with serve(webhook) as client:
        yield Hook(client, webhook, received, reads)
