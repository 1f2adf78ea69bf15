"""WispHubClient against respx: look-ups, tickets, caching, catalogue, money, ping tasks."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
import respx
from fixtures import fixture
from wisphub_respx import (
    BASE,
    CLIENTS,
    KEY,
    SECRETS,
    ignoring_filters,
    page,
    ping_item,
    queries,
    record,
)

from integrations.wisphub.client import WispHubClient, mask
from integrations.wisphub.errors import (
    WispHubConfigError,
    WispHubRejected,
    WispHubUnavailable,
)
from integrations.wisphub.models import TicketRequest

PINGS = fixture("wisphub/ping_tasks.yaml")


# --------------------------------------------------------------------------- look-ups


async def test_find_by_document_keeps_only_the_exact_match_when_the_filter_is_ignored(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    found = await wh.find_by_document("102030405")

    assert [c.service_id for c in found] == [12]
    assert found[0].name == "Luz Marina Peña"
    # All three pages were read (the match could have been on any), each with the filter.
    assert [q["offset"] for q in queries(route)] == ["0", "2", "4"]
    assert all(q["cedula"] == "102030405" and q["limit"] == "2" for q in queries(route))


async def test_unknown_document_is_an_empty_list(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    assert await wh.find_by_document("999") == []


async def test_document_is_normalised_to_digits(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    found = await wh.find_by_document(" 1.020.304.050 ")

    assert [c.service_id for c in found] == [10]
    assert queries(route)[0]["cedula"] == "1020304050"
    assert await wh.find_by_document("   ") == []


async def test_find_by_phone_strips_country_code_and_matches_whole_numbers(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    found = await wh.find_by_phone("+57 300 111 2233")

    # 10 holds it exactly, 12 holds it with the country code; 11's "30011122334" only contains it.
    assert sorted(c.service_id for c in found) == [10, 12]
    assert queries(route)[0]["telefono__contains"] == "3001112233"


async def test_find_by_phone_reads_every_number_of_a_multi_number_field(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    for phone in ("3152223344", "+573209998877", "6014445566"):
        found = await wh.find_by_phone(phone)
        assert [c.service_id for c in found] == [13], phone
    assert found[0].phones == ("3152223344", "3209998877", "6014445566")


async def test_find_by_phone_searches_each_national_form_until_one_matches(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    """An Argentine WhatsApp number (549 + area + number) whose record holds it the local way,
    area + 15 + number: the likelier forms match nobody (WispHub, ignoring the filter, returns
    every client: each is checked here), then the national format's form finds the record."""
    argentine = record(15, "27111222", "Lucía Fernández", "111523456789")
    route = router.get("clientes/").mock(side_effect=ignoring_filters([*CLIENTS, argentine]))

    found = await wh.find_by_phone("+5491123456789")

    assert [c.service_id for c in found] == [15]
    searched = [q["telefono__contains"] for q in queries(route)]
    assert list(dict.fromkeys(searched)) == ["1123456789", "91123456789", "111523456789"]


async def test_too_short_phone_is_not_searched(router: respx.MockRouter, wh: WispHubClient) -> None:
    route = router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    assert await wh.find_by_phone("+57 12") == []
    assert route.call_count == 0


