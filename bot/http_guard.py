"""The HTTP server's guards against slow and odd clients.

- Headers in time: aiohttp's keep-alive timer runs from the moment a connection opens and again
  after every answer, and closes the connection when no whole request head has arrived by then;
  set to ``HTTP_READ_TIMEOUT`` (aiohttp's default is an hour), it is the header timeout and the
  idle timeout in one. A slow-loris client that sends its head a byte at a time is cut off.
- The body in time: ``body_within`` reads a request's body before the handler runs, bounded by
  the same timeout, else 408 and the connection is closed.
- A cap on open connections: ``GuardedSite`` answers 503 to a connection beyond
  ``HTTP_MAX_CONNECTIONS`` and closes it at once, so slow clients cannot take every descriptor.
- A request aiohttp cannot parse (an oversized header, a bad request line) is answered 4xx by
  aiohttp, which logs a traceback at ERROR for it: ``quiet_bad_requests`` turns that into one
  WARNING line without the traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
)
_REPORT_EVERY = 10.0  # seconds between two warnings about refused connections


def server_options(read_timeout: float) -> dict[str, Any]:
    """``web.AppRunner`` keyword arguments: the header (and idle) timeout, and how long the
    unread rest of a body refused 408 is still drained before the connection closes."""
    return {"keepalive_timeout": read_timeout, "lingering_time": read_timeout}


def body_within(seconds: float) -> Middleware:
    """A middleware that reads each request's body within ``seconds``, else answers 408."""

    @web.middleware
    async def read_body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.can_read_body and request.content.is_eof():
            await request.read()  # all here already (the usual small POST): nothing to time
        elif request.can_read_body:
            try:
                async with asyncio.timeout(seconds):
                    await request.read()  # kept by aiohttp: the handler's read() returns it
            except TimeoutError:
                log.warning(
                    "http request body not received in time",
                    extra={"path": request.path, "seconds": seconds},
                )
                response = web.Response(status=408, text="request timeout")
                response.force_close()
                return response
        return await handler(request)

    return read_body_in_time


class _Busy(asyncio.Protocol):
    """A connection beyond the cap: 503, closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.WriteTransport, transport)  # uvloop's is no asyncio.Transport
        writer.write(_BUSY)
        writer.close()


class GuardedSite(web.BaseSite):
    """A TCP site that serves at most ``max_connections`` connections at once."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._max = max_connections
        self._refused = 0
        self._reported = 0.0
        self._pending = 0

    @property
    def name(self) -> str:
        """The site's URL, for logs."""
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen; each new connection gets the app's protocol, or a 503 when at the cap."""
        await super().start()
        server = self._runner.server
        assert server is not None

        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.BaseProtocol:
            # The server counts a connection once its connection_made runs, a loop turn after
            # this factory; the ones made since are counted apart, or a burst of accepts would
            # all pass. Scheduled here, the decrement runs right before that connection_made.
            if len(server.connections) + self._pending >= self._max:
                self._refuse()
                return _Busy()
            self._pending += 1
            loop.call_soon(self._made)
            return server()

        self._server = await loop.create_server(
            protocol, self._host, self._port, reuse_address=True
        )

    def _made(self) -> None:
        self._pending -= 1

    def _refuse(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._reported >= _REPORT_EVERY:
            self._reported = now
            log.warning(
                "http connections refused: too many open",
                extra={"max_connections": self._max, "refused": self._refused},
            )
            self._refused = 0


class _BadRequestRecord(logging.Filter):
    """aiohttp's ERROR with a traceback for a request it could not parse -> one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            # The reason only, not the bytes aiohttp quotes after it (the client's header).
            reason = error.message.split(":")[0][:120]
            record.msg, record.args = "http request refused: %s", (reason,)
            record.exc_info, record.exc_text = None, None
            record.status = error.code
        return True


_FILTER = _BadRequestRecord()


def quiet_bad_requests() -> None:
    """Log unparsable requests as one warning line (idempotent)."""
    logging.getLogger("aiohttp.server").addFilter(_FILTER)
