"""The WispHub client over real HTTP against the sandbox serving the shapes real tenants return
(fixtures in tests/fixtures/wisphub/, each naming its source): ping summaries of clients behind
a firewall, "None" strings in records, tickets without ``fecha_creacion``, PCQ plans without a
detail, the subject catalogue, and 403 answers to a burst."""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fixtures import fixture

from integrations.wisphub.breaker import CircuitOpen
from integrations.wisphub.client import WispHubClient
from integrations.wisphub.errors import (
    TicketUnconfirmed,
    WispHubConfigError,
    WispHubRejected,
    WispHubUnavailable,
)
from integrations.wisphub.models import TicketRequest
from integrations.wisphub.sandbox import SANDBOX_API_KEY, Sandbox, running_sandbox
from integrations.wisphub.settings import WispHubSettings

TZ = ZoneInfo("America/Bogota")
RECORDS = fixture("wisphub/records.yaml")

Serve = Callable[..., AbstractAsyncContextManager[tuple[Sandbox, WispHubClient]]]


@pytest.fixture
def serve() -> Serve:
    """A sandbox with ``data`` (raw wire records by kind) and a client of it over HTTP."""

    @asynccontextmanager
    async def run(
        data: dict[str, list[dict[str, Any]]] | None = None, **over: Any
    ) -> AsyncIterator[tuple[Sandbox, WispHubClient]]:
        async with running_sandbox(Sandbox(copy.deepcopy(data))) as sb:
            values: dict[str, Any] = {"api_url": sb.url, "api_key": SANDBOX_API_KEY}
            values.update(over)
            wh = WispHubClient.build(WispHubSettings(**values), tz=TZ)
            wh.backoff_base = 0.001
            wh.ping_poll_interval = 0.001
            try:
                yield sb, wh
            finally:
                await wh.aclose()

    return run


def calls(sb: Sandbox, method: str, path: str) -> int:
    return sum(1 for r in sb.requests if r.method == method and r.path == path)


def request(subject: str, description: str, *, recheck: bool = False) -> TicketRequest:
    return TicketRequest(
        service_id=10,
        subject=subject,
        description=description,
        priority="3",
        technician_id=7,
        requested_at=datetime.now(UTC),
        recheck=recheck,
    )


# --------------------------------------------------------------------------- 8. ping summaries


async def test_the_sandbox_serves_a_firewalled_clients_ping_as_wisphub_does(serve: Serve) -> None:
    async with serve() as (sb, wh):
        result = await wh.ping(15)  # the demo's business service, behind a firewall
        task = next(iter(sb._tasks.values()))

    lines = [v for item in task.result for k, v in item.items() if k != "ping-exitoso"]
    assert [line["status"] for line in lines] == ["timeout", "host unreachable", "timeout"]
    assert all(line["received"] == "0" for line in lines)  # no line counts as a reply ...
    assert task.result[-1] == {"ping-exitoso": "1 de 3"}  # ... WispHub's summary does
    assert (result.status, result.received, result.sent) == ("partial", 1, 3)


# --------------------------------------------------------------------------- 9. "None" strings