async def test_find_by_service_uses_the_list_endpoint_and_keeps_the_exact_record(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    found = await wh.find_by_service(13)
    missing = await wh.find_by_service(77)

    assert found is not None
    assert found.service_id == 13
    assert missing is None
    assert queries(route)[0]["id_servicio"] == "13"


# --------------------------------------------------------------------------- tickets

TICKET_REQ = TicketRequest(
    service_id=10,
    subject="No Tiene Internet",
    description="Sin servicio desde ayer. Luces del router en rojo.",
    priority="3",
    technician_id=7,
    requested_at=datetime(2026, 3, 2, 14, 30, tzinfo=UTC),
)


def multipart_fields(request: httpx.Request) -> dict[str, str]:
    """Parse a multipart/form-data body with the standard library's MIME parser."""
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    raw = b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + request.content
    msg = email.message_from_bytes(raw, policy=email.policy.HTTP)
    out = {}
    for part in msg.iter_parts():
        assert part.get_filename() is None  # plain fields, not file uploads
        name = part.get_param("name", header="content-disposition")
        out[str(name)] = bytes(part.get_payload(decode=True)).decode("utf-8")
    return out


def ticket_json(ticket_id: int, service_id: int, subject: str, created: str) -> dict[str, Any]:
    return {
        "id_ticket": ticket_id,
        "asunto": subject,
        # WispHub gives the description back as HTML.
        "descripcion": "<p>Sin servicio desde ayer. Luces del router en rojo.</p>",
        "estado": "Nuevo",
        "prioridad": "Alta",
        "fecha_creacion": created,
        "servicio": {"id_servicio": service_id, "nombre": "Ana"},
    }


async def test_create_ticket_sends_one_multipart_post_with_the_exact_fields(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    post = router.post("tickets/").mock(
        return_value=httpx.Response(
            201, json=ticket_json(4711, 10, "No Tiene Internet", "2026-03-02T09:30:05-05:00")
        )
    )

    ticket = await wh.create_ticket(TICKET_REQ)

    assert ticket.id == 4711
    assert post.call_count == 1
    request = post.calls[0].request
    assert str(request.url) == BASE + "tickets/"
    assert request.headers["authorization"] == f"Api-Key {KEY}"
    assert multipart_fields(request) == {
        "servicio": "10",
        "asunto": "No Tiene Internet",
        "asuntos_default": "No Tiene Internet",
        "descripcion": "Sin servicio desde ayer. Luces del router en rojo.",
        "estado": "1",
        "prioridad": "3",
        "tecnico": "7",
        "departamento": "Soporte Técnico",
        "departamentos_default": "Soporte Técnico",
        "origen_reporte": "redes_sociales",
        # 14:30 UTC is 09:30 in Bogotá; priority 3 gets a 24 h window.
        "fecha_inicio": "02/03/2026 09:30",
        "fecha_final": "03/03/2026 09:30",
    }


async def test_create_ticket_500_is_posted_once_and_raises_when_no_ticket_appeared(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    post = router.post("tickets/").mock(return_value=httpx.Response(500, text="boom"))
    tickets = router.get("tickets/").mock(side_effect=ignoring_filters([]))

    with pytest.raises(WispHubUnavailable):
        await wh.create_ticket(TICKET_REQ)

    assert post.call_count == 1
    assert tickets.call_count == 2  # estado=1 and estado=2 checked once each


async def test_create_ticket_timeout_reconciles_with_the_ticket_that_was_made(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    post = router.post("tickets/").mock(side_effect=httpx.ReadTimeout("slow"))
    existing = [
        # Same subject but older than the request: not ours.
        ticket_json(4000, 10, "No Tiene Internet", "2026-02-01T08:00:00-05:00"),
        # Another service: not ours.
        ticket_json(4001, 11, "No Tiene Internet", "2026-03-02T09:30:02-05:00"),
        ticket_json(4712, 10, "No Tiene Internet", "2026-03-02T09:30:03-05:00"),
    ]
    router.get("tickets/").mock(
        side_effect=lambda r: page(r, existing if r.url.params["estado"] == "1" else [])
    )

    ticket = await wh.create_ticket(TICKET_REQ)

    assert ticket.id == 4712
    assert post.call_count == 1


async def test_create_ticket_timeout_looks_again_while_the_server_finishes_writing(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    post = router.post("tickets/").mock(side_effect=httpx.ReadTimeout("slow"))
    mine = ticket_json(4712, 10, "No Tiene Internet", "2026-03-02T09:30:03-05:00")
    looks: list[str] = []

    def tickets(request: httpx.Request) -> httpx.Response:
        looks.append(request.url.params["estado"])
        # The ticket shows up only on the second look (estado=1 twice, estado=2 twice).
        return page(request, [mine] if looks.count("1") >= 2 else [])

    router.get("tickets/").mock(side_effect=tickets)

    assert (await wh.create_ticket(TICKET_REQ)).id == 4712
    assert post.call_count == 1
    assert sorted(looks) == ["1", "1", "2", "2"]


async def test_create_ticket_takes_the_technician_from_the_client_record(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    with_tech = [record(10, "1020304050", "Ana", tecnico={"id": 5, "nombre": "Luis"})]
    router.get("clientes/").mock(side_effect=ignoring_filters(with_tech))
    post = router.post("tickets/").mock(
        return_value=httpx.Response(
            201, json=ticket_json(4711, 10, "No Tiene Internet", "2026-03-02T09:30:05-05:00")
        )
    )

    await wh.create_ticket(TICKET_REQ.model_copy(update={"technician_id": None}))

    assert multipart_fields(post.calls[0].request)["tecnico"] == "5"


async def test_create_ticket_timeout_without_a_ticket_raises_unavailable(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    post = router.post("tickets/").mock(side_effect=httpx.ReadTimeout("slow"))
    old = [ticket_json(4000, 10, "No Tiene Internet", "2026-02-01T08:00:00-05:00")]
    router.get("tickets/").mock(side_effect=ignoring_filters(old))

    with pytest.raises(WispHubUnavailable, match="not found"):
        await wh.create_ticket(TICKET_REQ)
    assert post.call_count == 1


async def test_create_ticket_connect_error_needs_no_reconciliation(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    post = router.post("tickets/").mock(side_effect=httpx.ConnectError("refused"))
    tickets = router.get("tickets/").mock(side_effect=ignoring_filters([]))

    with pytest.raises(WispHubUnavailable):
        await wh.create_ticket(TICKET_REQ)
    assert (post.call_count, tickets.call_count) == (1, 0)


async def test_create_ticket_rejected_carries_wisphub_message(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    post = router.post("tickets/").mock(
        return_value=httpx.Response(400, json={"servicio": ["Este campo es requerido."]})
    )
    tickets = router.get("tickets/").mock(side_effect=ignoring_filters([]))

    with pytest.raises(WispHubRejected) as info:
        await wh.create_ticket(TICKET_REQ)
    assert info.value.status == 400
    assert info.value.detail == "servicio: Este campo es requerido."
    assert (post.call_count, tickets.call_count) == (1, 0)


async def test_open_tickets_reads_both_states_matches_service_and_is_refreshed_after_a_write(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    new = [
        ticket_json(1, 10, "Internet Lento", "2026-03-01T08:00:00-05:00"),
        ticket_json(2, 11, "Internet Lento", "2026-03-01T08:00:00-05:00"),
        ticket_json(3, 10, "No Tiene Internet", "2026-03-01T10:00:00-05:00"),
    ]
    progress = [ticket_json(4, 10, "Cambio de Domicilio", "2026-02-01T08:00:00-05:00")]
    get = router.get("tickets/").mock(
        side_effect=lambda r: page(r, new if r.url.params["estado"] == "1" else progress)
    )
    router.post("tickets/").mock(
        return_value=httpx.Response(
            201, json=ticket_json(5, 10, "No Tiene Internet", "2026-03-02T09:30:00-05:00")
        )
    )

    tickets = await wh.open_tickets(10)
    assert [t.id for t in tickets] == [3, 1, 4]  # newest first
    assert sorted(q["estado"] for q in queries(get)) == ["1", "1", "2"]
    calls = get.call_count
    assert [t.id for t in await wh.open_tickets(10)] == [3, 1, 4]
    assert get.call_count == calls  # cached

    await wh.create_ticket(TICKET_REQ)
    await wh.open_tickets(10)
    assert get.call_count > calls  # the write dropped the cache


# --------------------------------------------------------------------------- caching


async def test_second_lookup_is_served_from_the_cache(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    first = await wh.find_by_document("1020304050")
    calls = route.call_count
    second = await wh.find_by_document("1.020.304.050")

    assert first == second
    assert route.call_count == calls


async def test_concurrent_identical_lookups_coalesce_into_one_request(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    gate = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return page(request, CLIENTS[:1])

    route = router.get("clientes/").mock(side_effect=slow)

    tasks = [asyncio.create_task(wh.find_by_document("1020304050")) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)

    assert route.call_count == 1
    assert all([c.service_id for c in r] == [10] for r in results)


async def test_errors_are_not_cached(router: respx.MockRouter, wh: WispHubClient) -> None:
    route = router.get("clientes/").mock(return_value=httpx.Response(503))
    with pytest.raises(WispHubUnavailable):
        await wh.find_by_document("1020304050")

    route.mock(side_effect=ignoring_filters(CLIENTS))
    found = await wh.find_by_document("1020304050")

    assert [c.service_id for c in found] == [10]


async def test_invalidate_drops_lookups_by_key_by_service_and_all(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("clientes/").mock(side_effect=lambda r: page(r, CLIENTS[:1]))

    async def requests_for(call: Any) -> int:
        before = route.call_count
        await call
        return route.call_count - before

    assert await requests_for(wh.find_by_document("1020304050")) == 1
    assert await requests_for(wh.find_by_document("1020304050")) == 0
    wh.invalidate(document="1020304050")
    assert await requests_for(wh.find_by_document("1020304050")) == 1

    # A write to service 10 drops the document and phone look-ups that returned it.
    assert await requests_for(wh.find_by_phone("3001112233")) == 1
    wh.invalidate(service_id=10)
    assert await requests_for(wh.find_by_document("1020304050")) == 1
    assert await requests_for(wh.find_by_phone("+573001112233")) == 1

    wh.invalidate()
    assert await requests_for(wh.find_by_phone("3001112233")) == 1
    assert await requests_for(wh.find_by_service(10)) == 1
    assert await requests_for(wh.find_by_service(10)) == 0
    wh.invalidate(service_id=10)
    assert await requests_for(wh.find_by_service(10)) == 1


async def test_cache_ttl_comes_from_settings(
    router: respx.MockRouter, make: Callable[..., WispHubClient]
) -> None:
    wh = make(client_cache_ttl=0)
    route = router.get("clientes/").mock(side_effect=lambda r: page(r, CLIENTS[:1]))

    await wh.find_by_document("1020304050")
    await asyncio.sleep(0.01)  # let the zero TTL expire the entry
    await wh.find_by_document("1020304050")

    assert route.call_count == 2


# --------------------------------------------------------------------------- catalogue, money


async def test_plans_merge_the_list_with_each_detail_and_survive_a_failing_detail(
    router: respx.MockRouter, make: Callable[..., WispHubClient]
) -> None:
    wh = make(client_cache_ttl=1.0)
    listed = router.get("plan-internet/").mock(
        return_value=httpx.Response(
            200,
            json=[
                {"id": 1, "nombre": "Hogar 50", "tipo": "PPPOE"},
                {"id": 2, "nombre": "Hogar 100", "tipo": "SIMPLE QUEUE"},
                {"id": 3, "nombre": "Empresa", "tipo": "PCQ"},
            ],
        )
    )
    router.get("plan-internet/pppoe/1/").mock(
        return_value=httpx.Response(
            200, json={"nombre": "x", "precio": "49900.00", "bajada": "50M", "subida": "25M"}
        )
    )
    failing = router.get("plan-internet/queue/2/").mock(return_value=httpx.Response(500))
    pcq = router.get("plan-internet/queue/3/").mock(return_value=httpx.Response(404))

    plans = await wh.plans()

    assert [(p.id, p.name, p.kind, p.price, p.download) for p in plans] == [
        (1, "Hogar 50", "PPPOE", 49900, "50M"),
        (2, "Hogar 100", "SIMPLE QUEUE", None, ""),
        (3, "Empresa", "PCQ", None, ""),
    ]
    # WispHub has no detail for a PCQ plan: it is never asked for.
    assert pcq.call_count == 0
    # A catalogue with a missing price is still kept (no refetch per customer) ...
    await wh.plans()
    assert listed.call_count == 1
    # ... but a passing failure is tried again once the short TTL is over.
    failing.mock(return_value=httpx.Response(200, json={"precio": "89900.00", "bajada": "100M"}))
    await asyncio.sleep(1.1)
    assert (await wh.plans())[1].price == 89900
    await wh.plans()
    assert listed.call_count == 2
    assert pcq.call_count == 0


async def test_pending_invoices_keep_only_this_clients_unpaid_ones(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    def inv(n: int, user: str, estado: str) -> dict[str, Any]:
        return {
            "id_factura": n,
            "total": "89900.00",
            "estado": estado,
            "fecha_vencimiento": "10/03/2026",
            "cliente": {"usuario": user, "password_servicio": SECRETS[1]},
        }

    route = router.get("facturas/").mock(
        side_effect=ignoring_filters(
            [
                inv(1, "cperez@fibranet", "Pendiente de Pago"),
                inv(2, "aruiz@fibranet", "Pendiente de Pago"),
                inv(3, "cperez@fibranet", "Pagada"),
                inv(4, "cperez@fibranet", "Pendiente de Pago"),
            ]
        )
    )

    invoices = await wh.pending_invoices("cperez@fibranet")

    assert [i.id for i in invoices] == [1, 4]
    assert invoices[0].due_date == date(2026, 3, 10)
    assert queries(route)[0] == {
        "cliente": "cperez@fibranet",
        "estado": "1",
        "limit": "2",
        "offset": "0",
    }


async def test_payment_promise_is_posted_once(router: respx.MockRouter, wh: WispHubClient) -> None:
    ok = router.post("promesa-pago/").mock(return_value=httpx.Response(201, json={"ok": True}))

    await wh.payment_promise(88001, date(2026, 3, 5), "activar")

    assert ok.call_count == 1
    assert json.loads(ok.calls[0].request.content) == {
        "id_factura": 88001,
        "fecha_limite": "2026-03-05",
        "accion": "activar",
    }

    ok.mock(return_value=httpx.Response(500))
    with pytest.raises(WispHubUnavailable):
        await wh.payment_promise(88001, date(2026, 3, 5))
    assert ok.call_count == 2  # one more POST, not three


# --------------------------------------------------------------------------- ping


def tasks_answer(*states: tuple[str, Any]) -> list[httpx.Response]:
    return [httpx.Response(200, json={"task": {"status": s, "result": r}}) for s, r in states]


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        (("SUCCESS", [ping_item(1, 1), ping_item(2, 1), ping_item(3, 1)]), "ok"),
        (("SUCCESS", [ping_item(1, 0), ping_item(2, 0), ping_item(3, 0)]), "no_response"),
        (("SUCCESS", [ping_item(1, 1), ping_item(2, 0), ping_item(3, 0)]), "partial"),
        (("SUCCESS", ["invalid user name or password (6)"]), "unknown"),
        (("FAILURE", "Traceback ..."), "unknown"),
    ],
)
async def test_ping_polls_the_task_and_classifies(
    router: respx.MockRouter, wh: WispHubClient, final: tuple[str, Any], expected: str
) -> None:
    post = router.post("clientes/13/ping/").mock(
        return_value=httpx.Response(202, json={"task_id": "abc-123"})
    )
    poll = router.get("tasks/abc-123/").mock(
        side_effect=tasks_answer(("PENDING", None), ("PROCESS", None), final)
    )

    result = await wh.ping(13)

    assert result.status == expected
    assert json.loads(post.calls[0].request.content) == {"pings": 3}
    assert poll.call_count == 3


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        # WispHub's "2 de 4" decides: the public IP answered (unreachable) behind a firewall.
        ("firewall", ("partial", 4, 2)),
        ("reply", ("ok", 3, 3)),
        ("no_internet", ("no_response", 3, 0)),
        # Router errors with a "0 de 3" summary: the check did not run, nothing was found down.
        ("router_error", ("unknown", 0, 0)),
    ],
)
async def test_ping_reads_the_task_shapes_real_tenants_return(
    router: respx.MockRouter, wh: WispHubClient, shape: str, expected: tuple[str, int, int]
) -> None:
    router.post("clientes/10/ping/").mock(
        return_value=httpx.Response(202, json={"task_id": "6f1c-real"})
    )
    router.get("tasks/6f1c-real/").mock(return_value=httpx.Response(200, json=PINGS[shape]))

    result = await wh.ping(10)

    assert (result.status, result.sent, result.received) == expected
    if shape == "reply":
        assert result.avg_rtt_ms == 1.5  # "1ms250us", "1ms750us", "1ms500us"


async def test_ping_still_running_at_the_deadline_is_unknown(
    router: respx.MockRouter, make: Callable[..., WispHubClient]
) -> None:
    wh = make(ping_deadline=0.05)
    router.post("clientes/13/ping/").mock(
        return_value=httpx.Response(202, json={"task_id": "slow"})
    )
    router.get("tasks/slow/").mock(
        return_value=httpx.Response(200, json={"task": {"status": "PENDING"}})
    )

    assert (await wh.ping(13)).status == "unknown"


async def test_ping_survives_a_failing_poll(router: respx.MockRouter, wh: WispHubClient) -> None:
    router.post("clientes/13/ping/").mock(return_value=httpx.Response(202, json={"task_id": "t"}))
    router.get("tasks/t/").mock(
        side_effect=[httpx.Response(502), *tasks_answer(("SUCCESS", [ping_item(1, 1)]))]
    )

    assert (await wh.ping(13)).status == "ok"


async def test_ping_without_task_id_is_unknown(router: respx.MockRouter, wh: WispHubClient) -> None:
    router.post("clientes/13/ping/").mock(return_value=httpx.Response(202, json={"ok": True}))

    assert (await wh.ping(13)).status == "unknown"


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(500), WispHubUnavailable),
        (httpx.Response(403, json={"detail": "sin permiso"}), WispHubConfigError),
    ],
)
async def test_ping_post_problems_raise_and_are_not_retried(
    router: respx.MockRouter,
    wh: WispHubClient,
    response: httpx.Response,
    error: type[Exception],
) -> None:
    post = router.post("clientes/13/ping/").mock(return_value=response)

    with pytest.raises(error):
        await wh.ping(13)
    assert post.call_count == 1


# --------------------------------------------------------------------------- secrets in logs


async def test_logs_and_models_never_show_secrets_keys_or_full_documents(
    router: respx.MockRouter, wh: WispHubClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    route = router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    found = await wh.find_by_document("1020304050")
    await wh.find_by_phone("+57 300 111 2233")
    route.mock(return_value=httpx.Response(401, json={"detail": "sin permiso"}))
    wh.invalidate()
    with pytest.raises(WispHubConfigError):
        await wh.find_by_document("1020304050")
    route.mock(return_value=httpx.Response(500))
    with pytest.raises(WispHubUnavailable):
        await wh.find_by_document("79856321")

    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert caplog.records  # the client does log its requests
    for secret in (KEY, *SECRETS, "1020304050", "79856321", "3001112233"):
        assert secret not in logged, secret
    assert mask("1020304050") in logged
    shown = repr(found) + str(found[0]) + found[0].model_dump_json()
    for secret in (*SECRETS, "password"):
        assert secret not in shown
    assert "1020304050" not in repr(found[0])


def test_mask_keeps_the_last_three() -> None:
    assert mask("1020304050") == "*******050"
    assert mask("12") == "12"
