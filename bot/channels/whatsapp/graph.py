"""The Graph API client of the WhatsApp channel: messages, read marks, media down and up.

Why our own client and not pywa (4.5.0): pywa is a framework. Its webhook side registers routes on
Flask or FastAPI and dispatches to its own handlers, filters and update types, which would duplicate
our Inbound/engine pipeline and does not mount on aiohttp; its Graph host is fixed (only the API
version is configurable), so tests could not point it at a local fake without patching transports.
What we need is small: one POST for messages, two GETs for media, an HMAC check, and retry rules
that map onto ``DeliveryError``/``WindowClosed``, so a few hundred lines of our own are cheaper
than a framework to work around.

The client runs on aiohttp, like the Telegram sender, not on httpx: httpcore's pool (1.0.9)
leaks a connection slot whenever a request is cancelled or times out while it waits for a
connection (encode/httpcore#1093), and under duplicate deliveries and a slow Graph every slot
leaked: every send then failed with ``PoolTimeout``, no socket open, until a restart. aiohttp's
connector frees a slot whatever ends the request, and every wait is bounded (``GRAPH_TIMEOUT``,
``MEDIA_TIMEOUT``).

Error mapping of a Graph call (``_request``)::

    transport error, timeout, HTTP 5xx       -> retried with jittered backoff
    HTTP 429, error.code 130429/131056/4/80007 (throttling) -> retried (Retry-After honoured)
    error.code 131047 (24-hour window closed) -> WindowClosed, not retried
    any other 4xx                            -> DeliveryError, not retried
    retries exhausted                        -> DeliveryError

The access token is sent only in the Authorization header of each request (never set on a shared
client, never logged, scrubbed from any error text).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import certifi
import orjson

from bot.channels.base import DeliveryError, WindowClosed
from bot.channels.whatsapp.parse import as_dict as _dict
from bot.channels.whatsapp.parse import as_str as _str
from bot.channels.whatsapp.parse import dicts as _dicts
from bot.channels.whatsapp.settings import WhatsAppSettings
from bot.concurrency import GaveUp, retry_delay, retrying

log = logging.getLogger("bot.channels.whatsapp")

# Graph error codes: throttling (retry later) and the closed customer service window.
RATE_CODES = frozenset({4, 80007, 130429, 131056})
WINDOW_CLOSED_CODE = 131047

# Every wait of a Graph call is bounded: for a free connection and the connection itself
# (``connect``), for each read (``sock_read``: a hung Graph holds a connection 15 s at most), and
# the whole call; a file's bytes may take longer than a message.
GRAPH_TIMEOUT = aiohttp.ClientTimeout(total=30.0, connect=20.0, sock_connect=5.0, sock_read=15.0)
MEDIA_TIMEOUT = aiohttp.ClientTimeout(total=300.0, connect=20.0, sock_connect=5.0, sock_read=15.0)
GRAPH_CONNECTIONS = 100


class GraphClient:
    """Calls to the Graph API for one phone number id, with the retries drawn above."""

    def __init__(
        self,
        settings: WhatsAppSettings,
        http: aiohttp.ClientSession | None = None,
        *,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        on_outcome: Callable[[bool], None] | None = None,
        message_timeout: aiohttp.ClientTimeout = GRAPH_TIMEOUT,
        media_timeout: aiohttp.ClientTimeout = MEDIA_TIMEOUT,
    ) -> None:
        # ``on_outcome`` hears of every Graph call: True when Graph answered it, False when it
        # failed (transport, 5xx, throttling, a refusal), for the readiness check.
        if settings.access_token is None or not settings.phone_number_id:
            msg = "WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID are required"
            raise ValueError(msg)
        self._token = settings.access_token
        self._base = str(settings.api_url).rstrip("/")
        self._messages_url = f"{self._base}/{settings.phone_number_id}/messages"
        self._media_url = f"{self._base}/{settings.phone_number_id}/media"
        self._own_http = http is None
        self._http = http  # made on first use when not given (a session needs a running loop)
        self._on_outcome = on_outcome
        self._message_timeout = message_timeout  # a message, a read mark, a media look-up
        self._media_timeout = media_timeout  # a file's bytes, down or up
        self._max_retries = max_retries
        self._backoff = backoff
        self._max_backoff = max_backoff

    async def send_message(self, message: dict[str, Any], conv: str) -> None:
        """Send one message (``conv`` names the conversation in logs)."""
        response = await self._request("POST", self._messages_url, conv, json=message)
        try:
            wamid = _str(_dict(next(_dicts(response.json().get("messages")), {})).get("id"))
        except (ValueError, AttributeError) as err:
            # The message was probably accepted; say so rather than pretend it failed.
            msg = f"undecodable Graph answer for a sent message (HTTP {response.status})"
            raise DeliveryError(msg) from err
        log.info("whatsapp sent", extra={"conv": conv, "wamid": wamid, "type": message["type"]})

    async def mark_read(self, wamid: str) -> None:
        """Show the customer's message as read (blue ticks); a failure is logged, not raised."""
        payload = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
        try:
            await self._request("POST", self._messages_url, "", json=payload, retries=1)
        except DeliveryError as err:
            log.warning("whatsapp mark-read failed: %s", err, extra={"wamid": wamid})

    async def fetch_media(self, media_id: str) -> tuple[bytes, str]:
        """Download a customer's media (to forward it to agents): its bytes and MIME type."""
        meta = await self._request("GET", f"{self._base}/{media_id}", "")
        try:
            info = _dict(meta.json())
        except ValueError as err:
            msg = "undecodable Graph answer for a media lookup"
            raise DeliveryError(msg) from err
        url, mime = _str(info.get("url")), _str(info.get("mime_type"))
        if not url.startswith(("https://", "http://")):
            msg = "Graph gave no download URL for the media"
            raise DeliveryError(msg)
        data = await self._request("GET", url, "", media=True)
        mime = mime or data.headers.get("content-type", "application/octet-stream")
        return data.body, mime.split(";")[0].strip()

    async def upload_media(self, data: bytes, mime: str, filename: str = "file") -> str:
        """Upload a file (an agent's attachment) and return the media id to send it with."""
        response = await self._request(
            "POST",
            self._media_url,
            "",
            form={"messaging_product": "whatsapp", "type": mime, "file": (filename, data, mime)},
            retries=self._max_retries,
            media=True,
        )
        try:
            media_id = _str(_dict(response.json()).get("id"))
        except ValueError as err:
            msg = "undecodable Graph answer for a media upload"
            raise DeliveryError(msg) from err
        if not media_id:
            msg = "Graph returned no id for an uploaded media"
            raise DeliveryError(msg)
        return media_id

    async def aclose(self) -> None:
        """Close the HTTP client when this channel created it."""
        if self._own_http and self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(
                ssl=ssl.create_default_context(cafile=certifi.where()),
                limit=GRAPH_CONNECTIONS,
                ttl_dns_cache=300,
            )
            self._http = aiohttp.ClientSession(connector=connector, timeout=self._message_timeout)
            self._own_http = True
        return self._http

    async def _call(
        self,
        method: str,
        url: str,
        json: dict[str, Any] | None,
        form: dict[str, str | tuple[str, bytes, str]] | None,
        limits: aiohttp.ClientTimeout,
    ) -> GraphAnswer:
        """One HTTP exchange, its answer read whole (so the connection goes back at once)."""
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        data: aiohttp.FormData | bytes | None = None
        if json is not None:
            data = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = aiohttp.FormData()  # built per attempt: a sent form cannot be sent again
            for name, value in form.items():
                if isinstance(value, tuple):
                    filename, content, mime = value
                    data.add_field(name, content, filename=filename, content_type=mime)
                else:
                    data.add_field(name, value)
        session = self._session()
        call = session.request(method, url, headers=headers, data=data, timeout=limits)
        async with call as response:
            body = await response.read()
            return GraphAnswer(response.status, response.reason or "", response.headers, body)

    def _outcome(self, ok: bool) -> None:
        if self._on_outcome is not None:
            self._on_outcome(ok)

    async def _request(
        self,
        method: str,
        url: str,
        conv: str,
        *,
        retries: int | None = None,
        json: dict[str, Any] | None = None,
        form: dict[str, str | tuple[str, bytes, str]] | None = None,
        media: bool = False,
    ) -> GraphAnswer:
        """One Graph call with the retry and error rules drawn in the module docstring."""
        attempts = (self._max_retries if retries is None else retries) + 1
        limits = self._media_timeout if media else self._message_timeout

        async def once() -> GraphAnswer:
            try:
                response = await self._call(method, url, json, form, limits)
            except (aiohttp.ClientError, TimeoutError) as err:
                # aiohttp's timeouts are TimeoutErrors; its texts may quote the URL (no token).
                self._outcome(False)
                raise _Retryable(f"transport error {type(err).__name__}") from err
            if response.ok:
                self._outcome(True)
                return response
            code, text = _graph_error(response)
            problem = self._scrub(f"HTTP {response.status}, Graph error {code}: {text}")
            if code == WINDOW_CLOSED_CODE:
                self._outcome(True)  # Graph works; this customer's window is closed
                raise WindowClosed(problem)
            self._outcome(False)
            if response.status == 429 or code in RATE_CODES:
                raise _Retryable(problem, _retry_after(response))
            if response.status < 500:
                log.error("whatsapp request refused: %s", problem, extra={"conv": conv})
                raise DeliveryError(problem)
            raise _Retryable(problem)

        def retried(err: Exception, made: int, wait: float) -> None:
            log.warning(
                "whatsapp request failed, retrying: %s",
                err,
                extra={"conv": conv, "attempt": made, "wait": round(wait, 3)},
            )

        try:
            return await retrying(once, self._wait_after, attempts=attempts, on_retry=retried)
        except GaveUp as err:
            problem = str(err.error)
        msg = f"gave up after {attempts} attempts: {problem}"
        log.error("whatsapp delivery failed: %s", msg, extra={"conv": conv})
        raise DeliveryError(msg)

    def _wait_after(self, err: Exception, attempt: int) -> float | None:
        """The wait before retrying: the answer's Retry-After, else a jittered backoff."""
        if not isinstance(err, _Retryable):
            return None
        if err.retry_after is not None:
            return err.retry_after
        return retry_delay(attempt, self._backoff, self._max_backoff, (0.5, 1.0))

    def _scrub(self, text: str) -> str:
        return text.replace(self._token.get_secret_value(), "***")


class _Retryable(Exception):
    """A failed Graph call worth another attempt (transport, 429, 5xx); its text is scrubbed."""

    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class GraphAnswer:
    """A Graph API answer, read whole."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not)."""
        return orjson.loads(self.body)


def _graph_error(response: GraphAnswer) -> tuple[int | None, str]:
    """The ``error.code`` and message of a Graph error answer, when it has one."""
    try:
        error = _dict(_dict(response.json()).get("error"))
    except ValueError:
        return None, response.reason
    code = error.get("code")
    details = _str(_dict(error.get("error_data")).get("details"))
    text = _str(error.get("message")) or response.reason
    return (code if isinstance(code, int) else None), (f"{text} ({details})" if details else text)


def _retry_after(response: GraphAnswer) -> float | None:
    raw = response.headers.get("retry-after", "")
    try:
        return min(max(float(raw), 0.0), 60.0)
    except ValueError:
        return None
