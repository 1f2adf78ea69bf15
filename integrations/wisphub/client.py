"""Async client for the WispHub Net REST API.

Every call goes through one request path that adds the ``Api-Key`` header, bounds concurrency,
enforces a per-call deadline and maps failures onto the exception tree of
``integrations.wisphub.errors``::

    WispHubError
     ├── WispHubConfigError    HTML body (wrong base URL), 3xx, 401/403, missing key
     ├── WispHubNotFound       404
     ├── WispHubUnavailable    5xx, 429, timeouts, transport errors, undecodable JSON, and a 403
     │    │                    right after the same key got through (WispHub throttles with 403)
     │    └── TicketUnconfirmed  a ticket POST's outcome is unknown and the ticket was not found
     └── WispHubRejected       other 4xx, with WispHub's own message

GETs are retried with jittered exponential backoff on the ``WispHubUnavailable`` causes; a POST
is sent once. A ticket POST whose outcome is unknown (timeout, 5xx, unreadable answer) is
reconciled by looking for the ticket instead of being sent again, because WispHub has no
idempotency and a second POST makes a second ticket.

Lists are paginated with ``limit``/``offset`` over the configured base URL (WispHub's ``next``
links are ``http://`` and would carry the key in clear text). WispHub silently ignores filters it
does not know and then returns every client, so every look-up keeps only the records whose field
really equals the searched key.
"""

from __future__ import annotations

import asyncio
import html
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
import orjson
from async_lru import alru_cache
from cachetools import LRUCache
from pydantic import ValidationError

from integrations.wisphub.breaker import CircuitBreaker
from integrations.wisphub.errors import (
    TicketUnconfirmed,
    WispHubConfigError,
    WispHubError,
    WispHubKeyRefused,
    WispHubNotFound,
    WispHubRejected,
    WispHubUnavailable,
)
from integrations.wisphub.models import (
    Client,
    Invoice,
    PaymentMethod,
    PingResult,
    Plan,
    Ticket,
    TicketRequest,
)
from integrations.wisphub.phones import MIN_PHONE_DIGITS, national_forms, national_number
from integrations.wisphub.settings import WispHubSettings
from integrations.wisphub.transport import AiohttpTransport

logger = logging.getLogger(__name__)

# A server that keeps answering full pages past this is misbehaving; stop rather than loop.
MAX_PAGES = 100
# How far before ``requested_at`` a reconciled ticket may claim to be created (clock skew).
RECONCILE_SKEW = timedelta(minutes=2)
# Hours from the start of a ticket to its ``fecha_final``, per WispHub priority code.
SLA_HOURS: Mapping[str, int] = {"1": 72, "2": 48, "3": 24, "4": 8}
# A 403 within this many seconds of an accepted call is throttling, not a bad key: WispHub
# answers a burst with 403 instead of 429.
THROTTLE_WINDOW = 120.0
_CACHE_SIZE = 4096
_DETAIL_MAX = 300
_WISPHUB_DATETIME = "%d/%m/%Y %H:%M"

Kind = Literal["GET", "POST"]


def digits(text: object) -> str:
    """Only the digits of ``text`` (documents and phones are compared this way)."""
    return re.sub(r"\D", "", "" if text is None else str(text))


def mask(value: str) -> str:
    """Hide all but the last 3 characters of a document or phone number, for logs."""
    return "*" * max(len(value) - 3, 0) + value[-3:]


@dataclass
class RequestStats:
    """How many HTTP requests were made, per endpoint label (``"GET /clientes/"``)."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    def __getitem__(self, label: str) -> int:
        return self.requests[label]

    @property
    def total(self) -> int:
        """All requests made (every attempt counts)."""
        return sum(self.requests.values())

    def reset(self) -> None:
        """Start counting again."""
        self.requests.clear()
        self.errors.clear()
        self.retries = 0


class _Transient(WispHubUnavailable):
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


class _Deadline:
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


class _RedactQuery(logging.Filter):
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
    if not any(isinstance(f, _RedactQuery) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactQuery())


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


def _plain(text: str) -> str:
    """Text compared across WispHub's echo: tags dropped (descriptions come back as HTML),
    entities decoded, spacing and case folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", text)).split()).casefold()


