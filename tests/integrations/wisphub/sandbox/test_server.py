"""The WispHub sandbox behaves like the real API, quirks included, over real HTTP."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from integrations.wisphub.models import SECRET_FIELDS
from integrations.wisphub.sandbox import (
    SANDBOX_API_KEY,
    RecordedRequest,
    Sandbox,
    demo_data,
    running_sandbox,
)

AUTH = {"Authorization": f"Api-Key {SANDBOX_API_KEY}"}
TICKET_FORM = {
    "servicio": "10",
    "asunto": "No Tiene Internet",
    "asuntos_default": "No Tiene Internet",
    "descripcion": "Sin servicio desde la mañana",
    "estado": "1",
    "prioridad": "3",
    "tecnico": "7",
    "departamento": "Soporte Técnico",
    "departamentos_default": "Soporte Técnico",
    "origen_reporte": "redes_sociales",
}


def multipart(form: dict[str, str]) -> dict[str, tuple[None, str]]:
    """httpx sends ``files`` as multipart/form-data; ``(None, value)`` is a plain field."""
    return {k: (None, v) for k, v in form.items()}


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(Sandbox()) as sb:
        yield sb


@pytest.fixture
async def api(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH, timeout=5) as client:
        yield client


async def all_pages(api: httpx.AsyncClient, path: str, **params: str) -> list[dict[str, Any]]:
    """Walk a list with offset over the base URL (never following ``next``)."""
    results: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = (await api.get(path, params={**params, "limit": "40", "offset": str(offset)})).json()
        results.extend(page["results"])
        offset += 40
        if offset >= page["count"]:
            return results


# -- transport quirks ---------------------------------------------------------------------------


async def test_the_api_key_is_required(sandbox: Sandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as anonymous:
        missing = await anonymous.get("clientes/")
        wrong = await anonymous.get("clientes/", headers={"Authorization": "Api-Key nope"})
        bearer = await anonymous.get(
            "clientes/", headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}
        )
        right = await anonymous.get("clientes/", headers=AUTH)
    detail = {"detail": "Usted no tiene permiso para realizar esta acción."}
    for response in (missing, wrong, bearer):
        assert response.status_code == 403
        assert response.json() == detail
    assert right.status_code == 200


async def test_a_path_without_trailing_slash_is_redirected(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    get = await api.get("clientes", params={"cedula": "79856321"})
    post = await api.post("tickets", files=multipart(TICKET_FORM))

    assert get.status_code == 301
    assert get.headers["Location"] == f"{sandbox.url}clientes/?cedula=79856321"
    assert post.status_code == 301
    assert post.headers["Location"].endswith("/api/tickets/")
    assert not [t for t in sandbox.tickets if t["id_ticket"] >= 4800]  # nothing was created


async def test_outside_the_api_the_site_answers_html(sandbox: Sandbox) -> None:
    root = sandbox.url.removesuffix("api/")
    async with httpx.AsyncClient(headers=AUTH) as client:
        site = await client.get(root)
        wrong_base = await client.get(f"{root}v1/clientes/")
    for response in (site, wrong_base):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.text.startswith("<!DOCTYPE html>")
    assert sandbox.requests == []  # not API requests


async def test_an_unknown_api_path_is_a_404(api: httpx.AsyncClient) -> None:
    response = await api.get("no-existe/")
    assert response.status_code == 404


# -- clients ------------------------------------------------------------------------------------


async def test_client_filters_select_exactly(api: httpx.AsyncClient) -> None:
    async def names(**params: str) -> list[str]:
        page = (await api.get("clientes/", params=params)).json()
        return [c["nombre"] for c in page["results"]]

    assert await names(cedula="1020304050") == ["Ana María Ruiz Gómez"]
    assert await names(cedula="102030405") == []  # exact, not partial
    assert await names(id_servicio="11") == ["Carlos Andrés Pérez Mora"]
    assert await names(usuario="lpena@fibranet") == ["Luz Marina Peña"]
    assert await names(nombre="valentina ortiz") == ["Valentina Ortiz Cárdenas"] * 2
    assert await names(telefono__contains="3209998877") == ["Jorge Eliécer Gaitán Ramírez"]
    assert await names(cedula="1032456789", limit="1", offset="1") == ["Valentina Ortiz Cárdenas"]


async def test_a_client_added_or_edited_is_found_by_document(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    async def names(document: str) -> list[str]:
        page = (await api.get("clientes/", params={"cedula": document})).json()
        return [c["nombre"] for c in page["results"]]

    assert await names("1020304050") == ["Ana María Ruiz Gómez"]  # indexed now
    newcomer = {**sandbox.clients[0], "id_servicio": 9001, "cedula": "555", "nombre": "Nuevo"}
    sandbox.clients.append(newcomer)
    assert await names("555") == ["Nuevo"]
    newcomer["cedula"] = "556"
    sandbox.reindex()  # an edit in place of a document
    assert (await names("555"), await names("556")) == ([], ["Nuevo"])


async def test_after_a_reset_a_document_finds_the_fresh_record(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    async def balance(document: str) -> str:
        page = (await api.get("clientes/", params={"cedula": document})).json()
        return str(page["results"][0]["saldo"])

    before = await balance("1020304050")  # indexed now
    sandbox.reset()  # the same list, new records (as between e2e tests)
    [ana] = [c for c in sandbox.clients if c["cedula"] == "1020304050"]
    ana["saldo"] = "12345.00"
    assert before != "12345.00"
    assert await balance("1020304050") == "12345.00"


async def test_client_estado_filter_is_numeric(api: httpx.AsyncClient) -> None:
    suspended = await all_pages(api, "clientes/", estado="2")
    assert len(suspended) > 5
    assert {c["estado"] for c in suspended} == {"Suspendido"}
    assert "Carlos Andrés Pérez Mora" in [c["nombre"] for c in suspended]

    label = await api.get("clientes/", params={"estado": "Activo"})
    assert label.status_code == 400
    assert "estado" in label.json()


async def test_an_unknown_filter_returns_every_client(api: httpx.AsyncClient) -> None:
    everyone = (await api.get("clientes/")).json()
    trap = (await api.get("clientes/", params={"documento": "1020304050"})).json()

    assert trap["count"] == everyone["count"] == len(demo_data()["clients"])
    assert trap["results"][0]["cedula"] != "1020304050"  # results[0] is somebody else


async def test_lists_page_with_limit_offset_and_an_http_next(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    first = (await api.get("clientes/")).json()
    second = (await api.get("clientes/", params={"limit": "100", "offset": "250"})).json()
    everyone = await all_pages(api, "clientes/")

    assert len(first["results"]) == 50  # the default page size
    assert first["previous"] is None
    assert first["next"].startswith("http://")
    assert "offset=50" in first["next"]
    assert first["next"].startswith(sandbox.url)
    assert len(second["results"]) == first["count"] - 250
    assert second["next"] is None
    assert "offset=150" in second["previous"]
    ids = [c["id_servicio"] for c in everyone]
    assert len(ids) == len(set(ids)) == first["count"] >= 257


async def test_list_records_carry_the_full_field_set(api: httpx.AsyncClient) -> None:
    ana = (await api.get("clientes/", params={"id_servicio": "10"})).json()["results"][0]

    assert ana.keys() >= SECRET_FIELDS  # so the client's allow-list is really exercised
    assert ana["telefono"] == "3001112233"
    assert ana["saldo"] == "0.00"
    assert ana["precio_plan"] == "89900.00"
    assert ana["fecha_corte"] == "5/12/2026"
    assert ana["plan_internet"]["nombre"] == "Hogar 50 Mbps"
    assert ana["router"]["falla_general"] is False


async def test_client_detail_is_poorer_and_404s(api: httpx.AsyncClient) -> None:
    detail = await api.get("clientes/10/")
    missing = await api.get("clientes/999999/")

    assert detail.status_code == 200
    assert detail.json()["nombre"] == "Ana María Ruiz Gómez"
    assert not {"telefono", "saldo", "fecha_corte"} & detail.json().keys()
    assert missing.status_code == 404
    assert missing.json() == {"detail": "No encontrado."}


async def test_client_balance_lists_pending_invoices(api: httpx.AsyncClient) -> None:
    balance = (await api.get("clientes/11/saldo/")).json()

    assert balance["nombre"] == "Carlos Andrés Pérez Mora"
    assert balance["saldo"] == "179800.00"
    assert sorted(f["fecha_vencimiento"] for f in balance["facturas"]) == [
        "5/11/2026",
        "5/12/2026",
    ]
    assert {f["total"] for f in balance["facturas"]} == {"89900.00"}


async def test_sandbox_only_keys_are_never_served(sandbox: Sandbox, api: httpx.AsyncClient) -> None:
    assert any("_ping" in c for c in sandbox.clients)
    listed = await api.get("clientes/", params={"id_servicio": "13"})
    detail = await api.get("clientes/13/")
    everyone = await api.get("clientes/", params={"limit": "1000"})

    for response in (listed, detail, everyone):
        assert "_ping" not in response.text


# -- plans, payment methods ------------------------------------------------------------------


async def test_plans_list_and_detail_by_kind(api: httpx.AsyncClient) -> None:
    plans = (await api.get("plan-internet/")).json()["results"]
    pppoe = await api.get("plan-internet/pppoe/1/")
    queue = await api.get("plan-internet/queue/3/")
    pcq = await api.get("plan-internet/queue/4/")
    mismatch = await api.get("plan-internet/queue/1/")

    assert [(p["nombre"], p["tipo"]) for p in plans] == [
        ("Hogar 50 Mbps", "PPPOE"),
        ("Hogar 100 Mbps", "PPPOE"),
        ("Empresarial 200 Mbps", "SIMPLE QUEUE"),
        ("Básico 20 Mbps", "PCQ"),
    ]
    assert set(plans[0]) == {"id", "nombre", "tipo"}
    assert pppoe.json()["precio"] == "89900.00"
    assert set(pppoe.json()) == {"nombre", "precio", "bajada", "subida", "descripcion"}
    assert queue.json()["precio"] == "249900.00"
    assert pcq.status_code == 404  # WispHub has no detail for PCQ plans
    assert mismatch.status_code == 404


async def test_payment_methods(api: httpx.AsyncClient) -> None:
    methods = (await api.get("formas-de-pago/")).json()["results"]
    assert [m["nombre"] for m in methods] == [
        "Efectivo",
        "Transferencia Bancolombia",
        "Nequi",
        "PSE",
    ]


# -- tickets ------------------------------------------------------------------------------------


async def test_a_multipart_post_creates_a_ticket_each_time(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    first = await api.post("tickets/", files=multipart(TICKET_FORM))
    second = await api.post("tickets/", files=multipart(TICKET_FORM))

    assert first.status_code == second.status_code == 201
    ticket = first.json()
    assert ticket["id_ticket"] == 4800
    assert second.json()["id_ticket"] == 4801  # no idempotency: a retry is a second ticket
    assert ticket["estado"] == "Nuevo"
    assert ticket["prioridad"] == "3"  # the real answer echoes the code
    assert ticket["servicio"]["id_servicio"] == 10
    assert ticket["servicio"]["nombre"] == "Ana María Ruiz Gómez"
    # Real ticket items have no fecha_creacion, only the planned window.
    assert "fecha_creacion" not in ticket
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", ticket["fecha_estimada_inicio"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", ticket["fecha_estimada_fin"])
    assert [t["id_ticket"] for t in sandbox.tickets[-2:]] == [4800, 4801]
    posted = [r for r in sandbox.requests if r.method == "POST"]
    assert posted[0].path == "/tickets/"
    assert posted[0].fields["servicio"] == "10"
    assert posted[0].content_type == "multipart/form-data"


async def test_tickets_refuse_json_and_urlencoded(sandbox: Sandbox, api: httpx.AsyncClient) -> None:
    before = len(sandbox.tickets)
    as_json = await api.post("tickets/", json=TICKET_FORM)
    as_form = await api.post("tickets/", data=TICKET_FORM)

    assert as_json.status_code == 500
    assert not as_json.headers["content-type"].startswith("application/json")
    assert as_form.status_code == 415
    assert len(sandbox.tickets) == before
    assert sandbox.requests[0].fields["servicio"] == "10"  # the JSON body was still recorded


async def test_a_subject_outside_the_catalogue_is_refused(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    before = len(sandbox.tickets)
    other = await api.post(
        "tickets/", files=multipart({**TICKET_FORM, "asunto": "Otro", "asuntos_default": "Otro"})
    )

    assert other.status_code == 400
    assert "Otro no es una de las opciones" in other.json()["asuntos_default"][0]
    assert len(sandbox.tickets) == before


async def test_a_fault_after_the_work_answers_502_yet_the_ticket_exists(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    sandbox.add_fault("^/tickets/$", method="POST", status=502, after=True)

    answer = await api.post("tickets/", files=multipart(TICKET_FORM))
    listed = (await api.get("tickets/", params={"estado": 1, "limit": 500})).json()["results"]

    assert answer.status_code == 502
    assert "Bad Gateway" in answer.text
    assert listed[-1]["id_ticket"] == sandbox.tickets[-1]["id_ticket"] == 4800


async def test_abierto_is_listed_as_state_1() -> None:
    data = {"tickets": [{"id_ticket": 9, "estado": "Abierto", "servicio": {"id_servicio": 10}}]}
    async with (
        running_sandbox(Sandbox(data)) as sb,
        httpx.AsyncClient(base_url=sb.url, headers=AUTH, timeout=5) as client,
    ):
        new = (await client.get("tickets/", params={"estado": 1})).json()["results"]
    assert [t["id_ticket"] for t in new] == [9]


async def test_ticket_validation_errors_name_the_field(api: httpx.AsyncClient) -> None:
    partial = {k: v for k, v in TICKET_FORM.items() if k not in {"tecnico", "descripcion"}}
    missing = await api.post("tickets/", files=multipart(partial))
    unknown = await api.post("tickets/", files=multipart({**TICKET_FORM, "servicio": "999999"}))
    bad_priority = await api.post("tickets/", files=multipart({**TICKET_FORM, "prioridad": "9"}))

    assert missing.status_code == 400
    assert missing.json() == {
        "descripcion": ["Este campo es requerido."],
        "tecnico": ["Este campo es requerido."],
    }
    assert unknown.status_code == 400
    assert "servicio" in unknown.json()
    assert bad_priority.status_code == 400
    assert "prioridad" in bad_priority.json()


async def test_tickets_filter_by_numeric_estado_and_span_pages(api: httpx.AsyncClient) -> None:
    everything = (await api.get("tickets/")).json()
    in_progress = await all_pages(api, "tickets/", estado="2")

    assert everything["count"] > 50
    assert everything["next"] is not None
    assert {t["estado"] for t in in_progress} == {"En Progreso"}
    pedro = [t for t in in_progress if t["servicio"]["id_servicio"] == 16]
    assert [(t["asunto"], t["estado"]) for t in pedro] == [("Internet Lento", "En Progreso")]


async def test_ticket_subject_catalogue(api: httpx.AsyncClient) -> None:
    subjects = (await api.get("tickets/asuntos-tickets/")).json()["results"]
    names = {s["nombre"] for s in subjects}
    assert {"No Tiene Internet", "Internet Lento", "Internet Intermitente"} <= names


# -- money --------------------------------------------------------------------------------------


async def test_invoices_filter_by_usuario_and_estado(api: httpx.AsyncClient) -> None:
    pending = await api.get("facturas/", params={"cliente": "cperez@fibranet", "estado": "1"})
    paid = await api.get("facturas/", params={"cliente": "cperez@fibranet", "estado": "2"})
    trap = (await api.get("facturas/", params={"id_servicio": "11"})).json()

    assert [(f["total"], f["estado"]) for f in pending.json()["results"]] == [
        ("89900.00", "Pendiente de Pago"),
        ("89900.00", "Pendiente de Pago"),
    ]
    assert {f["estado"] for f in paid.json()["results"]} == {"Pagada"}
    assert trap["count"] == len(demo_data()["invoices"])  # unknown filter: everything


async def test_payment_promises_are_recorded_unvalidated(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    as_json = await api.post(
        "promesa-pago/", json={"id_factura": 123456789, "fecha_limite": "2026-12-01", "accion": 1}
    )
    as_form = await api.post(
        "promesa-pago/", data={"id_factura": "88014", "fecha_limite": "2026-12-02", "accion": "1"}
    )
    bad_date = await api.post(
        "promesa-pago/", json={"id_factura": 88014, "fecha_limite": "02/12/2026"}
    )

    assert as_json.status_code == 200
    assert "mensaje" in as_json.json()
    assert as_form.status_code == 200
    assert bad_date.status_code == 400
    assert "fecha_limite" in bad_date.json()
    assert [(p["id_factura"], p["fecha_limite"]) for p in sandbox.promises] == [
        (123456789, "2026-12-01"),
        (88014, "2026-12-02"),
    ]


# -- ping tasks ---------------------------------------------------------------------------------


async def ping(api: httpx.AsyncClient, service_id: int, pings: int = 3) -> dict[str, Any]:
    started = await api.post(f"clientes/{service_id}/ping/", json={"pings": pings})
    assert started.status_code == 202
    task_id = started.json()["task_id"]
    for _ in range(10):
        task = (await api.get(f"tasks/{task_id}/")).json()["task"]
        if task["status"] in {"SUCCESS", "FAILURE"}:
            return dict(task)
    raise AssertionError("the task never finished")


def received(result: list[dict[str, Any]]) -> list[int]:
    # RouterOS values come through WispHub as strings ("1", "0").
    return [
        int(v["received"])
        for item in result
        for k, v in item.items()
        if re.fullmatch(r"ping-\d+", k)
    ]


async def test_ping_task_is_pending_then_succeeds(api: httpx.AsyncClient) -> None:
    started = await api.post("clientes/10/ping/", json={"pings": 3})
    task_id = started.json()["task_id"]
    first = (await api.get(f"tasks/{task_id}/")).json()["task"]
    second = (await api.get(f"tasks/{task_id}/")).json()["task"]

    assert first == {"status": "PENDING", "result": None}
    assert second["status"] == "SUCCESS"
    assert received(second["result"]) == [1, 1, 1]
    assert second["result"][-1] == {"ping-exitoso": "3 de 3"}
    assert second["result"][0]["ping-1"]["host"]


@pytest.mark.parametrize(
    ("service_id", "expected"),
    [
        (12, [0, 0, 0]),  # the zone's router reports a mass outage
        (11, [0, 0, 0]),  # suspended
        (13, [1, 0, 1]),  # flagged "partial" in the demo data
    ],
)
async def test_ping_outcome_follows_the_client(
    api: httpx.AsyncClient, service_id: int, expected: list[int]
) -> None:
    task = await ping(api, service_id)
    assert task["status"] == "SUCCESS"
    assert received(task["result"]) == expected
    assert task["result"][-1] == {"ping-exitoso": f"{sum(expected)} de 3"}


async def test_ping_error_flag_fails_the_task_and_polls_are_configurable() -> None:
    data = demo_data()
    data["clients"][0]["_ping"] = "error"
    service_id = data["clients"][0]["id_servicio"]
    async with (
        running_sandbox(Sandbox(data, ping_polls=2)) as sb,
        httpx.AsyncClient(base_url=sb.url, headers=AUTH) as api,
    ):
        task_id = (await api.post(f"clientes/{service_id}/ping/", json={"pings": 2})).json()[
            "task_id"
        ]
        states = [(await api.get(f"tasks/{task_id}/")).json()["task"] for _ in range(3)]
        unknown = await api.get("tasks/not-a-task/")
        nobody = await api.post("clientes/999999/ping/", json={"pings": 2})

    assert [s["status"] for s in states] == ["PENDING", "PROCESS", "FAILURE"]
    assert "router" in states[-1]["result"]
    assert unknown.status_code == 404
    assert nobody.status_code == 404


# -- faults -------------------------------------------------------------------------------------


async def test_a_fault_answers_its_status_count_times(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    sandbox.add_fault("^/clientes/", status=503, count=2)
    statuses = [(await api.get("clientes/", params={"limit": "1"})).status_code for _ in range(3)]
    plans = await api.get("plan-internet/")

    assert statuses == [503, 503, 200]
    assert plans.status_code == 200


async def test_a_fault_can_target_a_method_and_carry_a_body(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    sandbox.add_fault("^/tickets/$", status=400, method="post", body='{"asunto": ["malo"]}')
    listed = await api.get("tickets/")
    created = await api.post("tickets/", files=multipart(TICKET_FORM))

    assert listed.status_code == 200
    assert created.status_code == 400
    assert created.json() == {"asunto": ["malo"]}


async def test_a_forever_fault_lasts_until_cleared(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    sandbox.add_fault("^/facturas/", status=500, count=None)
    failing = [(await api.get("facturas/")).status_code for _ in range(3)]
    sandbox.clear_faults()
    healed = await api.get("facturas/")

    assert failing == [500, 500, 500]
    assert healed.status_code == 200


async def test_a_delay_fault_makes_the_api_slow(sandbox: Sandbox, api: httpx.AsyncClient) -> None:
    sandbox.add_fault("^/clientes/", status=500, delay=0.3)
    with pytest.raises(httpx.ReadTimeout):
        # Only the read is short: a connect slowed by a busy machine is not what is tested.
        await api.get("clientes/", timeout=httpx.Timeout(5.0, read=0.05))

    sandbox.add_fault("^/clientes/", status=0, delay=0.2)  # slow but real
    slow_ok = await api.get("clientes/", params={"cedula": "80123456"}, timeout=5)
    assert slow_ok.status_code == 200
    assert slow_ok.json()["results"][0]["nombre"] == "Pedro Pablo Rojas"


# -- fixtures -----------------------------------------------------------------------------------


async def test_from_fixture_fills_plain_defaults() -> None:
    sandbox = Sandbox.from_fixture(
        {
            "clients": [{"id_servicio": 10, "cedula": 123456, "nombre": "Ana María Ruiz"}],
            "tickets": [{"id_ticket": 4711, "estado": "2", "servicio": {"id_servicio": 10}}],
            "invoices": [{"id_factura": 1, "total": 150000, "cliente": {"id_servicio": 10}}],
            "faults": [{"path": "^/tickets/", "status": 502, "count": 1}],
        }
    )

    [client] = sandbox.clients
    assert client["cedula"] == "123456"
    assert client["usuario"] == "aruiz@fibranet"
    assert client["estado"] == "Activo"
    assert client["saldo"] == "0.00"
    assert client["precio_plan"] == "89900.00"
    assert client["telefono"] == ""
    assert client["router"]["falla_general"] is False
    assert client["plan_internet"]["nombre"]
    assert client["zona"]["nombre"]
    assert client["fecha_corte"]
    assert sandbox.tickets[0]["estado"] == "En Progreso"
    assert sandbox.tickets[0]["servicio"]["nombre"] == "Ana María Ruiz"
    assert sandbox.invoices[0]["cliente"]["usuario"] == "aruiz@fibranet"
    assert sandbox.invoices[0]["total"] == "150000.00"
    assert len(sandbox.plans) == 4  # not given: the demo's
    async with (
        running_sandbox(sandbox) as sb,
        httpx.AsyncClient(base_url=sb.url, headers=AUTH) as api,
    ):
        assert (await api.get("tickets/")).status_code == 502
        assert (await api.get("tickets/")).json()["count"] == 1


def test_from_fixture_merges_nested_fields_and_rejects_unknown_keys() -> None:
    sandbox = Sandbox.from_fixture(
        {
            "clients": [
                {
                    "id_servicio": 5,
                    "nombre": "Luz Marina Peña",
                    "router": {"falla_general": True, "falla_general_descripcion": "Corte"},
                    "plan_internet": "Empresarial 200 Mbps",
                    "_ping": "timeout",
                }
            ]
        }
    )
    [client] = sandbox.clients
    assert client["router"]["falla_general"] is True
    assert client["router"]["nombre"]  # the rest of the router kept its default
    assert client["precio_plan"] == "249900.00"
    assert client["_ping"] == "timeout"
    assert len(sandbox.tickets) == len(demo_data()["tickets"])

    with pytest.raises(ValueError, match="clientes"):
        Sandbox.from_fixture({"clientes": []})


# -- control endpoints --------------------------------------------------------------------------


async def test_control_endpoints_drive_a_sandbox_from_outside(
    sandbox: Sandbox, api: httpx.AsyncClient
) -> None:
    control = sandbox.url.removesuffix("api/") + "_sandbox/"
    async with httpx.AsyncClient(base_url=control) as ctl:
        added = await ctl.post("faults", json={"path": "^/clientes/", "status": 500, "count": 1})
        failing = await api.get("clientes/", params={"cedula": "1020304050"})
        await ctl.post("faults", json={"path": "^/facturas/", "status": 500, "count": None})
        await ctl.delete("faults")
        healed = await api.get("facturas/")
        log = (await ctl.get("requests")).json()
        patched = await ctl.post(
            "clients", json={"id_servicio": 10, "router": {"falla_general": True}}
        )
        outage = await ping(api, 10)
        missing = await ctl.post("clients", json={"id_servicio": 999999, "estado": "Activo"})
        await api.post("tickets/", files=multipart(TICKET_FORM))
        reset = await ctl.post("reset")
        after = (await ctl.get("requests")).json()

    assert added.status_code == 201
    assert failing.status_code == 500
    assert healed.status_code == 200
    assert [(r["method"], r["path"], r["query"]) for r in log] == [
        ("GET", "/clientes/", {"cedula": "1020304050"}),
        ("GET", "/facturas/", {}),
    ]
    assert patched.status_code == 200
    assert received(outage["result"]) == [0, 0, 0]
    assert missing.status_code == 404
    assert reset.status_code == 200
    assert after == []
    assert sandbox.clients[9]["id_servicio"] == 10
    assert sandbox.clients[9]["router"]["falla_general"] is False
    assert len(sandbox.tickets) == len(demo_data()["tickets"])


def test_recorded_requests_are_plain_dataclasses() -> None:
    request = RecordedRequest("GET", "/clientes/", {"cedula": "1"}, {}, "", 0.0)
    assert request.path == "/clientes/"


# -- demo data ----------------------------------------------------------------------------------


def test_demo_data_is_a_fresh_copy_with_the_named_clients() -> None:
    first = demo_data()
    first["clients"].clear()
    data = demo_data()
    by_id = {c["id_servicio"]: c for c in data["clients"]}

    assert by_id[10]["nombre"] == "Ana María Ruiz Gómez"
    assert by_id[11]["estado"] == "Suspendido"
    assert by_id[11]["saldo"] == "179800.00"
    assert by_id[12]["router"]["falla_general"] is True
    assert "troncal norte" in by_id[12]["router"]["falla_general_descripcion"]
    assert by_id[13]["telefono"] == "3152223344,3209998877,6014445566"
    assert by_id[14]["cedula"] == by_id[15]["cedula"] == "1032456789"
    assert by_id[14]["direccion"] != by_id[15]["direccion"]
    assert by_id[15]["plan_internet"]["nombre"] == "Empresarial 200 Mbps"
    assert by_id[16]["telefono"] == "3016665544"

    fillers = [c for c in data["clients"] if not 10 <= c["id_servicio"] <= 16]
    documents = [c["cedula"] for c in data["clients"] if c["id_servicio"] != 15]
    assert len(fillers) >= 250
    assert len(documents) == len(set(documents))
    assert all(re.fullmatch(r"\d{8,10}", c["cedula"]) for c in fillers)
    assert any(c["estado"] == "Suspendido" for c in fillers)
    assert demo_data() == data  # deterministic


# -- the CLI entry ------------------------------------------------------------------------------


async def test_serve_prints_its_url_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio; from integrations.wisphub.sandbox import serve; "
        "asyncio.run(serve('127.0.0.1', 0))",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    url = re.search(r"http://127\.0\.0\.1:\d+/api/", line)
    assert url is not None
    assert SANDBOX_API_KEY in line
    async with httpx.AsyncClient(headers=AUTH) as client:
        answer = await client.get(f"{url[0]}clientes/", params={"cedula": "1020304050"})
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0
    assert answer.json()["count"] == 1
