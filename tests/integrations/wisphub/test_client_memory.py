"""The WispHub client's per-service memory is bounded (issue 10, item 13)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from integrations.wisphub import client as client_module
from integrations.wisphub.client import WispHubClient
from integrations.wisphub.settings import WispHubSettings

CACHE = 4  # look-ups kept per kind in this test (the client's default is thousands)


def answer(request: httpx.Request) -> httpx.Response:
    """One client for any document: service id = the document."""
    document = request.url.params.get("cedula", "0")
    record: dict[str, Any] = {
        "id_servicio": int(document),
        "usuario": f"u{document}@isp",
        "nombre": "Ana María Ruiz",
        "cedula": document,
        "estado": "Activo",
    }
    body = {"count": 1, "next": None, "previous": None, "results": [record]}
    return httpx.Response(200, json=body)


@pytest.fixture
async def wh(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WispHubClient]:
    monkeypatch.setattr(client_module, "_CACHE_SIZE", CACHE)
    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(transport=transport) as http:
        settings = WispHubSettings(api_url="https://isp.example/api/", api_key="k-123")
        client = WispHubClient(http, settings, tz=ZoneInfo("America/Bogota"))
        yield client
        await client.aclose()


async def test_the_service_key_map_is_bounded(wh: WispHubClient) -> None:
    """Every customer looked up leaves a note of which look-ups returned their service; a
    thousand customers leave at most twice the look-up cache's size of them."""
    for document in range(1000, 2000):
        [found] = await wh.find_by_document(str(document))
        assert found.service_id == document

    assert len(wh._keys_by_service) <= 2 * CACHE


async def test_a_write_still_drops_a_recent_look_up(wh: WispHubClient) -> None:
    for document in range(1000, 1010):
        await wh.find_by_document(str(document))
    sent: list[str] = []
    wh.observer = lambda endpoint, outcome, seconds: sent.append(endpoint)
    wh.invalidate(service_id=1009)  # a ticket for the latest customer

    await wh.find_by_document("1009")
    assert sent == ["GET /clientes/"]  # dropped: asked again
    await wh.find_by_document("1008")
    assert sent == ["GET /clientes/"]  # still cached