async def test_a_record_with_none_strings_is_found_with_those_fields_absent(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    record = RECORDS["client_with_none_strings"]
    garbled = {
        **record,
        "id_servicio": 22,
        "fecha_corte": "31/02/2026",
        "router": "None",
        "saldo": "None",
        "tecnico": "sin asignar",
    }
    caplog.set_level(logging.DEBUG, logger="integrations.wisphub.models")
    async with serve({"clients": [record, garbled]}) as (_, wh):
        found = await wh.find_by_document(record["cedula"])

    assert sorted(c.service_id for c in found) == [21, 22]
    marta = next(c for c in found if c.service_id == 21)
    assert marta.name == "Marta Lucía Rojas"
    assert (marta.cutoff_date, marta.installed_at, marta.email) == (None, None, "")
    assert marta.plan is not None
    assert marta.plan.name == "Hogar 50 Mbps"
    other = next(c for c in found if c.service_id == 22)
    assert (other.cutoff_date, other.router, other.technician) == (None, None, None)
    assert other.balance == 0
    # The unreadable field is named at debug level; its value is not logged.
    logged = [r for r in caplog.records if r.getMessage().startswith("unreadable optional")]
    assert {getattr(r, "field", None) for r in logged} >= {"cutoff_date", "technician"}
    assert "31/02/2026" not in caplog.text


# --------------------------------------------------------------------------- 10. tickets


async def test_a_ticket_made_behind_a_502_is_found_without_fecha_creacion(serve: Serve) -> None:
    async with serve({"tickets": RECORDS["open_tickets"]}) as (sb, wh):
        sb.add_fault("^/tickets/$", method="POST", status=502, after=True)
        before = len(sb.tickets)
        # Same subject and description as the open ticket 5102, which is older than the request.
        ticket = await wh.create_ticket(
            request("No Tiene Internet", "No tengo internet desde ayer en ningún equipo")
        )

        assert calls(sb, "POST", "/tickets/") == 1
        assert len(sb.tickets) == before + 1
        made = sb.tickets[-1]
        assert "fecha_creacion" not in made
        assert ticket.id == made["id_ticket"] == 5118  # the newest, not the older 5102
        assert ticket.opened_at is not None
        listed = await wh.open_tickets(10)
    assert [t.id for t in listed] == [5118, 5102]  # newest first, "Abierto" counts as open
    assert [t.priority for t in listed] == ["3", "3"]


async def test_confirming_again_after_an_unconfirmed_post_looks_first_and_never_duplicates(
    serve: Serve,
) -> None:
    async with serve({"tickets": RECORDS["open_tickets"]}) as (sb, wh):
        sb.add_fault("^/tickets/$", method="POST", status=502, after=True)
        sb.add_fault("^/tickets/$", method="GET", status=503, count=6)  # the look fails too
        req = request("Internet Intermitente", "Se cae cada rato")
        with pytest.raises(TicketUnconfirmed):
            await wh.create_ticket(req)
        sb.clear_faults()

        again = await wh.create_ticket(req.model_copy(update={"recheck": True}))

        assert calls(sb, "POST", "/tickets/") == 1
        assert again.id == sb.tickets[-1]["id_ticket"]
        assert sum(1 for t in sb.tickets if t["asunto"] == "Internet Intermitente") == 1


# --------------------------------------------------------------------------- 11. PCQ plans


async def test_pcq_plans_are_not_asked_for_a_detail_and_the_catalogue_is_cached(
    serve: Serve,
) -> None:
    async with serve() as (sb, wh):
        for _ in range(3):
            plans = await wh.plans()

    # Three look-ups: one list and one detail per non-PCQ plan (the details go out together).
    made = sorted(r.path for r in sb.requests)
    assert made == [
        "/plan-internet/",
        "/plan-internet/pppoe/1/",
        "/plan-internet/pppoe/2/",
        "/plan-internet/queue/3/",
    ], made
    pcq = next(p for p in plans if p.kind == "PCQ")
    assert pcq.price is None
    assert all(p.price is not None for p in plans if p.kind != "PCQ")


# --------------------------------------------------------------------------- 12. subjects


async def test_every_default_subject_is_one_wisphub_accepts(serve: Serve) -> None:
    settings = WispHubSettings()
    async with serve() as (sb, wh):
        for category in ("no_internet", "slow", "intermittent", "other"):
            subject, _ = settings.subject_for(category)
            ticket = await wh.create_ticket(request(subject, f"prueba {category}"))
            assert ticket.subject == subject
        with pytest.raises(WispHubRejected, match="asuntos_default"):
            await wh.create_ticket(request("Otro", "un asunto fuera del catálogo"))
    assert calls(sb, "POST", "/tickets/") == 5


# --------------------------------------------------------------------------- 13. 403 bursts


async def test_a_403_right_after_accepted_calls_is_throttling_and_backs_off(serve: Serve) -> None:
    async with serve() as (sb, wh):
        assert await wh.find_by_document("1020304050")
        sb.add_fault("^/clientes/", status=403, count=1)
        wh.invalidate()

        found = await wh.find_by_document("1020304050")

        assert [c.service_id for c in found] == [10]
        assert calls(sb, "GET", "/clientes/") == 3  # the first look-up, the 403, one retry
        assert wh.breaker.state == "closed"


async def test_throttling_403s_count_for_the_circuit_breaker(serve: Serve) -> None:
    async with serve(breaker_failures=2, retries=1) as (sb, wh):
        await wh.ping_server()
        sb.add_fault("^/clientes/", status=403, count=None)
        for document in ("1020304050", "79856321"):
            with pytest.raises(WispHubUnavailable, match="throttling"):
                await wh.find_by_document(document)
        sent = len(sb.requests)

        with pytest.raises(CircuitOpen):
            await wh.find_by_document("52123456")
        assert len(sb.requests) == sent  # failing fast: WispHub is left alone


async def test_a_key_that_never_worked_is_reported_once_as_a_bad_key(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(api_key="not-the-key") as (sb, wh):
        for document in ("1020304050", "79856321", "52123456"):
            with pytest.raises(WispHubConfigError, match="API key"):
                await wh.find_by_document(document)
        assert calls(sb, "GET", "/clientes/") == 3  # a bad key is not retried
        assert wh.breaker.state == "closed"

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "WISPHUB_API_KEY" in errors[0].getMessage()
    assert "not-the-key" not in caplog.text
    assert calls(sb, "GET", "/clientes/") == 3
