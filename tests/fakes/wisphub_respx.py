"""WispHub faked with respx: list records as the real API sends them, DRF pages, ping lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import respx

from integrations.wisphub.settings import WispHubSettings

BASE = "https://isp.example/api/"
KEY = "k-live-9f8e7d6c5b4a"
TZ = ZoneInfo("America/Bogota")
SECRETS = ("wifi-Secret-1", "pppoe-Secret-2", "cpe-Secret-3", "ssid-Secret-4", "4.6097,-74.0817")


def settings(**over: Any) -> WispHubSettings:
    values: dict[str, Any] = {
        "api_url": BASE,
        "api_key": KEY,
        "retries": 2,
        "page_size": 2,
        "ping_deadline": 0.5,
    }
    values.update(over)
    return WispHubSettings(**values)


def record(
    service_id: int, cedula: str, nombre: str, telefono: str = "", **extra: Any
) -> dict[str, Any]:
    """A WispHub list record, secrets included, as the real API sends it."""
    return {
        "id_servicio": service_id,
        "usuario": f"user{service_id}@isp",
        "nombre": nombre,
        "cedula": cedula,
        "telefono": telefono,
        "saldo": "0.00",
        "precio_plan": "89900.00",
        "estado": "Activo",
        "password_servicio": SECRETS[1],
        "password_cpe": SECRETS[2],
        "password_router_wifi": SECRETS[0],
        "password_ssid_router_wifi": SECRETS[3],
        "coordenadas": SECRETS[4],
        **extra,
    }


CLIENTS = [
    record(10, "1020304050", "Ana María Ruiz Gómez", "3001112233"),
    record(11, "79856321", "Carlos Andrés Pérez Mora", "30011122334"),
    record(12, "102030405", "Luz Marina Peña", "573001112233"),
    record(13, "1098765432", "Jorge Eliécer Gaitán Ramírez", "3152223344,3209998877,6014445566"),
    record(14, "1032456789", "Valentina Ortiz Cárdenas", "3104445566"),
]


def page(
    request: httpx.Request, items: list[dict[str, Any]], *, count: int | None = None
) -> httpx.Response:
    """One Django-REST page of ``items`` for the request's limit/offset, ``next`` as http://."""
    limit = int(request.url.params.get("limit", "100"))
    offset = int(request.url.params.get("offset", "0"))
    chunk = items[offset : offset + limit]
    total = len(items) if count is None else count
    nxt = (
        f"http://isp.example/api/{request.url.path.split('/api/')[1]}"
        f"?limit={limit}&offset={offset + limit}"
        if offset + limit < total
        else None
    )
    body = {"count": total, "next": nxt, "previous": None, "results": chunk}
    return httpx.Response(200, json=body)


def ignoring_filters(items: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """A server that ignores every filter and returns all records (WispHub's real behaviour)."""
    return lambda request: page(request, items)


def queries(route: respx.Route) -> list[dict[str, str]]:
    return [dict(call.request.url.params) for call in route.calls]


def ping_item(n: int, received: int, rtt: str = "12ms") -> dict[str, Any]:
    status = "ok" if received else "timeout"
    return {
        f"ping-{n}": {
            "status": status,
            "host": "10.0.0.2",
            "sent": 1,
            "received": received,
            "packet-loss": 0 if received else 100,
            "avg-rtt": rtt if received else "",
        }
    }