def _looks_html(response: httpx.Response) -> bool:
    if "text/html" in response.headers.get("content-type", "").lower():
        return True
    head = response.content[:200].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _parse_many(model: type[Any], records: Iterable[dict[str, Any]], what: str) -> list[Any]:
    """Validate records one by one; a malformed one is logged (field names only) and skipped."""
    out = []
    for raw in records:
        try:
            out.append(model.model_validate(raw))
        except ValidationError as err:
            # Never log the error text itself: pydantic quotes the offending input.
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in err.errors()})
            logger.warning("skipping a malformed %s record", what, extra={"fields": fields})
    return out


def _ping_counts(item: Any) -> tuple[int, int, list[float]] | None:
    """(sent, received, rtts) of one ``{"ping-N": {...}}`` entry; None when unreadable."""
    if not isinstance(item, dict):
        return None
    sent = received = 0
    rtts: list[float] = []
    found = False
    for key, value in item.items():
        if not str(key).startswith("ping-") or not isinstance(value, dict):
            continue
        found = True
        status = str(value.get("status", "")).lower()
        try:
            s = int(value.get("sent", 1))
            r = int(value["received"]) if "received" in value else int(status not in _NO_REPLY)
        except (TypeError, ValueError):
            return None
        sent, received = sent + s, received + r
        rtt = _rtt_ms(value.get("avg-rtt"))
        if r and rtt is not None:
            rtts.append(rtt)
    return (sent, received, rtts) if found else None


_NO_REPLY = frozenset({"timeout", "no reply", "host unreachable", "unreachable", "fail", "failed"})
_SUMMARY = re.compile(r"\s*(\d+)\s*de\s*(\d+)")


