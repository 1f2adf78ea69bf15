"""A lean keep-alive HTTP/1.1 client for the Bot API's JSON POSTs (``BotApi.post``).

Hand-written because the send path is the bot's biggest single block of CPU: aiohttp's client is
general purpose (session, request and response objects, connector, payloads, timers, cookie jar,
streams) and costs about 165 µs a call (``session.post`` + ``read`` to a local server, measured;
tuning the session gained nothing). This path needs much less: one origin (the Bot API server),
JSON POSTs, keep-alive. A request is one ``transport.write``; the response is parsed here from the
protocol's buffer. Measured A/B of ``BotApi.post`` on uvloop (10 interleaved rounds of 3,000
``sendMessage`` calls, 50 callers, the server in another process): client CPU per call, median,
197 µs on the aiohttp session, 60 µs on this wire.

What it does: a pool of idle keep-alive connections (reused last-in first-out, at most ``limit``
open, as the aiohttp connector's 100, further callers wait); a connection the server closed while
idle is dropped, never handed out; ``Connection: close`` (or HTTP/1.0 without keep-alive) closes it
after the read; bodies by ``Content-Length``, ``chunked`` or read to close; TLS with certifi's CAs
and SNI for https. A connection whose exchange failed or was cancelled is closed, never reused.

What it does not do, like the aiohttp session it replaces (``sender._lean_session`` had none of
them either): no proxies, no redirects, no cookies, no compression (it asks for none), no
``Expect: 100-continue``, no HTTP/2. Every fault (connect, reset, early close, a malformed or
oversized reply) is a ``WireError``; the deadline is a ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import cast

import certifi
from yarl import URL

MAX_HEAD = 64 * 1024  # status line and headers
MAX_BODY = 64 * 1024 * 1024


class WireError(Exception):
    """A network or protocol fault of one exchange (the connection is closed)."""


class _Conn(asyncio.Protocol):
    """One connection: bytes land in ``buf``; the reader waits for more on ``_waiter``."""

    def __init__(self, pool: Wire) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False  # the server's EOF or connection_lost seen, or closed here
        self.idle = False
        self.counted = True  # holds one of the pool's ``limit`` places
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.idle:  # nothing was asked: a confused server, the connection is not reused
            self.close()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        if self.idle:
            self.pool._drop(self)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()
        self.pool._drop(self)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.pool._drop(self)

    async def fill(self) -> None:
        """Wait for more bytes in ``buf``; ``WireError`` once the server closed."""
        if self.closed:
            why = f": {self.error}" if self.error else ""
            raise WireError(f"server closed the connection before a whole response{why}")
        await self._more()

    async def _more(self) -> None:
        """Until bytes arrive or the connection closes."""
        self._waiter = waiter = self.pool.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def head(self) -> tuple[int, bytes, dict[str, str]]:
        """The response's status, HTTP version and headers (lower-case names), 1xx skipped."""
        while True:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > MAX_HEAD:
                    raise WireError("response headers over 64 KiB")
                await self.fill()
                end = buf.find(b"\r\n\r\n")
            if end > MAX_HEAD:
                raise WireError("response headers over 64 KiB")
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            version, _, rest = lines[0].partition(b" ")
            code = rest[:3]
            if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise WireError(f"malformed status line {lines[0][:80]!r}")
            status = int(code)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, colon, value = line.partition(b":")
                if not colon or not name or name != name.strip() or line[:1] in b" \t":
                    raise WireError(f"malformed header line {line[:80]!r}")
                key = name.decode("latin-1").lower()
                text = value.strip(b" \t").decode("latin-1")
                if key in headers:  # repeated: one comma-joined value (RFC 9110 5.3)
                    text = f"{headers[key]}, {text}"
                headers[key] = text
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer: the real one follows
            return status, version, headers

    async def body(self, headers: dict[str, str], status: int) -> tuple[bytes, bool]:
        """The body and whether the connection's framing allows reusing it."""
        if status in (101, 204, 304):
            return b"", status != 101
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._chunked(), "content-length" not in headers
        length = headers.get("content-length")
        if length is not None:
            values = {v.strip() for v in length.split(",")}
            if len(values) != 1 or not (n := values.pop()).isdigit():
                raise WireError(f"malformed Content-Length {length[:40]!r}")
            size = int(n)
            if size > MAX_BODY:
                raise WireError("response body over 64 MiB")
            while len(self.buf) < size:
                await self.fill()
            return self._take(size), True
        while not self.closed:  # neither: the body runs to the server's close
            if len(self.buf) > MAX_BODY:
                raise WireError("response body over 64 MiB")
            await self._fill_or_eof()
        if len(self.buf) > MAX_BODY:
            raise WireError("response body over 64 MiB")
        return self._take(len(self.buf)), False

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        buf = self.buf
        while True:
            end = await self._line()
            size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
            del buf[: end + 2]
            try:
                size = int(size_text, 16)
            except ValueError:
                raise WireError(f"malformed chunk size {size_text[:40]!r}") from None
            if size < 0:
                raise WireError("malformed chunk size")
            if size == 0:
                while (end := await self._line()) > 0:  # trailers, up to the empty line
                    del buf[: end + 2]
                del buf[:2]
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise WireError("response body over 64 MiB")
            while len(buf) < size + 2:
                await self.fill()
            if buf[size : size + 2] != b"\r\n":
                raise WireError("malformed chunk end")
            parts.append(self._take(size))
            del buf[:2]

    async def _line(self) -> int:
        """Where the next CRLF in ``buf`` is (waiting for it); its line may not pass 64 KiB."""
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise WireError("chunk line over 64 KiB")
            await self.fill()
        return end

    async def _fill_or_eof(self) -> None:
        if not self.closed:
            await self._more()
        if self.closed and isinstance(self.error, OSError):
            raise WireError(f"connection lost: {self.error}")  # a reset, not the server's close

    def _take(self, size: int) -> bytes:
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data


