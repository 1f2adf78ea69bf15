"""The request path every WispHub call takes: auth, deadlines, retries, the breaker, errors.

One request path adds the ``Api-Key`` header, bounds concurrency, enforces a per-call deadline
and maps failures onto the exception tree of ``integrations.wisphub.errors``::

    WispHubError
     ├── WispHubConfigError    HTML body (wrong base URL), 3xx, 401/403, missing key
     ├── WispHubNotFound       404
     ├── WispHubUnavailable    5xx, 429, timeouts, transport errors, undecodable JSON, and a 403
     │    │                    right after the same key got through (WispHub throttles with 403)
     │    └── TicketUnconfirmed  a ticket POST's outcome is unknown and the ticket was not found
     └── WispHubRejected       other 4xx, with WispHub's own message

GETs are retried with jittered exponential backoff on the ``WispHubUnavailable`` causes; a POST
is sent once. The circuit breaker sees each call's outcome after its retries. Lists are
paginated with ``limit``/``offset`` over the configured base URL (WispHub's ``next`` links are
``http://`` and would carry the key in clear text). Query strings (documents, phones) are cut
out of httpx's own log lines.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import httpx
import orjson

from integrations.wisphub.breaker import CircuitBreaker
from integrations.wisphub.errors import (
    WispHubConfigError,
    WispHubError,
    WispHubKeyRefused,
    WispHubNotFound,
    WispHubRejected,
    WispHubUnavailable,
)
from integrations.wisphub.settings import WispHubSettings

logger = logging.getLogger(__name__)

# A server that keeps answering full pages past this is misbehaving; stop rather than loop.
MAX_PAGES = 100
# A 403 within this many seconds of an accepted call is throttling, not a bad key: WispHub
# answers a burst with 403 instead of 429.
THROTTLE_WINDOW = 120.0
_DETAIL_MAX = 300

Kind = Literal["GET", "POST"]


class Transient(WispHubUnavailable):
    """A ``WispHubUnavailable`` that says whether the request reached WispHub and may be retried."""

    def __init__(
        self,
        msg: str,
        *,
        sent: bool,
        answered: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(msg)
        self.sent = sent
        self.answered = answered  # WispHub finished with the request (it replied)
        self.retry_after = retry_after


class Deadline:
    """One public call's time budget, measured on the monotonic clock."""

    def __init__(self, soft: float, hard: float) -> None:
        self.start = time.monotonic()
        self.soft = soft
        self.hard = hard

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def remaining(self) -> float:
        return self.hard - self.elapsed


class RedactQuery(logging.Filter):
    """Cut query strings out of httpx's request log lines: they carry documents and phones."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, httpx.URL) and a.query for a in record.args
        ):
            record.args = tuple(
                f"{str(a).split('?', 1)[0]}?<redacted>" if isinstance(a, httpx.URL) else a
                for a in record.args
            )
        return True


def _guard_httpx_logs() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, RedactQuery) for f in httpx_logger.filters):
        httpx_logger.addFilter(RedactQuery())


def _detail(body: Any) -> str:
    """WispHub's own message from ``{detail}`` or DRF field errors, shortened."""
    if isinstance(body, dict):
        if "detail" in body:
            text = str(body["detail"])
        else:
            parts = []
            for key, value in body.items():
                msgs = value if isinstance(value, list) else [value]
                joined = " ".join(str(m) for m in msgs)
                parts.append(joined if key == "non_field_errors" else f"{key}: {joined}")
            text = "; ".join(parts)
    elif isinstance(body, list):
        text = "; ".join(str(m) for m in body)
    else:
        text = str(body or "")
    text = " ".join(text.split())
    return text[:_DETAIL_MAX] or "no detail given"


def _looks_html(response: httpx.Response) -> bool:
    if "text/html" in response.headers.get("content-type", "").lower():
        return True
    head = response.content[:200].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


