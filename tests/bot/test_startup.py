"""The start-up look at WispHub: each answer an operator must act on is one line, no secret."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from bot.settings import WispHubSettings
from bot.startup import check_wisphub
from integrations.wisphub.client import WispHubClient

KEY = "tenant-api-key-9c1e77"


def client(response: httpx.Response) -> WispHubClient:
    settings = WispHubSettings(api_url="https://isp.example/api/", api_key=SecretStr(KEY))
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: response))
    return WispHubClient(http, settings, tz=ZoneInfo("America/Bogota"))


@pytest.mark.parametrize(
    ("response", "level", "told"),
    [
        (
            httpx.Response(403, json={"detail": "Credenciales inválidas."}),
            logging.ERROR,
            "WispHub refused the API key (WISPHUB_API_KEY)",
        ),
        (
            httpx.Response(401, json={"detail": "Invalid token."}),
            logging.ERROR,
            "WispHub refused the API key (WISPHUB_API_KEY)",
        ),
        (
            httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"}),
            logging.ERROR,
            "WISPHUB_API_URL",
        ),
        (httpx.Response(503, text="busy"), logging.WARNING, "WispHub did not answer at start-up"),
    ],
)
async def test_a_problem_is_one_line_of_its_own_without_the_key(
    caplog: pytest.LogCaptureFixture, response: httpx.Response, level: int, told: str
) -> None:
    caplog.set_level(logging.INFO, logger="bot.startup")
    wisphub = client(response)
    try:
        assert not await check_wisphub(wisphub)
    finally:
        await wisphub.aclose()
    lines = [r for r in caplog.records if r.name == "bot.startup"]
    assert len(lines) == 1
    assert lines[0].levelno == level
    assert told in lines[0].getMessage()
    assert lines[0].exc_info is None  # a line for the operator, not a traceback
    assert KEY not in caplog.text


async def test_a_key_that_works_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.startup")
    wisphub = client(httpx.Response(200, json={"count": 0, "results": []}))
    try:
        assert await check_wisphub(wisphub)
    finally:
        await wisphub.aclose()
    assert not [r for r in caplog.records if r.name == "bot.startup"]
