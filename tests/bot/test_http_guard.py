"""The HTTP server's guards, in process: header and body timeouts, the connection cap, and
unparsable requests logged as one warning line (the e2e suite drives the real service)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.http_guard import GuardedSite, body_within, quiet_bad_requests, server_options

TIMEOUT = 0.5


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application(middlewares=[body_within(TIMEOUT)])
    app.router.add_route("*", "/", echo)
    runner = web.AppRunner(app, access_log=None, **server_options(TIMEOUT))
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, max_connections=3)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def exchange(port: int, data: bytes, *, wait: float = 5) -> bytes:
    """Send ``data``, then read until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        async with asyncio.timeout(wait):
            return await reader.read()
    finally:
        writer.close()


async def test_a_request_head_never_finished_is_cut_off(port: int) -> None:
    assert await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n") == b""


async def test_a_body_never_finished_is_answered_408(port: int) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345"
    assert (await exchange(port, head)).startswith(b"HTTP/1.1 408")


async def test_a_whole_request_is_served(port: int) -> None:
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    answer = await exchange(port, request)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"hi")


async def test_connections_beyond_the_cap_get_503(port: int) -> None:
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        assert (await exchange(port, b"")).startswith(b"HTTP/1.1 503")
    finally:
        for _, writer in held:
            writer.close()


async def test_an_unparsable_request_is_one_warning_without_traceback(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    quiet_bad_requests()
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"s3cr3t" * 3000 + b"\r\n\r\n"
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        assert (await exchange(port, big)).split(b" ")[1].startswith(b"4")
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)]
    assert records[0].getMessage().startswith("http request refused: ")
    assert "s3cr3t" not in records[0].getMessage()