def _rtt_ms(value: Any) -> float | None:
    """RouterOS round-trip times: ``"12ms"``, ``"1ms250us"``, ``"800us"``, ``12``."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)ms)?(?:(\d+)us)?", text)
    if m and (m[1] or m[2]):
        return float(m[1] or 0) + int(m[2] or 0) / 1000
    try:
        return float(text)
    except ValueError:
        return None


def classify_ping(result: Any) -> PingResult:
    """Turn a ping task's ``result`` into ok / no_response / partial / unknown.

    WispHub's own ``"ping-exitoso": "2 de 4"`` decides when present: it counts a public IP that
    answers "host unreachable" (a client behind a firewall) as reachable, which the per-ping
    lines (private IP timed out, public IP unreachable) cannot tell. The lines decide only when
    there is no summary; lines that are all router errors mean the check itself did not run.
    """
    items = result if isinstance(result, list) else [result]
    sent = received = 0
    rtts: list[float] = []
    summary: tuple[int, int] | None = None
    lines = errors = 0
    for item in items:
        if isinstance(item, dict) and "ping-exitoso" in item:
            m = _SUMMARY.match(str(item["ping-exitoso"]))
            if m:
                summary = (int(m[2]), int(m[1]))
            continue
        counts = _ping_counts(item)
        if counts is None:
            errors += 1  # a router error string (or anything else unreadable)
            continue
        lines += 1
        sent, received = sent + counts[0], received + counts[1]
        rtts.extend(counts[2])
    if lines == 0 and errors:
        return PingResult(status="unknown")
    if summary is not None:
        sent, received = summary
    elif errors:
        return PingResult(status="unknown")
    if sent <= 0:
        return PingResult(status="unknown")
    avg = round(sum(rtts) / len(rtts), 2) if rtts else None
    status: Literal["ok", "no_response", "partial"]
    if received <= 0:
        status = "no_response"
    elif received >= sent:
        status = "ok"
    else:
        status = "partial"
    return PingResult(status=status, sent=sent, received=min(received, sent), avg_rtt_ms=avg)


class WispHubClient:
    """The WispHub Net API as typed async calls, with retries, deadlines and caching."""

    # Tunables as instance-overridable attributes (tests shrink them to keep runs fast).
    backoff_base = 0.2
    backoff_cap = 2.0
    call_budget = 10.0  # no retry starts after this many seconds into a call
    call_timeout = 13.0  # a call is cut off here, so the customer hears back within 15 s
    reconcile_checks = 3  # looks for a ticket whose POST timed out
    reconcile_interval = 1.0
    ping_poll_interval = 0.3
    ping_poll_cap = 1.0

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: WispHubSettings,
        *,
        tz: ZoneInfo,
        clock: Callable[[], datetime] | None = None,
        country_code: str = "57",
    ) -> None:
        self._http = http
        self._owns_http = False
        self._settings = settings
        self._base = str(settings.api_url)
        self._tz = tz
        self._clock = clock or (lambda: datetime.now(tz))
        self._country_code = country_code
        self._timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        # Built once; None without a key, and every request then fails as misconfigured.
        self._headers = (
            {"Authorization": f"Api-Key {key}", "Accept": "application/json"} if key else None
        )
        self._sem = asyncio.Semaphore(settings.max_concurrency)
        # When WispHub last accepted the key (monotonic), and whether a refused key was already
        # reported: a bad key is said once, clearly, not on every customer's message.
        self._key_ok_at: float | None = None
        self._bad_key_reported = False
        self.stats = RequestStats()
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset)
        # Called after every HTTP attempt with (endpoint, outcome, seconds): metrics hook.
        self.observer: Callable[[str, str, float], None] | None = None
        # Which cached document/phone look-ups returned a service, so a write to that service
        # can drop them too. Bounded like those two caches: a service forgotten here has its
        # look-ups evicted already, or they expire within the short TTL.
        self._keys_by_service: LRUCache[int, set[tuple[str, str]]] = LRUCache(2 * _CACHE_SIZE)
        short, long_ = settings.client_cache_ttl, settings.catalog_cache_ttl
        # Built per instance so the TTLs come from settings, not from import time.
        self._by_document = alru_cache(maxsize=_CACHE_SIZE, ttl=short)(self._fetch_by_document)
        self._by_phone = alru_cache(maxsize=_CACHE_SIZE, ttl=short)(self._fetch_by_phone)
        self._by_service = alru_cache(maxsize=_CACHE_SIZE, ttl=short)(self._fetch_by_service)
        self._open = alru_cache(maxsize=1, ttl=short)(self._fetch_open_tickets)
        self._plans = alru_cache(maxsize=1, ttl=long_)(self._fetch_plans)
        self._methods = alru_cache(maxsize=1, ttl=long_)(self._fetch_payment_methods)
        _guard_httpx_logs()

    @classmethod
    def build(
        cls, settings: WispHubSettings, *, tz: ZoneInfo, country_code: str = "57"
    ) -> WispHubClient:
        """A client with its own connection pool sized and timed from settings."""
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            # httpx's API over aiohttp's wire: half the CPU a request (see transport.py).
            transport=AiohttpTransport(max_connections=settings.max_concurrency),
            headers={"User-Agent": "wispbot"},
            follow_redirects=False,
        )
        client = cls(http, settings, tz=tz, country_code=country_code)
        client._owns_http = True
        return client

    async def aclose(self) -> None:
        """Drop the caches and close the HTTP pool if this client created it."""
        self.invalidate()
        if self._owns_http:
            await self._http.aclose()

    # ----------------------------------------------------------------------------- look-ups

    async def find_by_document(self, document: str) -> list[Client]:
        """Clients whose ``cedula`` equals ``document`` (compared digit by digit)."""
        key = digits(document)
        if not key:
            return []
        return list(await self._by_document(key))

    async def find_by_phone(self, phone: str) -> list[Client]:
        """Clients with a phone equal to (or ending with) a national form of ``phone``: each
        form (``national_forms``: a WhatsApp number with its mobile token, without it, ...)
        is searched in turn until one matches."""
        for key in national_forms(phone, self._country_code):
            if len(key) >= MIN_PHONE_DIGITS and (found := await self._by_phone(key)):
                return list(found)
        return []

    async def find_by_service(self, service_id: int) -> Client | None:
        """The client record of one service, from the (richer) list endpoint."""
        return await self._by_service(int(service_id))

    async def _fetch_by_document(self, document: str) -> tuple[Client, ...]:
        logger.debug("looking up a document", extra={"document": mask(document)})
        records = await self._get_all("/clientes/", "clientes/", {"cedula": document})
        matches = [r for r in records if digits(r.get("cedula")) == document]
        found = tuple(_parse_many(Client, matches, "client"))
        self._remember(found, ("document", document))
        return found

    async def _fetch_by_phone(self, national: str) -> tuple[Client, ...]:
        logger.debug("looking up a phone", extra={"phone": mask(national)})
        records = await self._get_all("/clientes/", "clientes/", {"telefono__contains": national})
        rough = [r for r in records if national in digits(r.get("telefono"))]
        found = tuple(
            c
            for c in _parse_many(Client, rough, "client")
            if any(p == national or p.endswith(national) for p in c.phones)
        )
        self._remember(found, ("phone", national))
        return found

    async def _fetch_by_service(self, service_id: int) -> Client | None:
        records = await self._get_all("/clientes/", "clientes/", {"id_servicio": service_id})
        matches = [r for r in records if str(r.get("id_servicio")) == str(service_id)]
        found = _parse_many(Client, matches[:1], "client")
        return found[0] if found else None

    def _remember(self, clients: Iterable[Client], key: tuple[str, str]) -> None:
        for c in clients:
            self._keys_by_service.setdefault(c.service_id, set()).add(key)

    def invalidate(
        self,
        *,
        service_id: int | None = None,
        document: str | None = None,
        phone: str | None = None,
    ) -> None:
        """Drop cached look-ups after a write; with no argument, drop everything."""
        if service_id is None and document is None and phone is None:
            for cache in (
                self._by_document,
                self._by_phone,
                self._by_service,
                self._open,
                self._plans,
                self._methods,
            ):
                cache.cache_clear()
            self._keys_by_service.clear()
            return
        if document is not None:
            self._by_document.cache_invalidate(digits(document))
        if phone is not None:
            for key in national_forms(phone, self._country_code):
                self._by_phone.cache_invalidate(key)
        if service_id is not None:
            self._by_service.cache_invalidate(int(service_id))
            # Open tickets are fetched for the whole ISP at once and filtered per service.
            self._open.cache_clear()
            for kind, key in self._keys_by_service.pop(int(service_id), set()):
                cache = self._by_document if kind == "document" else self._by_phone
                cache.cache_invalidate(key)

    # ----------------------------------------------------------------------------- catalogue

    async def plans(self) -> list[Plan]:
        """The plan catalogue with prices (list merged with each plan's pppoe/queue detail)."""
        plans, refresh_at = await self._plans()
        if refresh_at is not None and time.monotonic() >= refresh_at:
            # A detail failed for a passing reason: fetch again, but only after a short while.
            self._plans.cache_clear()
            plans, _ = await self._plans()
        return list(plans)

    async def _fetch_plans(self) -> tuple[tuple[Plan, ...], float | None]:
        """The catalogue, and when to fetch it again early (None: keep it for the long TTL)."""
        deadline = self._deadline()
        listed = await self._get_all("/plan-internet/", "plan-internet/", {}, deadline=deadline)
        details = await asyncio.gather(*(self._plan_detail(p, deadline) for p in listed))
        merged = []
        for raw, (detail, _) in zip(listed, details, strict=True):
            # The detail carries the price; the list's id, name and kind stay authoritative.
            record = {k: v for k, v in (detail or {}).items() if v not in (None, "")}
            record.update({k: v for k, v in raw.items() if v not in (None, "")})
            if detail and detail.get("precio") not in (None, ""):
                record["precio"] = detail["precio"]
            merged.append(record)
        plans = tuple(_parse_many(Plan, merged, "plan"))
        # Even a catalogue with a missing price is kept: refetching every plan for every
        # customer is what piles requests on WispHub. A passing failure is retried sooner.
        passing = any(transient for _, transient in details)
        refresh_at = time.monotonic() + self._settings.client_cache_ttl if passing else None
        return plans, refresh_at

    async def _plan_detail(
        self, raw: dict[str, Any], deadline: _Deadline
    ) -> tuple[dict[str, Any] | None, bool]:
        """A plan's detail (None when there is none) and whether its absence may pass."""
        kind = str(raw.get("tipo", "")).upper()
        plan_id = digits(raw.get("id"))
        if not plan_id or "PCQ" in kind:
            # WispHub exposes no detail for PCQ (queue-tree) plans: asking only costs a 404.
            return None, False
        sub = "pppoe" if "PPPOE" in kind else "queue"
        try:
            body = await self._request(
                "GET",
                f"/plan-internet/{sub}/{{id}}/",
                f"plan-internet/{sub}/{plan_id}/",
                deadline=deadline,
            )
        except WispHubError as err:
            logger.warning(
                "plan detail unavailable; its price stays unknown",
                extra={"plan_id": plan_id, "error": type(err).__name__},
            )
            return None, isinstance(err, WispHubUnavailable)
        return (body if isinstance(body, dict) else None), False

    async def payment_methods(self) -> list[PaymentMethod]:
        """The ISP's ways to pay."""
        return list(await self._methods())

    async def _fetch_payment_methods(self) -> tuple[PaymentMethod, ...]:
        records = await self._get_all("/formas-de-pago/", "formas-de-pago/", {})
        return tuple(_parse_many(PaymentMethod, records, "payment method"))

    # ----------------------------------------------------------------------------- tickets

    async def open_tickets(self, service_id: int) -> list[Ticket]:
        """Open (Nuevo, En Progreso) tickets of one service, newest first."""
        tickets = await self._open()
        return [t for t in tickets if t.service_id == int(service_id)]

    async def _fetch_open_tickets(self) -> tuple[Ticket, ...]:
        tickets = await self._fetch_open_tickets_within(self._deadline())
        oldest = datetime.min.replace(tzinfo=self._tz)
        return tuple(
            sorted(tickets, key=lambda t: (self._aware(t.opened_at) or oldest, t.id), reverse=True)
        )

    async def create_ticket(self, req: TicketRequest) -> Ticket:
        """File one ticket with ONE multipart POST; an unknown outcome is reconciled, not resent."""
        deadline = self._deadline()
        technician = req.technician_id or self._settings.technician_id
        if technician is None:
            # WispHub requires a technician: the one assigned to the client's record.
            record = await self.find_by_service(req.service_id)
            if record is not None and record.technician is not None:
                technician = record.technician.id
        if req.recheck:
            found = self._matching_ticket(req, await self._fetch_open_tickets_within(deadline))
            if found is not None:
                self._open.cache_clear()
                logger.info(
                    "ticket of an earlier unconfirmed POST found; not sent again",
                    extra={"ticket_id": found.id, "service_id": req.service_id},
                )
                return found
        fields = self._ticket_fields(req, technician)
        # Every field as a nameless file part: httpx then sends multipart/form-data even with no
        # attachment (WispHub answers JSON with an opaque 500 and urlencoded with 415).
        files = {name: (None, value.encode()) for name, value in fields.items()}
        try:
            body = await self._request(
                "POST", "/tickets/", "tickets/", files=files, retry=False, deadline=deadline
            )
            ticket = Ticket.model_validate(body)
        except _Transient as err:
            if not err.sent:
                raise
            return await self._reconcile(req, deadline, err)
        except ValidationError as err:
            # WispHub said yes but the answer is unreadable: the ticket probably exists.
            unreadable = _Transient(
                "WispHub's answer to the ticket is unreadable", sent=True, answered=True
            )
            unreadable.__cause__ = err
            return await self._reconcile(req, deadline, unreadable)
        finally:
            self._open.cache_clear()
        logger.info(
            "ticket created",
            extra={
                "endpoint": "POST /tickets/",
                "ticket_id": ticket.id,
                "service_id": req.service_id,
            },
        )
        return ticket

    def _ticket_fields(self, req: TicketRequest, technician: int | None) -> dict[str, str]:
        start = self._aware(req.requested_at) or self._clock()
        start = start.astimezone(self._tz)
        end = start + timedelta(hours=SLA_HOURS.get(req.priority, 24))
        fields = {
            "servicio": str(req.service_id),
            "asunto": req.subject,
            "asuntos_default": req.subject,
            "descripcion": req.description,
            "estado": "1",
            "prioridad": req.priority,
            "departamento": req.department,
            "departamentos_default": req.department,
            "origen_reporte": req.origin,
            "fecha_inicio": start.strftime(_WISPHUB_DATETIME),
            "fecha_final": end.strftime(_WISPHUB_DATETIME),
        }
        if technician is not None:
            fields["tecnico"] = str(technician)
        return fields

    async def _reconcile(self, req: TicketRequest, deadline: _Deadline, err: _Transient) -> Ticket:
        logger.warning(
            "ticket POST outcome unknown; looking for the ticket instead of resending",
            extra={"endpoint": "POST /tickets/", "service_id": req.service_id},
        )
        # A server that replied is done with the request: one look settles it. After a timeout
        # it may still be writing the ticket, so look again while the call's time allows.
        checks = 1 if err.answered else self.reconcile_checks
        for check in range(checks):
            try:
                tickets = await self._fetch_open_tickets_within(deadline)
            except WispHubError as lookup_err:
                msg = "WispHub did not confirm the ticket and could not be checked; try later"
                raise TicketUnconfirmed(msg) from lookup_err
            found = self._matching_ticket(req, tickets)
            if found is not None:
                logger.info(
                    "ticket found after an unknown POST outcome",
                    extra={"ticket_id": found.id, "service_id": req.service_id},
                )
                return found
            if check + 1 < checks and deadline.remaining > self.reconcile_interval + 1.0:
                await asyncio.sleep(self.reconcile_interval)
            else:
                break
        msg = "WispHub did not confirm the ticket and it was not found; try again later"
        raise TicketUnconfirmed(msg) from err

    def _matching_ticket(self, req: TicketRequest, tickets: Iterable[Ticket]) -> Ticket | None:
        """The newest open ticket that is this request: same service, subject and description.

        Real ticket items often lack ``fecha_creacion``: time only excludes a ticket whose
        ``fecha_creacion`` is before the request. The planned start is no proof (a tenant may
        plan from midnight), and an older open ticket with the same words is the same report.
        """
        since = (self._aware(req.requested_at) or self._clock()) - RECONCILE_SKEW
        subject = req.subject.strip().casefold()
        description = _plain(req.description)
        candidates = [
            t
            for t in tickets
            if t.service_id == req.service_id
            and t.subject.strip().casefold() == subject
            and _plain(t.description) == description
            and ((created := self._aware(t.created_at)) is None or created >= since)
        ]
        return max(candidates, key=lambda t: t.id) if candidates else None

    async def _fetch_open_tickets_within(self, deadline: _Deadline) -> list[Ticket]:
        """Tickets in state 1 (Nuevo) and 2 (En Progreso); WispHub cannot filter by client."""
        pages = await asyncio.gather(
            *(
                self._get_all("/tickets/", "tickets/", {"estado": e}, deadline=deadline)
                for e in (1, 2)
            )
        )
        seen: dict[int, Ticket] = {}
        for t in _parse_many(Ticket, (r for page in pages for r in page), "ticket"):
            seen.setdefault(t.id, t)
        return list(seen.values())

    # ----------------------------------------------------------------------------- money

    async def pending_invoices(self, username: str) -> list[Invoice]:
        """Unpaid invoices of the client whose ``usuario`` slug is ``username``."""
        wanted = username.strip()
        if not wanted:
            return []
        records = await self._get_all("/facturas/", "facturas/", {"cliente": wanted, "estado": 1})
        invoices = _parse_many(Invoice, records, "invoice")
        return [
            i
            for i in invoices
            if i.client is not None
            and i.client.username.strip().casefold() == wanted.casefold()
            and (i.status.strip().lower().startswith("pendiente") or i.status.strip() == "1")
        ]

    async def payment_promise(
        self, invoice_id: int, deadline: date, action: str = "Promesa de pago por chatbot"
    ) -> None:
        """Register a promise to pay ``invoice_id`` by ``deadline``; sent once, never retried."""
        payload = {
            "id_factura": invoice_id,
            "fecha_limite": deadline.isoformat(),
            "accion": action,
        }
        await self._request("POST", "/promesa-pago/", "promesa-pago/", json=payload, retry=False)
        logger.info("payment promise registered", extra={"invoice_id": invoice_id})

    # ----------------------------------------------------------------------------- network

    async def ping(self, service_id: int) -> PingResult:
        """Ask the router to ping the client's equipment and classify what came back."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + self._settings.ping_deadline
        body = await self._request(
            "POST",
            "/clientes/{id}/ping/",
            f"clientes/{int(service_id)}/ping/",
            json={"pings": 3},
            retry=False,
        )
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if not task_id:
            logger.warning("ping answered without a task id", extra={"service_id": service_id})
            return PingResult(status="unknown")
        interval = self.ping_poll_interval
        while True:
            left = ends - loop.time()
            if left <= 0:
                logger.info("ping task still running at the deadline", extra={"task": task_id})
                return PingResult(status="unknown")
            await asyncio.sleep(min(interval, left))
            interval = min(interval * 1.5, self.ping_poll_cap)
            try:
                poll = await self._request(
                    "GET",
                    "/tasks/{id}/",
                    f"tasks/{task_id}/",
                    retry=False,
                    deadline=_Deadline(soft=0, hard=max(ends - loop.time(), 0.1)),
                )
            except WispHubError as err:
                if isinstance(err, WispHubUnavailable):
                    continue  # a slow poll is not a verdict; try again until the deadline
                logger.warning("ping task unreadable", extra={"error": type(err).__name__})
                return PingResult(status="unknown")
            task = poll.get("task") if isinstance(poll, dict) else None
            status = str(task.get("status", "")).upper() if isinstance(task, dict) else ""
            if status in {"PENDING", "PROCESS", "STARTED", "RECEIVED", "RETRY"}:
                continue
            if status == "SUCCESS" and isinstance(task, dict):
                result = classify_ping(task.get("result"))
                logger.info(
                    "ping classified", extra={"service_id": service_id, "ping": result.status}
                )
                return result
            logger.info("ping task failed", extra={"service_id": service_id, "task": status})
            return PingResult(status="unknown")

    async def ping_server(self) -> None:
        """Readiness probe: one cheap authenticated request; raises a ``WispHubError``."""
        await self._request(
            "GET", "/clientes/", "clientes/", params={"limit": 1, "offset": 0}, retry=False
        )

    # ----------------------------------------------------------------------------- transport

    def _deadline(self) -> _Deadline:
        return _Deadline(self.call_budget, self.call_timeout)

    def _aware(self, moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=self._tz)

    async def _get_all(
        self,
        label: str,
        path: str,
        params: Mapping[str, Any],
        *,
        deadline: _Deadline | None = None,
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
        deadline: _Deadline | None = None,
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
        deadline: _Deadline | None,
    ) -> Any:
        deadline = deadline or self._deadline()
        retries = self._settings.retries if retry and method == "GET" else 0
        attempt = 0
        while True:
            try:
                return await self._send(method, label, path, params, json, files, deadline)
            except _Transient as err:
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
                self.stats.retries += 1
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
        deadline: _Deadline,
    ) -> Any:
        headers = self._headers
        if headers is None:
            msg = "WISPHUB_API_KEY is not set"
            raise WispHubConfigError(msg)
        name = f"{method} {label}"
        remaining = deadline.remaining
        if remaining <= 0:
            msg = f"WispHub took too long ({name})"
            raise _Transient(msg, sent=False)
        url = self._base + path
        started = time.monotonic()
        sent = False
        try:
            async with asyncio.timeout(remaining):
                async with self._sem:
                    self.stats.requests[name] += 1
                    sent = True
                    response = await self._http.request(
                        method,
                        url,
                        params=params,
                        json=json,
                        files=files,
                        headers=headers,
                        timeout=self._timeout,
                    )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
            self._observe(name, "unreachable", started)
            self.stats.errors[name] += 1
            msg = f"cannot reach WispHub ({name}): {type(err).__name__}"
            raise _Transient(msg, sent=False) from err
        except (httpx.RequestError, TimeoutError) as err:
            self._observe(name, "timeout", started)
            self.stats.errors[name] += 1
            msg = f"WispHub did not answer in time ({name}): {type(err).__name__}"
            # A timeout while waiting for the semaphore never reached WispHub.
            raise _Transient(msg, sent=sent) from err
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        status = response.status_code
        self._observe(name, str(status), started)
        log_extra = {"endpoint": name, "status": status, "duration_ms": duration_ms}
        logger.debug("WispHub answered", extra=log_extra)
        try:
            return self._check(name, response)
        except WispHubError as err:
            self.stats.errors[name] += 1
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
            raise _Transient(msg, sent=True, answered=True)
        if status == 429:
            after = response.headers.get("retry-after", "")
            retry_after = float(after) if after.replace(".", "", 1).isdigit() else None
            msg = f"WispHub is rate limiting ({name})"
            raise _Transient(msg, sent=True, answered=True, retry_after=retry_after)
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
            raise _Transient(msg, sent=True, answered=True)
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
            raise _Transient(msg, sent=True, answered=True) from err


__all__ = ["RequestStats", "WispHubClient", "classify_ping", "mask", "national_number"]
