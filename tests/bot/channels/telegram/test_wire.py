"""The lean Bot API wire (``wire.py``) through ``BotApi.post``, against a real aiohttp.web server.

Each test runs on asyncio's loop and on uvloop (the bot's), whose transports differ: see conftest.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import ClientDecodeError, TelegramNetworkError, TelegramRetryAfter
from aiohttp import web
from pydantic import SecretStr
from yarl import URL

from bot.channels.telegram.channel import make_bot
from bot.channels.telegram.sender import BotApi
from bot.channels.telegram.wire import Wire, WireError

TOKEN = "123456:SECRET-token_value"
HELLO = {"chat_id": 7, "text": "hola"}


def ok(text: str = "hola") -> dict[str, Any]:
    return {"ok": True, "result": {"message_id": 1, "chat": {"id": 7}, "text": text}}


@dataclass
class Server:
    url: str
    mode: str = "ok"
    peers: set[int] = field(default_factory=set)  # client ports: one per TCP connection
    transports: list[asyncio.Transport] = field(default_factory=list)
    delay: float = 0.0
    started: asyncio.Event = field(default_factory=asyncio.Event)


SERVER = web.AppKey("server", Server)


async def _handle(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    transport = request.transport
    assert transport is not None
    server.peers.add(transport.get_extra_info("peername")[1])
    if transport not in server.transports:
        server.transports.append(transport)
    server.started.set()
    assert request.path.startswith(f"/bot{TOKEN}/")
    body = orjson.loads(await request.read())
    if server.delay:
        await asyncio.sleep(server.delay)
    mode = server.mode
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "close":
        response = web.json_response(ok(body["text"]))
        response.force_close()
        return response
    if mode == "chunked":
        stream = web.StreamResponse(headers={"Content-Type": "application/json"})
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        raw = orjson.dumps(ok(body["text"]))
        for i in range(0, len(raw), 7):
            await stream.write(raw[i : i + 7])
        await stream.write_eof()
        return stream
    if mode == "cut":
        stream = web.StreamResponse(headers={"Content-Type": "application/json"})
        stream.content_length = 500
        await stream.prepare(request)
        await stream.write(b'{"ok": true, "result": {"message_id"')
        await asyncio.sleep(0.02)
        transport.close()
        return stream
    if mode == "429":
        reply = {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 5",
            "parameters": {"retry_after": 5},
        }
        return web.json_response(reply, status=429)
    if mode == "html502":
        page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
        return web.Response(status=502, text=page, content_type="text/html")
    return web.json_response(ok(body["text"]))


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server("")
    app = web.Application()
    app[SERVER] = srv
    app.router.add_post("/{path:.*}", _handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.url = f"http://127.0.0.1:{port}"
    yield srv
    await runner.cleanup()


async def _api(url: str) -> BotApi:
    return BotApi(make_bot(SecretStr(TOKEN), url))


@pytest.fixture
async def api(server: Server) -> AsyncIterator[BotApi]:
    client = await _api(server.url)
    yield client
    await client.aclose()
    session = client.bot.session
    assert isinstance(session, AiohttpSession)
    if session._session is not None:
        await session._session.close()


def _wire(api: BotApi) -> Wire:
    wire = api._wire
    assert wire is not None
    return wire


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for localhost, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_with_a_verified_certificate(certificate: tuple[Path, Path]) -> None:
    """The real Bot API is https: the wire speaks TLS with SNI and checks the certificate."""
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    app = web.Application()
    app[SERVER] = Server("")
    app.router.add_post("/{path:.*}", _handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0, ssl_context=served)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    origin = URL(f"https://localhost:{port}")
    head = Wire(origin).head_of(origin / f"bot{TOKEN}" / "sendMessage")
    trusting = ssl.create_default_context(cafile=str(cert))
    wire, stranger = Wire(origin, tls=trusting), Wire(origin)
    try:
        status, body = await wire.post(head, orjson.dumps(HELLO), 5)
        assert (status, orjson.loads(body)) == (200, ok("hola"))
        with pytest.raises(WireError, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.post(head, orjson.dumps(HELLO), 5)  # certifi's CAs do not know it
    finally:
        await wire.aclose()
        await stranger.aclose()
        await runner.cleanup()


async def test_calls_reuse_one_kept_alive_connection(api: BotApi, server: Server) -> None:
    for i in range(50):
        result = await api.post("sendMessage", {"chat_id": 7, "text": f"m{i}"})
        assert result["text"] == f"m{i}"
    assert await api.send_text(7, "fin") == 1
    assert len(server.peers) == 1


async def test_parallel_calls_open_several_connections(api: BotApi, server: Server) -> None:
    server.delay = 0.05
    results = await asyncio.gather(*(api.post("sendMessage", HELLO) for _ in range(10)))
    assert [r["text"] for r in results] == ["hola"] * 10
    assert len(server.peers) == 10
    server.delay = 0
    await asyncio.gather(*(api.post("sendMessage", HELLO) for _ in range(10)))
    assert len(server.peers) == 10  # the idle ones were reused


async def test_no_more_than_the_limit_are_open(server: Server) -> None:
    server.delay = 0.02
    wire = Wire(URL(server.url), limit=2)
    url = URL(server.url) / f"bot{TOKEN}" / "sendMessage"
    head = wire.head_of(url)
    replies = await asyncio.gather(*(wire.post(head, orjson.dumps(HELLO), 5) for _ in range(6)))
    assert {status for status, _ in replies} == {200}
    assert len(server.peers) == 2
    assert wire.open_connections == 2
    await wire.aclose()


async def test_an_idle_connection_the_server_closed_is_not_reused(
    api: BotApi, server: Server
) -> None:
    await api.post("sendMessage", HELLO)
    for transport in server.transports:
        transport.close()
    await asyncio.sleep(0.05)  # the client sees the EOF while the connection is idle
    assert _wire(api).open_connections == 0
    assert (await api.post("sendMessage", HELLO))["text"] == "hola"
    assert len(server.peers) == 2


async def test_connection_close_is_honoured(api: BotApi, server: Server) -> None:
    server.mode = "close"
    for _ in range(3):
        await api.post("sendMessage", HELLO)
        assert _wire(api).open_connections == 0
    assert len(server.peers) == 3


async def test_a_chunked_reply_is_decoded(api: BotApi, server: Server) -> None:
    server.mode = "chunked"
    assert (await api.post("sendMessage", {"chat_id": 7, "text": "á" * 40}))["text"] == "á" * 40
    server.mode = "ok"
    await api.post("sendMessage", HELLO)
    assert len(server.peers) == 1  # the chunked reply left the connection reusable


async def test_a_reply_cut_mid_body_is_a_network_error(api: BotApi, server: Server) -> None:
    server.mode = "cut"
    with pytest.raises(TelegramNetworkError) as info:
        await api.post("sendMessage", HELLO)
    assert TOKEN not in str(info.value)
    server.mode = "ok"
    assert (await api.post("sendMessage", HELLO))["text"] == "hola"


async def test_a_server_that_never_answers_times_out(api: BotApi, server: Server) -> None:
    server.mode = "hang"
    started = time.monotonic()
    with pytest.raises(TelegramNetworkError, match="Request timeout error"):
        await api.post("sendMessage", HELLO, seconds=0.3)
    assert 0.25 <= time.monotonic() - started < 1.5
    server.mode = "ok"
    assert (await api.post("sendMessage", HELLO))["text"] == "hola"


async def test_a_refused_connection_is_a_network_error_without_the_token() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens here once the socket closes
    api = await _api(f"http://127.0.0.1:{port}")
    with pytest.raises(TelegramNetworkError) as info:
        await api.post("sendMessage", HELLO)
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value.__cause__)
    await api.aclose()


async def test_a_429_is_retry_after(api: BotApi, server: Server) -> None:
    server.mode = "429"
    with pytest.raises(TelegramRetryAfter) as info:
        await api.post("sendMessage", HELLO)
    assert info.value.retry_after == 5


async def test_an_html_502_is_a_decode_error_as_before(api: BotApi, server: Server) -> None:
    server.mode = "html502"
    with pytest.raises(ClientDecodeError, match="Failed to decode object"):
        await api.post("sendMessage", HELLO)
    server.mode = "ok"
    await api.post("sendMessage", HELLO)
    assert len(server.peers) == 1  # a whole reply, even an error, keeps the connection


async def test_a_call_cancelled_mid_read_closes_its_connection(api: BotApi, server: Server) -> None:
    await api.post("sendMessage", HELLO)
    server.mode = "hang"
    server.started.clear()
    call = asyncio.create_task(api.post("sendMessage", HELLO))
    await server.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert _wire(api).open_connections == 0
    server.mode = "ok"
    assert (await api.post("sendMessage", HELLO))["text"] == "hola"
    assert len(server.peers) == 2


async def test_aclose_closes_every_connection(api: BotApi, server: Server) -> None:
    server.delay = 0.02
    await asyncio.gather(*(api.post("sendMessage", HELLO) for _ in range(4)))
    wire = _wire(api)
    assert wire.open_connections == 4
    await api.aclose()
    await asyncio.sleep(0.05)
    assert wire.open_connections == 0
    assert all(t.is_closing() for t in server.transports)
    server.delay = 0
    assert (await api.post("sendMessage", HELLO))["text"] == "hola"  # a new wire after close


# ---- replies only a hand-made server sends ------------------------------------------------------


async def _raw(reply: bytes) -> tuple[str, asyncio.Server]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", srv


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"HTTP/1.0 200 OK\r\n\r\n" + orjson.dumps(ok("eof")), "eof"),  # body read to close
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", None),
        (b"garbage\r\n\r\n", WireError),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", WireError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", WireError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", WireError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", WireError),  # closed early
    ],
)
async def test_hand_made_replies(reply: bytes, expected: str | type[Exception] | None) -> None:
    url, srv = await _raw(reply)
    wire = Wire(URL(url))
    head = wire.head_of(URL(url) / f"bot{TOKEN}" / "sendMessage")
    try:
        if isinstance(expected, type):
            with pytest.raises(expected):
                await wire.post(head, b"{}", 2)
        else:
            status, body = await wire.post(head, b"{}", 2)
            assert status == 200
            assert orjson.loads(body).get("result", {}).get("text") == expected
        await asyncio.sleep(0.05)
        assert wire.open_connections == 0  # none of these leaves a reusable connection
    finally:
        await wire.aclose()
        srv.close()
        await srv.wait_closed()
