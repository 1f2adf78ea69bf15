"""The aiohttp transport under httpx: bodies, headers, encodings, and what each failure becomes."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import traceback
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp import web

from integrations.wisphub.transport import AiohttpTransport, _mapped

seen: list[dict[str, object]] = []


async def echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k.lower(): v for k, v in request.headers.items()}
    seen.append({"headers": headers, "body": body, "query": dict(request.query)})
    return web.json_response({"method": request.method, "length": len(body)})


async def gzipped(request: web.Request) -> web.Response:
    return web.Response(
        body=gzip.compress(json.dumps({"results": ["ñandú"]}).encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.json_response({})


async def hang_up(request: web.Request) -> web.Response:
    await request.read()
    assert request.transport is not None
    request.transport.close()  # the request arrived; the answer never does
    await asyncio.sleep(0.1)
    return web.json_response({})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/hangup", hang_up)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    seen.clear()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = httpx.AsyncClient(
        transport=AiohttpTransport(max_connections=4),
        timeout=httpx.Timeout(0.5, connect=0.5),
        headers={"User-Agent": "wispbot"},
    )
    yield client
    await client.aclose()


async def test_a_get_carries_its_query_and_headers(server: str, http: httpx.AsyncClient) -> None:
    response = await http.get(
        f"{server}/echo", params={"cedula": "1020304050", "limit": 100}, headers={"X-K": "v"}
    )
    assert response.status_code == 200
    assert response.json() == {"method": "GET", "length": 0}
    assert seen[0]["query"] == {"cedula": "1020304050", "limit": "100"}
    headers = seen[0]["headers"]
    assert isinstance(headers, dict)
    assert headers["x-k"] == "v"
    assert headers["user-agent"] == "wispbot"


async def test_a_multipart_body_arrives_whole(server: str, http: httpx.AsyncClient) -> None:
    files = {"asunto": (None, "Sin señal".encode()), "servicio": (None, b"7")}
    response = await http.post(f"{server}/echo", files=files)
    body = seen[0]["body"]
    assert isinstance(body, bytes)
    assert response.json()["length"] == len(body) > 0
    assert b'name="asunto"' in body
    assert "Sin señal".encode() in body
    headers = seen[0]["headers"]
    assert isinstance(headers, dict)
    assert str(headers["content-type"]).startswith("multipart/form-data; boundary=")


async def test_a_gzipped_answer_is_decoded(server: str, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{server}/gzip")
    assert response.json() == {"results": ["ñandú"]}


async def test_nothing_listening_is_a_connect_error(http: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/clientes/")


async def test_a_slow_answer_is_a_read_timeout(server: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await http.get(f"{server}/slow")


async def test_a_hang_up_after_the_request_is_a_read_error_not_a_connect_error(
    server: str, http: httpx.AsyncClient
) -> None:
    """The request reached the server: the client must not believe it was never sent."""
    with pytest.raises(httpx.ReadError):
        await http.post(f"{server}/hangup", files={"asunto": (None, b"x")})


async def test_closing_the_client_closes_the_session(server: str) -> None:
    transport = AiohttpTransport(max_connections=2)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(f"{server}/echo")
        session = transport._session
    assert session is not None
    assert session.closed


def test_a_failure_never_quotes_the_query() -> None:
    """The query carries document numbers: an aiohttp error quoting the URL (as InvalidURL and
    others do) reaches httpx, and a logged traceback, without them."""
    request = httpx.Request("GET", "http://wisphub.test/api/clientes/?cedula=1020304050")
    failures = [
        aiohttp.ClientError(f"failed: {request.url}"),
        aiohttp.InvalidURL(str(request.url)),
    ]
    for failure in failures:
        with pytest.raises(httpx.HTTPError) as caught, _mapped(request):
            raise failure
        shown = "".join(traceback.format_exception(caught.value))
        assert "1020304050" not in shown
        assert "wisphub.test" in shown or "invalid WispHub URL" in shown
