"""Benchmark customers and the WispHub sandbox data that backs them.

Each benchmark customer has a chat id, a document and the name they type. ``distinct`` customers
are generated clients (one per conversation, so no cache can hide a WispHub call); the
``same`` mix is every customer writing as the demo's Ana Ruiz. The outage fixture puts every
generated client in one zone whose router reports ``falla_general``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from integrations.wisphub.sandbox.demo_data import NORTH_OUTAGE, complete_client, demo_data

FIRST = ("Ana", "Carlos", "Luz", "Jorge", "Valentina", "Pedro", "Camila", "Andrés", "Diana")
LAST = ("Ruiz", "Pérez", "Peña", "Gaitán", "Ortiz", "Rojas", "Gómez", "Mora", "Cárdenas")
DEMO_DOCUMENT = "1020304050"
DEMO_NAME = "Ana Ruiz"
FIRST_SERVICE_ID = 20_000
FIRST_DOCUMENT = 3_100_000_000
FIRST_CHAT_ID = 700_000_000


@dataclass(frozen=True)
class Customer:
    """One simulated customer: their Telegram chat, their document, the name they type."""

    chat_id: int
    document: str
    name: str


def _holder(i: int) -> tuple[str, str]:
    """The holder's full name on record and the (shorter) name the customer types."""
    first = FIRST[i % len(FIRST)]
    last1 = LAST[(i // len(FIRST)) % len(LAST)]
    last2 = LAST[(i // len(FIRST) + 3) % len(LAST)]
    return f"{first} {last1} {last2}", f"{first} {last1}"


def generated_clients(count: int, *, outage: bool = False) -> list[dict[str, Any]]:
    """``count`` WispHub client records; with ``outage`` all in Norte, its router down."""
    taken: set[str] = set()
    records = []
    for i in range(count):
        sid = FIRST_SERVICE_ID + i
        full, _ = _holder(i)
        given: dict[str, Any] = {
            "id_servicio": sid,
            "usuario": f"bench{sid}@fibranet",  # explicit: deriving 2,000 slugs is quadratic
            "nombre": full,
            "cedula": str(FIRST_DOCUMENT + i),
            "estado": "Activo",
            "zona": "Norte" if outage else "Centro",
        }
        if outage:
            given["router"] = {"falla_general": True, "falla_general_descripcion": NORTH_OUTAGE}
        records.append(complete_client(given, taken=taken, index=i))
    return records


def sandbox_data(count: int, *, outage: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The demo's clients plus ``count`` generated ones (other kinds stay the demo's)."""
    return {"clients": demo_data()["clients"] + generated_clients(count, outage=outage)}


def customers(count: int, *, same: bool = False, offset: int = 0) -> list[Customer]:
    """``count`` customers with distinct chats; ``same`` makes every one the demo's Ana Ruiz."""
    out = []
    for i in range(offset, offset + count):
        if same:
            out.append(Customer(FIRST_CHAT_ID + i, DEMO_DOCUMENT, DEMO_NAME))
        else:
            out.append(Customer(FIRST_CHAT_ID + i, str(FIRST_DOCUMENT + i), _holder(i)[1]))
    return out