def _keeps_alive(version: bytes, headers: dict[str, str]) -> bool:
    tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    if version == b"HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


class Wire:
    """JSON POSTs to one origin (``http://`` or ``https://``) over kept-alive connections."""

    def __init__(self, origin: URL, *, limit: int = 100, tls: ssl.SSLContext | None = None) -> None:
        if origin.scheme not in ("http", "https") or not origin.raw_host:
            raise ValueError(f"not an http(s) origin: {origin.scheme}://{origin.raw_host}")
        self.origin = origin.origin()
        self.host = origin.raw_host.strip("[]")
        self.port = origin.port or (443 if origin.scheme == "https" else 80)
        self.limit = limit
        # certifi's CAs (slim images may lack the system's); ``tls`` only for tests' own CA.
        self.ssl = (
            (tls or ssl.create_default_context(cafile=certifi.where()))
            if origin.scheme == "https"
            else None
        )
        self.loop = asyncio.get_running_loop()
        self._host_header = origin.host_port_subcomponent or self.host
        self._idle: list[_Conn] = []  # last in, first out
        self._conns: set[_Conn] = set()
        self._open = 0  # connections open or being opened
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    def head_of(self, url: URL) -> bytes:
        """The request line and headers for POSTs to ``url``, up to Content-Length's value."""
        if url.origin() != self.origin:
            raise ValueError("this wire speaks to one origin only")
        return (
            f"POST {url.raw_path_qs} HTTP/1.1\r\nHost: {self._host_header}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode("latin-1")

    async def post(self, head: bytes, body: bytes, seconds: float | None) -> tuple[int, bytes]:
        """One exchange (``head`` from ``head_of``): the status and body. ``seconds`` bounds the
        whole call, waiting for a connection included; ``TimeoutError`` past it."""
        async with asyncio.timeout(seconds):
            conn = await self._acquire()
            try:
                assert conn.transport is not None
                conn.transport.write(b"%b%d\r\n\r\n%b" % (head, len(body), body))
                status, version, headers = await conn.head()
                content, framed = await conn.body(headers, status)
            except BaseException:
                conn.close()
                raise
        if framed and not conn.buf and _keeps_alive(version, headers):
            self._release(conn)
        else:
            conn.close()
        return status, content

    async def _acquire(self) -> _Conn:
        while True:
            if self._closed:
                raise WireError("the wire is closed")
            while self._idle:
                conn = self._idle.pop()
                conn.idle = False
                if not conn.closed:
                    return conn
                conn.close()  # already dropped when it closed; this is a no-op then
            if self._open < self.limit:
                break
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken but leaving: pass the place on
                else:
                    self._waiters.remove(waiter)
                raise
        self._open += 1
        conn = _Conn(self)
        try:
            await self.loop.create_connection(
                lambda: conn,
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
        except BaseException as err:
            self._drop(conn)
            if isinstance(err, OSError) and not isinstance(err, TimeoutError):
                where = f"{self.host}:{self.port}"
                raise WireError(f"Cannot connect to host {where}: {err}") from err
            raise
        if self._closed:  # aclose() ran while this one was being opened
            conn.close()
            raise WireError("the wire is closed")
        self._conns.add(conn)
        return conn

    def _release(self, conn: _Conn) -> None:
        if self._closed or conn.closed:
            conn.close()
            return
        conn.idle = True
        self._idle.append(conn)
        if self._waiters:
            self._wake()

    def _drop(self, conn: _Conn) -> None:
        """Forget ``conn`` (closed or failed to open) and give its place to a waiter."""
        if not conn.counted:
            return
        conn.counted = False
        self._open -= 1
        self._conns.discard(conn)
        if conn.idle:
            conn.idle = False
            self._idle.remove(conn)
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    @property
    def open_connections(self) -> int:
        return self._open

    async def aclose(self) -> None:
        """Close every connection, idle or busy (a busy exchange then fails)."""
        self._closed = True
        for conn in list(self._conns):
            conn.close()
        while self._waiters:
            self._wake()
        await asyncio.sleep(0)  # let the transports run connection_lost

    def __repr__(self) -> str:
        return f"<Wire {self.origin} open={self._open} idle={len(self._idle)}>"
