"""The start-up look at WispHub: each answer an operator must act on is one line, no secret."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from bot import startup
from bot.startup import check_wisphub
from integrations.wisphub.client import WispHubClient
from integrations.wisphub.settings import WispHubSettings

KEY = "tenant-api-key-9c1e77"


def client(answer: httpx.Response | Callable[[httpx.Request], Any]) -> WispHubClient:
    """A client of a WispHub that gives this answer (or runs this handler) to every request."""
    handler = answer if callable(answer) else (lambda request: answer)
    settings = WispHubSettings(api_url="https://isp.example/api/", api_key=SecretStr(KEY))
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
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
    caplog.set_level(logging.INFO)
    wisphub = client(response)
    try:
        assert not await check_wisphub(wisphub)
    finally:
        await wisphub.aclose()
    # One line names the problem, whichever module says it (a refused key: the client's own).
    lines = [r for r in caplog.records if told in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
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


async def test_a_wisphub_that_never_answers_delays_start_up_boundedly(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(startup, "PROBE_SECONDS", 0.2)
    never = asyncio.Event()

    async def silent(request: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    wisphub = client(silent)
    caplog.set_level(logging.INFO, logger="bot.startup")
    try:
        assert not await startup.check_wisphub(wisphub)
    finally:
        await wisphub.aclose()
    [line] = [r for r in caplog.records if r.name == "bot.startup"]
    assert line.levelno == logging.WARNING
    assert "WispHub did not answer at start-up" in line.getMessage()