class RequestPipeline:
    """Sends requests to WispHub: auth header, concurrency bound, deadline, retries, breaker."""

    # Tunables as instance-overridable attributes (tests shrink them to keep runs fast).
    backoff_base = 0.2
    backoff_cap = 2.0
    call_budget = 10.0  # no retry starts after this many seconds into a call
    call_timeout = 13.0  # a call is cut off here, so the customer hears back within 15 s

    def __init__(self, http: httpx.AsyncClient, settings: WispHubSettings) -> None:
        self._http = http
        self._owns_http = False
        self._settings = settings
        self._base = str(settings.api_url)
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        # What ``AsyncClient.request`` would put in each request, worked out once: a request is
        # built here and handed to ``AsyncClient.send`` (the client's merging of its URL,
        # params, cookies and headers into every request was a third of a look-up's CPU).
        self._extensions = {"timeout": timeout.as_dict()}
        # The transport of a client this pipeline built (``WispHubClient.build``), called
        # directly: ``AsyncClient.send`` adds auth, redirects and a cookie jar, none of which
        # WispHub's API-key calls use, and its cookie extraction alone (a urllib request and
        # a cookiejar pass per response) was a fifth of a look-up's CPU. A client passed in
        # (the tests' mocks) is always called through ``send``.
        self._direct: httpx.AsyncBaseTransport | None = None
        key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        # Built once; None without a key, and every request then fails as misconfigured.
        self._headers = (
            {"Authorization": f"Api-Key {key}", "Accept": "application/json"} if key else None
        )
        # The HTTP client's default headers (its User-Agent) with these over them, as
        # ``AsyncClient.build_request`` merges them; no cookies: WispHub's are never sent back
        # (the key is the only credential).
        self._request_headers = httpx.Headers(http.headers)
        self._request_headers.update(self._headers or {})
        self._sem = asyncio.Semaphore(settings.max_concurrency)
        # When WispHub last accepted the key (monotonic), and whether a refused key was already
        # reported: a bad key is said once, clearly, not on every customer's message.
        self._key_ok_at: float | None = None
        self._bad_key_reported = False
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset)
        # Called after every HTTP attempt with (endpoint, outcome, seconds): metrics hook.
        self.observer: Callable[[str, str, float], None] | None = None
        _guard_httpx_logs()

    def _deadline(self) -> Deadline:
        return Deadline(self.call_budget, self.call_timeout)

    async def _get_all(
        self,
        label: str,
        path: str,
        params: Mapping[str, Any],
        *,
        deadline: Deadline | None = None,
    ) -> list[dict[str, Any]]:
        """Every record of a list endpoint, walking ``offset`` over the configured base URL."""
        deadline = deadline or self._deadline()
        size = self._settings.page_size
        records: list[dict[str, Any]] = []
        offset = 0
        for _ in range(MAX_PAGES):
            body = await self._request(
                "GET",
                label,
                path,
                params={**params, "limit": size, "offset": offset},
                deadline=deadline,
            )
            if isinstance(body, list):  # some catalogue endpoints answer a bare list
                records.extend(r for r in body if isinstance(r, dict))
                return records
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                msg = f"WispHub answered {label} with an unexpected shape"
                raise WispHubUnavailable(msg)
            page = [r for r in body["results"] if isinstance(r, dict)]
            records.extend(page)
            offset += len(body["results"])
            count = body.get("count")
            total = count if isinstance(count, int) else None
            if not page or (total is not None and offset >= total):
                return records
            if total is None and len(body["results"]) < size:
                return records
        logger.warning("stopped paginating after %d pages", MAX_PAGES, extra={"endpoint": label})
        return records

    async def _request(
        self,
        method: Kind,
        label: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        files: Mapping[str, tuple[None, bytes]] | None = None,
        retry: bool = True,
        deadline: Deadline | None = None,
    ) -> Any:
        """One call: retried (GET only) with jittered backoff inside the call's deadline.

        The circuit breaker sees the call's outcome after its retries: an outage counts as a
        failure, any real answer (even a 4xx) as a success.
        """
        self.breaker.before()
        try:
            result = await self._attempts(method, label, path, params, json, files, retry, deadline)
        except WispHubUnavailable:
            self.breaker.failure()
            raise
        except WispHubError:
            self.breaker.success()
            raise
        self.breaker.success()
        return result

    async def _attempts(
        self,
        method: Kind,
        label: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        files: Mapping[str, tuple[None, bytes]] | None,
        retry: bool,
        deadline: Deadline | None,
    ) -> Any:
        deadline = deadline or self._deadline()
        retries = self._settings.retries if retry and method == "GET" else 0
        attempt = 0
        while True:
            try:
                return await self._send(method, label, path, params, json, files, deadline)
            except Transient as err:
                if attempt >= retries:
                    raise
                delay = min(
                    self.backoff_base * 2**attempt * random.uniform(0.5, 1.5), self.backoff_cap
                )
                if err.retry_after is not None:
                    delay = max(delay, min(err.retry_after, self.backoff_cap))
                if deadline.elapsed + delay >= deadline.soft:
                    raise
                attempt += 1
                logger.warning(
                    "retrying WispHub",
                    extra={"endpoint": f"{method} {label}", "attempt": attempt, "error": str(err)},
                )
                await asyncio.sleep(delay)

    async def _send(
        self,
        method: Kind,
        label: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        files: Mapping[str, tuple[None, bytes]] | None,
        deadline: Deadline,
    ) -> Any:
        if self._headers is None:
            msg = "WISPHUB_API_KEY is not set"
            raise WispHubConfigError(msg)
        name = f"{method} {label}"
        remaining = deadline.remaining
        if remaining <= 0:
            msg = f"WispHub took too long ({name})"
            raise Transient(msg, sent=False)
        url = self._base + path
        started = time.monotonic()
        sent = False
        try:
            async with asyncio.timeout(remaining):
                async with self._sem:
                    sent = True
                    request = httpx.Request(
                        method,
                        url,
                        params=params,
                        json=json,
                        files=files,
                        headers=self._request_headers,
                        extensions=self._extensions,
                    )
                    direct = self._direct
                    if direct is None:
                        response = await self._http.send(request)
                    else:
                        response = await direct.handle_async_request(request)
                        await response.aread()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
            self._observe(name, "unreachable", started)
            msg = f"cannot reach WispHub ({name}): {type(err).__name__}"
            raise Transient(msg, sent=False) from err
        except (httpx.RequestError, TimeoutError) as err:
            self._observe(name, "timeout", started)
            msg = f"WispHub did not answer in time ({name}): {type(err).__name__}"
            # A timeout while waiting for the semaphore never reached WispHub.
            raise Transient(msg, sent=sent) from err
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        status = response.status_code
        self._observe(name, str(status), started)
        log_extra = {"endpoint": name, "status": status, "duration_ms": duration_ms}
        logger.debug("WispHub answered", extra=log_extra)
        try:
            return self._check(name, response)
        except WispHubError as err:
            if isinstance(err, WispHubConfigError) and status in (401, 403):
                self._report_bad_key(name, status, log_extra)
            else:
                logger.warning("WispHub request failed", extra=log_extra)
            raise

    def _report_bad_key(self, name: str, status: int, log_extra: dict[str, Any]) -> None:
        if self._bad_key_reported:
            logger.debug("WispHub request failed", extra=log_extra)
            return
        self._bad_key_reported = True
        logger.error(
            "WispHub refused the API key (WISPHUB_API_KEY): HTTP %d on %s; customers cannot be "
            "identified and /readyz answers 503 until the key is fixed in WispHub",
            status,
            name,
            extra=log_extra,
        )

    def _observe(self, name: str, outcome: str, started: float) -> None:
        if self.observer is not None:
            self.observer(name, outcome, time.monotonic() - started)

    def _check(self, name: str, response: httpx.Response) -> Any:
        """Decode a response or raise the matching ``WispHubError``."""
        status = response.status_code
        if status >= 500:
            msg = f"WispHub failed ({name}): HTTP {status}"
            raise Transient(msg, sent=True, answered=True)
        if status == 429:
            after = response.headers.get("retry-after", "")
            retry_after = float(after) if after.replace(".", "", 1).isdigit() else None
            msg = f"WispHub is rate limiting ({name})"
            raise Transient(msg, sent=True, answered=True, retry_after=retry_after)
        if _looks_html(response):
            msg = (
                f"WispHub answered {name} with an HTML page (HTTP {status}): "
                "the WISPHUB_API_URL does not point at the API"
            )
            raise WispHubConfigError(msg)
        if 300 <= status < 400:
            msg = (
                f"WispHub redirected {name} (HTTP {status}): check WISPHUB_API_URL "
                "(https, trailing slash)"
            )
            raise WispHubConfigError(msg)
        body = self._decode(name, response) if status >= 400 else None
        ok_at = self._key_ok_at
        if status == 403 and ok_at is not None and time.monotonic() - ok_at <= THROTTLE_WINDOW:
            # The same key worked moments ago: WispHub is throttling a burst (it says 403).
            msg = f"WispHub is throttling ({name}, HTTP 403 after accepted calls)"
            raise Transient(msg, sent=True, answered=True)
        if status in (401, 403):
            msg = f"WispHub refused the API key ({name}, HTTP {status}): {_detail(body)}"
            raise WispHubKeyRefused(msg)
        if status == 404:
            msg = f"not found in WispHub ({name}): {_detail(body)}"
            raise WispHubNotFound(msg)
        if status >= 400:
            raise WispHubRejected(status, _detail(body))
        self._key_ok_at = time.monotonic()
        self._bad_key_reported = False
        if status == 204 or not response.content.strip():
            return None
        return self._decode(name, response, strict=True)

    @staticmethod
    def _decode(name: str, response: httpx.Response, *, strict: bool = False) -> Any:
        try:
            return orjson.loads(response.content)
        except ValueError as err:
            if not strict:
                # An error answer without JSON: its text is still the best detail we have.
                return response.text[:_DETAIL_MAX]
            msg = f"WispHub answered {name} with undecodable JSON"
            raise Transient(msg, sent=True, answered=True) from err
