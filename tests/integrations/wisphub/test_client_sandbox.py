"""WispHubClient over real HTTP against the sandbox and its demo data."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from integrations.wisphub.client import WispHubClient
from integrations.wisphub.errors import (
    WispHubConfigError,
    WispHubNotFound,
    WispHubRejected,
    WispHubUnavailable,
)
from integrations.wisphub.models import SECRET_FIELDS, Client, TicketRequest
from integrations.wisphub.sandbox import SANDBOX_API_KEY, Sandbox, running_sandbox
from integrations.wisphub.settings import WispHubSettings

TZ = ZoneInfo("America/Bogota")


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with running_sandbox(Sandbox(ping_polls=1)) as sandbox:
        yield sandbox


@pytest.fixture
async def make(sb: Sandbox) -> AsyncIterator[Callable[..., WispHubClient]]:
    made: list[WispHubClient] = []

    def factory(**over: Any) -> WispHubClient:
        values: dict[str, Any] = {"api_url": sb.url, "api_key": SANDBOX_API_KEY, "page_size": 100}
        values.update(over)
        c = WispHubClient.build(WispHubSettings(**values), tz=TZ)
        c.backoff_base = 0.001
        c.ping_poll_interval = 0.001
        c.reconcile_interval = 0.05
        made.append(c)
        return c

    yield factory
    for c in made:
        await c.aclose()


@pytest.fixture
def wh(make: Callable[..., WispHubClient]) -> WispHubClient:
    return make()


def raw_client(sb: Sandbox, service_id: int) -> dict[str, Any]:
    return next(c for c in sb.clients if c["id_servicio"] == service_id)


def api_calls(sb: Sandbox, method: str, path: str) -> list[Any]:
    return [r for r in sb.requests if r.method == method and r.path == path]


# --------------------------------------------------------------------------- look-ups


async def test_find_by_document(sb: Sandbox, wh: WispHubClient) -> None:
    found = await wh.find_by_document("1020304050")

    assert [c.service_id for c in found] == [10]
    ana = found[0]
    assert ana.name == "Ana María Ruiz Gómez"
    assert ana.phones == ("3001112233",)
    assert ana.first_name == "Ana"
    assert await wh.find_by_document("1111111") == []


async def test_one_person_with_two_services(wh: WispHubClient) -> None:
    found = await wh.find_by_document("1032456789")

    assert sorted(c.service_id for c in found) == [14, 15]
    assert len({c.address for c in found}) == 2


async def test_find_by_phone_in_international_form(wh: WispHubClient) -> None:
    assert [c.service_id for c in await wh.find_by_phone("+57 300 111 2233")] == [10]
    assert [c.service_id for c in await wh.find_by_phone("573001112233")] == [10]


async def test_find_by_phone_in_a_multi_number_field(wh: WispHubClient) -> None:
    for phone in ("3152223344", "+57 320 999 8877", "6014445566"):
        assert [c.service_id for c in await wh.find_by_phone(phone)] == [13], phone


async def test_find_by_service_reads_the_rich_list_record(sb: Sandbox, wh: WispHubClient) -> None:
    luz = await wh.find_by_service(12)
    carlos = await wh.find_by_service(11)

    assert luz is not None
    assert carlos is not None
    assert luz.has_outage
    assert luz.router is not None
    assert luz.router.outage_description
    assert luz.phones  # the detail endpoint would not have the phone
    assert carlos.suspended
    assert carlos.balance > 0
    assert await wh.find_by_service(999999) is None
    assert all(r.path == "/clientes/" for r in sb.requests)


async def test_pagination_walks_every_page_over_the_configured_base(
    sb: Sandbox, make: Callable[..., WispHubClient]
) -> None:
    wh = make(page_size=60)
    # A filter the server does not know is ignored and every client comes back: all pages must
    # be read (through ``offset``, never the http:// ``next`` the sandbox sends).
    records = await wh._get_all("/clientes/", "clientes/", {"documento": "1020304050"})

    assert len(records) == len(sb.clients) > 250
    offsets = [int(r.query["offset"]) for r in sb.requests]
    assert offsets == list(range(0, len(sb.clients), 60))
    assert all(r.query["limit"] == "60" for r in sb.requests)


async def test_lookup_sends_the_filter_with_limit_and_offset(
    sb: Sandbox, wh: WispHubClient
) -> None:
    await wh.find_by_document("52123456")

    (request,) = sb.requests
    assert request.path == "/clientes/"
    assert request.query == {"cedula": "52123456", "limit": "100", "offset": "0"}


# --------------------------------------------------------------------------- errors


async def test_wrong_base_url_is_a_config_error(
    sb: Sandbox, make: Callable[..., WispHubClient]
) -> None:
    wh = make(api_url=sb.url.removesuffix("api/"))

    with pytest.raises(WispHubConfigError, match="WISPHUB_API_URL"):
        await wh.find_by_document("1020304050")


async def test_wrong_key_is_a_config_error_without_the_key(
    make: Callable[..., WispHubClient],
) -> None:
    wh = make(api_key="not-the-key-123")

    with pytest.raises(WispHubConfigError, match="no tiene permiso") as info:
        await wh.ping_server()
    assert "not-the-key-123" not in str(info.value)


async def test_readiness_probe(wh: WispHubClient, sb: Sandbox) -> None:
    await wh.ping_server()
    assert sb.requests[0].query["limit"] == "1"


async def test_gets_are_retried_through_server_errors(sb: Sandbox, wh: WispHubClient) -> None:
    sb.add_fault("^/clientes/$", status=503, count=2)

    assert [c.service_id for c in await wh.find_by_document("80123456")] == [16]
    assert len(api_calls(sb, "GET", "/clientes/")) == 3


async def test_persistent_server_errors_are_unavailable(sb: Sandbox, wh: WispHubClient) -> None:
    sb.add_fault("^/clientes/$", status=500, count=None)

    with pytest.raises(WispHubUnavailable):
        await wh.find_by_document("80123456")
    assert len(api_calls(sb, "GET", "/clientes/")) == 3  # 1 + settings.retries


async def test_unknown_service_ping_is_not_found(wh: WispHubClient) -> None:
    with pytest.raises(WispHubNotFound):
        await wh.ping(999999)


# --------------------------------------------------------------------------- tickets


async def test_open_tickets_of_a_service(sb: Sandbox, wh: WispHubClient) -> None:
    tickets = await wh.open_tickets(16)

    expected = {
        t["id_ticket"]
        for t in sb.tickets
        if t["servicio"]["id_servicio"] == 16 and t["estado"] in ("Nuevo", "En Progreso")
    }
    assert {t.id for t in tickets} == expected
    assert expected
    assert all(t.is_open for t in tickets)
    assert await wh.open_tickets(10) == []


async def test_create_ticket_is_one_multipart_post(sb: Sandbox, wh: WispHubClient) -> None:
    before = len(sb.tickets)
    assert await wh.open_tickets(10) == []

    ticket = await wh.create_ticket(
        TicketRequest(
            service_id=10,
            subject="No Tiene Internet",
            description="Sin servicio desde las 8 am",
            priority="3",
            requested_at=datetime.now(UTC),
        )
    )

    assert len(sb.tickets) == before + 1
    assert ticket.id == sb.tickets[-1]["id_ticket"]
    assert ticket.subject == "No Tiene Internet"
    (post,) = api_calls(sb, "POST", "/tickets/")
    assert post.content_type == "multipart/form-data"
    assert post.fields["servicio"] == "10"
    assert post.fields["asuntos_default"] == "No Tiene Internet"
    assert post.fields["estado"] == "1"
    assert post.fields["tecnico"].isdigit()  # from the client record
    # The write dropped the cached (empty) open-ticket list.
    assert [t.id for t in await wh.open_tickets(10)] == [ticket.id]


async def test_create_ticket_500_is_not_retried(sb: Sandbox, wh: WispHubClient) -> None:
    sb.add_fault("^/tickets/$", status=500, method="POST")
    before = len(sb.tickets)

    with pytest.raises(WispHubUnavailable):
        await wh.create_ticket(
            TicketRequest(
                service_id=10,
                subject="Internet Lento",
                description="lento",
                technician_id=1,
                requested_at=datetime.now(UTC),
            )
        )

    assert len(api_calls(sb, "POST", "/tickets/")) == 1
    assert len(sb.tickets) == before


async def test_create_ticket_timeout_is_reconciled_not_resent(
    sb: Sandbox, make: Callable[..., WispHubClient]
) -> None:
    wh = make(read_timeout=0.2)
    wh.reconcile_interval = 0.4
    # The server takes longer than the client waits, then creates the ticket anyway: the first
    # look (at ~0.2 s) misses it, the second (at ~0.6 s) finds it.
    sb.add_fault("^/tickets/$", status=0, delay=0.3, method="POST")

    ticket = await wh.create_ticket(
        TicketRequest(
            service_id=10,
            subject="Internet Intermitente",
            description="se cae",
            technician_id=1,
            requested_at=datetime.now(UTC),
        )
    )

    assert len(api_calls(sb, "POST", "/tickets/")) == 1
    assert ticket.id == sb.tickets[-1]["id_ticket"]
    assert sb.tickets[-1]["asunto"] == "Internet Intermitente"


async def test_create_ticket_rejected_by_wisphub(sb: Sandbox, wh: WispHubClient) -> None:
    with pytest.raises(WispHubRejected, match="servicio"):
        await wh.create_ticket(
            TicketRequest(
                service_id=987654,
                subject="Internet Lento",
                description="x",
                technician_id=1,
                requested_at=datetime.now(UTC),
            )
        )
    assert len(api_calls(sb, "POST", "/tickets/")) == 1


# --------------------------------------------------------------------------- money, catalogue


async def test_pending_invoices_of_a_suspended_client(sb: Sandbox, wh: WispHubClient) -> None:
    carlos = await wh.find_by_service(11)
    assert carlos is not None

    invoices = await wh.pending_invoices(carlos.username)

    expected = {
        i["id_factura"]
        for i in sb.invoices
        if i["cliente"]["usuario"] == carlos.username and i["estado"] == "Pendiente de Pago"
    }
    assert {i.id for i in invoices} == expected
    assert len(invoices) == 2
    assert all(i.total > 0 for i in invoices)
    ana = await wh.find_by_service(10)
    assert ana is not None
    assert await wh.pending_invoices(ana.username) == []


async def test_payment_promise(sb: Sandbox, wh: WispHubClient) -> None:
    await wh.payment_promise(88001, date(2026, 12, 3))

    assert [p["id_factura"] for p in sb.promises] == [88001]
    assert sb.promises[0]["fecha_limite"] == "2026-12-03"
    assert len(api_calls(sb, "POST", "/promesa-pago/")) == 1


async def test_plans_have_prices(sb: Sandbox, wh: WispHubClient) -> None:
    plans = await wh.plans()

    prices = {p["id"]: p["precio"] for p in sb.plans if p["tipo"] != "PCQ"}
    assert {p.id for p in plans} == {p["id"] for p in sb.plans}
    # WispHub has no price for a PCQ plan (no detail): only those stay without one.
    assert all(p.price == float(prices[p.id]) for p in plans if p.kind != "PCQ")
    assert all(p.price is None for p in plans if p.kind == "PCQ")
    kinds = {p.kind for p in plans}
    assert "PPPOE" in kinds
    await wh.plans()
    assert len(api_calls(sb, "GET", "/plan-internet/")) == 1  # the catalogue is cached


async def test_a_failing_plan_detail_leaves_only_its_price_unknown(
    sb: Sandbox, wh: WispHubClient
) -> None:
    first = sb.plans[0]
    sub = "pppoe" if first["tipo"] == "PPPOE" else "queue"
    sb.add_fault(f"^/plan-internet/{sub}/{first['id']}/$", status=500, count=None)

    plans = await wh.plans()

    by_id = {p.id: p for p in plans}
    assert by_id[first["id"]].price is None
    assert all(p.price is not None for p in plans if p.id != first["id"] and p.kind != "PCQ")


async def test_payment_methods(sb: Sandbox, wh: WispHubClient) -> None:
    methods = await wh.payment_methods()
    assert [m.name for m in methods] == [m["nombre"] for m in sb.payment_methods]


# --------------------------------------------------------------------------- ping


@pytest.mark.parametrize(
    ("service_id", "expected"),
    [(10, "ok"), (13, "partial"), (12, "no_response"), (11, "no_response")],
)
async def test_ping(wh: WispHubClient, service_id: int, expected: str) -> None:
    result = await wh.ping(service_id)

    assert result.status == expected
    assert result.sent == 3


async def test_ping_router_failure_is_unknown(sb: Sandbox, wh: WispHubClient) -> None:
    raw_client(sb, 10)["_ping"] = "error"

    assert (await wh.ping(10)).status == "unknown"


# --------------------------------------------------------------------------- caching, secrets


async def test_concurrent_lookups_share_one_request(sb: Sandbox, wh: WispHubClient) -> None:
    results = await asyncio.gather(*(wh.find_by_document("1098765432") for _ in range(20)))

    assert [(r.method, r.path) for r in sb.requests] == [("GET", "/clientes/")]
    assert all([c.service_id for c in r] == [13] for r in results)


async def test_secrets_never_reach_models_or_logs(
    sb: Sandbox, wh: WispHubClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    named = [c for c in sb.clients if 10 <= c["id_servicio"] <= 16]
    secrets = {
        str(c[k]) for c in named for k in SECRET_FIELDS if c.get(k) not in (None, "", [], {})
    }
    assert secrets  # the sandbox records do carry them

    found: list[Client] = []
    for raw in named:
        found += await wh.find_by_document(raw["cedula"])
    await wh.find_by_phone("+57 300 111 2233")

    assert {c.service_id for c in found} == {c["id_servicio"] for c in named}
    shown = " ".join(repr(c) + c.model_dump_json() for c in found)
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in secrets:
        assert secret not in shown
        assert secret not in logged
    assert SANDBOX_API_KEY not in logged
    for raw in named:
        assert raw["cedula"] not in logged
    assert "3001112233" not in logged
    for c in found:
        assert not any(name.startswith(("password", "coordenadas")) for name in c.model_dump())


async def test_build_owns_and_closes_its_http_pool(sb: Sandbox) -> None:
    wh = WispHubClient.build(WispHubSettings(api_url=sb.url, api_key=SANDBOX_API_KEY), tz=TZ)
    await wh.ping_server()
    await wh.aclose()

    with pytest.raises(RuntimeError):
        await wh.ping_server()


async def test_injected_http_client_is_left_open(sb: Sandbox) -> None:
    async with httpx.AsyncClient() as http:
        wh = WispHubClient(http, WispHubSettings(api_url=sb.url, api_key=SANDBOX_API_KEY), tz=TZ)
        await wh.aclose()
        assert not http.is_closed


# --------------------------------------------------------------------------- notices (issue 15)


async def test_a_ticket_is_read_as_it_is_now_and_a_missing_one_is_none(
    sb: Sandbox, wh: WispHubClient
) -> None:
    ticket_id = int(sb.tickets[0]["id_ticket"])
    async with httpx.AsyncClient() as http:
        control = sb.url.removesuffix("api/") + "_sandbox/tickets"
        answer = await http.post(control, json={"id_ticket": ticket_id, "estado": "2"})
        assert answer.status_code == 200
        assert (await http.post(control, json={"id_ticket": 1, "estado": "3"})).status_code == 404
    found = await wh.ticket(ticket_id)
    assert found is not None
    assert found.status == "En Progreso"
    sb.set_ticket_status(ticket_id, "4")
    again = await wh.ticket(ticket_id)
    assert again is not None
    assert again.status == "Cerrado"
    assert await wh.ticket(999_999) is None


async def test_a_routers_outage_is_flipped_for_every_client_behind_it(
    sb: Sandbox, wh: WispHubClient
) -> None:
    before = await wh.fresh_client(12)  # the demo's outage, on router 2 ("OLT Norte")
    assert before is not None
    assert before.has_outage
    async with httpx.AsyncClient() as http:
        control = sb.url.removesuffix("api/") + "_sandbox/routers"
        answer = await http.post(control, json={"id": 2, "falla_general": False})
    assert 12 in answer.json()["updated"]
    after = await wh.fresh_client(12)  # read again, not from the cache
    assert after is not None
    assert not after.has_outage
