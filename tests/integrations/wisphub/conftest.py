"""Fixtures for the WispHub client's tests: a respx router on the fake base URL and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from wisphub_respx import BASE, TZ, settings

from integrations.wisphub.client import WispHubClient


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as r:
        yield r


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., WispHubClient]]:
    made: list[WispHubClient] = []
    async with httpx.AsyncClient() as http:

        def factory(**over: Any) -> WispHubClient:
            c = WispHubClient(http, settings(**over), tz=TZ)
            c.backoff_base = 0.001
            c.ping_poll_interval = 0.001
            c.reconcile_interval = 0.001
            c.ping_poll_cap = 0.005
            made.append(c)
            return c

        yield factory
        for c in made:
            await c.aclose()


@pytest.fixture
def wh(make: Callable[..., WispHubClient]) -> WispHubClient:
    return make()
