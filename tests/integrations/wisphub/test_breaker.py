"""The WispHub circuit breaker: fail fast after repeated outages, probe, close again."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from integrations.wisphub.breaker import CircuitBreaker, CircuitOpen
from integrations.wisphub.client import WispHubClient
from integrations.wisphub.errors import WispHubRejected, WispHubUnavailable
from integrations.wisphub.settings import WispHubSettings

BASE = "https://isp.example/api/"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_then_probes_once_and_closes() -> None:
    clock = Clock()
    changes: list[str] = []
    breaker = CircuitBreaker(3, 30.0, clock=clock, on_change=changes.append)
    for _ in range(3):
        breaker.before()
        breaker.failure()
    with pytest.raises(CircuitOpen):
        breaker.before()
    clock.now += 31
    breaker.before()  # the probe goes out
    with pytest.raises(CircuitOpen):
        breaker.before()  # others still fail fast while it is in flight
    breaker.success()
    breaker.before()
    assert changes == ["open", "half_open", "closed"]


def test_a_failed_probe_opens_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.before()
    breaker.failure()
    clock.now += 11
    breaker.before()
    breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        breaker.before()


@respx.mock
async def test_client_fails_fast_while_wisphub_is_down_and_recovers() -> None:
    settings = WispHubSettings(api_url=BASE, api_key="k", retries=0, breaker_failures=2)
    route = respx.get(f"{BASE}clientes/").mock(return_value=httpx.Response(500))
    async with httpx.AsyncClient() as http:
        client = WispHubClient(http, settings, tz=ZoneInfo("UTC"))
        for doc in ("111111", "222222"):
            with pytest.raises(WispHubUnavailable):
                await client.find_by_document(doc)
        calls = route.call_count
        with pytest.raises(CircuitOpen):
            await client.find_by_document("333333")
        assert route.call_count == calls  # no request while open
        client.breaker._opened_at -= settings.breaker_reset + 1  # time passes
        route.mock(return_value=httpx.Response(200, json={"count": 0, "results": []}))
        assert await client.find_by_document("444444") == []
        assert client.breaker.state == "closed"


@respx.mock
async def test_a_rejection_is_an_answer_not_an_outage() -> None:
    settings = WispHubSettings(api_url=BASE, api_key="k", retries=0, breaker_failures=1)
    respx.get(f"{BASE}clientes/").mock(return_value=httpx.Response(400, json={"detail": "no"}))
    async with httpx.AsyncClient() as http:
        client = WispHubClient(http, settings, tz=ZoneInfo("UTC"))
        for doc in ("111111", "222222"):
            with pytest.raises(WispHubRejected):
                await client.find_by_document(doc)
        assert client.breaker.state == "closed"
