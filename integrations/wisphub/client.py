"""Async client for the WispHub Net REST API: clients, tickets, invoices, plans, promises, pings.

Every call goes through the request path of ``integrations.wisphub.pipeline`` (auth, retries,
circuit breaker, deadlines, the exception tree). A ticket POST whose outcome is unknown
(timeout, 5xx, unreadable answer) is reconciled by looking for the ticket instead of being sent
again, because WispHub has no idempotency and a second POST makes a second ticket.

WispHub silently ignores filters it does not know and then returns every client, so every
look-up keeps only the records whose field really equals the searched key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from async_lru import alru_cache
from cachetools import LRUCache
from pydantic import ValidationError

from integrations.wisphub.errors import (
    TicketUnconfirmed,
    WispHubError,
    WispHubNotFound,
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
from integrations.wisphub.phones import MIN_PHONE_DIGITS, national_forms
from integrations.wisphub.ping import classify_ping
from integrations.wisphub.pipeline import Deadline, RequestPipeline, Transient
from integrations.wisphub.settings import WispHubSettings
from integrations.wisphub.tickets import RECONCILE_SKEW, matching_ticket, ticket_fields
from integrations.wisphub.transport import AiohttpTransport

logger = logging.getLogger(__name__)

_CACHE_SIZE = 4096


def digits(text: object) -> str:
    """Only the digits of ``text`` (documents and phones are compared this way)."""
    return re.sub(r"\D", "", "" if text is None else str(text))


def mask(value: str) -> str:
    """Hide all but the last 3 characters of a document or phone number, for logs."""
    return "*" * max(len(value) - 3, 0) + value[-3:]


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


class WispHubClient(RequestPipeline):
    """The WispHub Net API as typed async calls, with retries, deadlines and caching."""

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
        super().__init__(http, settings)
        self._tz = tz
        self._clock = clock or (lambda: datetime.now(tz))
        self._country_code = country_code
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

    @classmethod
    def build(
        cls, settings: WispHubSettings, *, tz: ZoneInfo, country_code: str = "57"
    ) -> WispHubClient:
        """A client with its own connection pool sized and timed from settings."""
        # httpx's API over aiohttp's wire: half the CPU a request (see transport.py).
        transport = AiohttpTransport(max_connections=settings.max_concurrency)
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        headers = {"User-Agent": "wispbot"}
        http = httpx.AsyncClient(timeout=timeout, transport=transport, headers=headers)
        client = cls(http, settings, tz=tz, country_code=country_code)
        client._owns_http, client._direct = True, transport  # called directly: see pipeline
        return client

    async def aclose(self) -> None:
        """Drop the caches and close the HTTP pool if this client created it."""
        self.invalidate()
        if self._owns_http:
            self._direct = None  # a call after this fails as on any closed httpx client
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

    async def fresh_client(self, service_id: int) -> Client | None:
        """The record of one service read now, not cached (the notices' polls)."""
        self._by_service.cache_invalidate(int(service_id))
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
        self, raw: dict[str, Any], deadline: Deadline
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

    async def ticket(self, ticket_id: int) -> Ticket | None:
        """One ticket as it is now (its status for the notices), or None when there is none."""
        try:
            raw = await self._request("GET", "/tickets/{id}/", f"tickets/{int(ticket_id)}/")
        except WispHubNotFound:
            return None
        found = _parse_many(Ticket, [raw] if isinstance(raw, dict) else [], "ticket")
        return found[0] if found else None

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
        start = (self._aware(req.requested_at) or self._clock()).astimezone(self._tz)
        fields = ticket_fields(req, technician, start)
        # Every field as a nameless file part: httpx then sends multipart/form-data even with no
        # attachment (WispHub answers JSON with an opaque 500 and urlencoded with 415).
        files = {name: (None, value.encode()) for name, value in fields.items()}
        try:
            body = await self._request(
                "POST", "/tickets/", "tickets/", files=files, retry=False, deadline=deadline
            )
            ticket = Ticket.model_validate(body)
        except Transient as err:
            if not err.sent:
                raise
            return await self._reconcile(req, deadline, err)
        except ValidationError as err:
            # WispHub said yes but the answer is unreadable: the ticket probably exists.
            unreadable = Transient(
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

    async def _reconcile(self, req: TicketRequest, deadline: Deadline, err: Transient) -> Ticket:
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

    async def _fetch_open_tickets_within(self, deadline: Deadline) -> list[Ticket]:
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
                    deadline=Deadline(soft=0, hard=max(ends - loop.time(), 0.1)),
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

    def _aware(self, moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=self._tz)

    def _matching_ticket(self, req: TicketRequest, tickets: Iterable[Ticket]) -> Ticket | None:
        since = (self._aware(req.requested_at) or self._clock()) - RECONCILE_SKEW
        return matching_ticket(req, tickets, since=since, aware=self._aware)


__all__ = ["WispHubClient", "digits", "mask"]
