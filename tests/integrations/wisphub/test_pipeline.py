"""The request pipeline against respx: pagination, retries, deadlines, errors, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
import respx
from wisphub_respx import (
    CLIENTS,
    KEY,
    ignoring_filters,
    page,
    queries,
)

from integrations.wisphub import pipeline
from integrations.wisphub.client import WispHubClient
from integrations.wisphub.errors import (
    WispHubConfigError,
    WispHubNotFound,
    WispHubRejected,
    WispHubUnavailable,
)

# --------------------------------------------------------------------------- pagination


async def test_pagination_stays_on_the_configured_https_base_and_ignores_next(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))

    await wh.find_by_document("1032456789")

    urls = [call.request.url for call in route.calls]
    assert len(urls) == 3
    assert all(u.scheme == "https" and u.host == "isp.example" for u in urls)
    assert all(u.path == "/api/clientes/" for u in urls)
    # The server announced http:// next links; none was followed (respx would have raised
    # for an unmocked http:// URL, and every request above is https).
    nexts = [call.response.json()["next"] for call in route.calls]
    assert nexts[0].startswith("http://")
    assert nexts[-1] is None


async def test_pagination_stops_on_an_empty_page(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    # The server claims 1000 records but runs dry after the first page.
    route = router.get("clientes/").mock(
        side_effect=lambda request: page(request, CLIENTS[:2], count=1000)
    )

    assert await wh.find_by_document("1020304050") != []
    assert route.call_count == 2


async def test_pagination_is_bounded_when_the_server_never_ends(
    router: respx.MockRouter, wh: WispHubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "MAX_PAGES", 5)
    endless = {"count": 10**9, "next": None, "previous": None, "results": CLIENTS[:2]}
    route = router.get("clientes/").mock(return_value=httpx.Response(200, json=endless))

    await wh.find_by_document("1020304050")

    assert route.call_count == 5


# --------------------------------------------------------------------------- retries and errors


async def test_get_is_retried_on_500_then_succeeds(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("formas-de-pago/").mock(
        side_effect=[
            httpx.Response(500),
            httpx.Response(
                502, text="<html>bad gateway</html>", headers={"content-type": "text/html"}
            ),
            httpx.Response(200, json=[{"id": 1, "nombre": "Efectivo"}]),
        ]
    )

    methods = await wh.payment_methods()

    assert [m.name for m in methods] == ["Efectivo"]
    assert route.call_count == 3  # two retries


async def test_get_is_retried_on_timeout_then_succeeds(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("formas-de-pago/").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json=[])]
    )

    assert await wh.payment_methods() == []
    assert route.call_count == 2


async def test_retries_are_bounded_by_settings(
    router: respx.MockRouter, make: Callable[..., WispHubClient]
) -> None:
    wh = make(retries=1)
    route = router.get("formas-de-pago/").mock(return_value=httpx.Response(503))

    with pytest.raises(WispHubUnavailable):
        await wh.payment_methods()
    assert route.call_count == 2


async def test_no_retry_once_the_call_budget_is_spent(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    wh.call_budget = 0.0
    route = router.get("formas-de-pago/").mock(return_value=httpx.Response(503))

    with pytest.raises(WispHubUnavailable):
        await wh.payment_methods()
    assert route.call_count == 1


async def test_a_hung_server_is_cut_off_at_the_call_timeout(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    wh.call_timeout = 0.05

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json=[])

    router.get("formas-de-pago/").mock(side_effect=hang)

    with pytest.raises(WispHubUnavailable):
        await wh.payment_methods()


async def test_429_is_retried_then_unavailable(router: respx.MockRouter, wh: WispHubClient) -> None:
    route = router.get("formas-de-pago/").mock(
        return_value=httpx.Response(429, headers={"retry-after": "0"})
    )

    with pytest.raises(WispHubUnavailable):
        await wh.payment_methods()
    assert route.call_count == 3


@pytest.mark.parametrize(
    ("response", "error", "text"),
    [
        (
            httpx.Response(200, text="<!DOCTYPE html><html>login</html>"),
            WispHubConfigError,
            "WISPHUB_API_URL does not point at the API",
        ),
        (
            httpx.Response(404, html="<html><body>Not Found</body></html>"),
            WispHubConfigError,
            "WISPHUB_API_URL",
        ),
        (
            httpx.Response(
                403, json={"detail": "Usted no tiene permiso para realizar esta acción."}
            ),
            WispHubConfigError,
            "Usted no tiene permiso",
        ),
        (httpx.Response(401, json={"detail": "Invalid key"}), WispHubConfigError, "Invalid key"),
        (httpx.Response(404, json={"detail": "No encontrado."}), WispHubNotFound, "No encontrado"),
        (
            httpx.Response(400, json={"cedula": ["Introduzca un número válido."]}),
            WispHubRejected,
            "cedula: Introduzca un número válido.",
        ),
        (
            httpx.Response(422, json={"non_field_errors": ["Fecha inválida"]}),
            WispHubRejected,
            "Fecha inválida",
        ),
        (httpx.Response(301, headers={"location": "http://x/"}), WispHubConfigError, "redirect"),
        (httpx.Response(200, text="{not json"), WispHubUnavailable, "undecodable JSON"),
        (httpx.Response(500, text="oops"), WispHubUnavailable, "HTTP 500"),
    ],
)
async def test_errors_map_onto_the_exception_tree(
    router: respx.MockRouter,
    wh: WispHubClient,
    response: httpx.Response,
    error: type[Exception],
    text: str,
) -> None:
    route = router.get("clientes/").mock(return_value=response)

    with pytest.raises(error, match=text) as info:
        await wh.find_by_document("1020304050")

    assert KEY not in str(info.value)
    retried = error is WispHubUnavailable
    assert route.call_count == (3 if retried else 1)  # only the Unavailable causes are retried


async def test_transport_error_is_unavailable(router: respx.MockRouter, wh: WispHubClient) -> None:
    route = router.get("clientes/").mock(side_effect=httpx.ConnectError("refused"))

    with pytest.raises(WispHubUnavailable, match="cannot reach"):
        await wh.find_by_document("1020304050")
    assert route.call_count == 3


async def test_missing_api_key_is_a_config_error(
    router: respx.MockRouter, make: Callable[..., WispHubClient]
) -> None:
    route = router.get("clientes/").mock(side_effect=ignoring_filters(CLIENTS))
    wh = make(api_key=None)

    with pytest.raises(WispHubConfigError, match="WISPHUB_API_KEY"):
        await wh.find_by_document("1020304050")
    assert route.call_count == 0


async def test_ping_server_probes_cheaply_and_reports_failure(
    router: respx.MockRouter, wh: WispHubClient
) -> None:
    route = router.get("clientes/").mock(
        side_effect=[
            httpx.Response(200, json={"count": 300, "next": None, "results": CLIENTS[:1]}),
            httpx.Response(401, json={"detail": "Las credenciales no se proveyeron."}),
        ]
    )

    await wh.ping_server()
    with pytest.raises(WispHubConfigError):
        await wh.ping_server()
    assert queries(route)[0]["limit"] == "1"


# --------------------------------------------------------------------------- concurrency


async def test_concurrency_toward_wisphub_is_bounded(
    router: respx.MockRouter, make: Callable[..., WispHubClient]
) -> None:
    wh = make(max_concurrency=2)
    in_flight = peak = 0
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        return page(request, [])

    route = router.get("clientes/").mock(side_effect=slow)
    tasks = [asyncio.create_task(wh.find_by_document(str(10_000_000 + n))) for n in range(8)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert peak == 2
    release.set()
    await asyncio.gather(*tasks)
    assert route.call_count == 8
    assert peak == 2
