"""The promise flow's hand-over from the free-text router: ``conv.data["promise_date"]``.

The router (another part of issue 14's work) puts the date a customer typed ("quiero pagar el
viernes") in the session before it jumps to the promise flow; scenarios cannot write session
data, so here the store adds it when the customer is in the client menu.
"""

from __future__ import annotations

from typing import Any

import pytest

import bot.simulate
from bot.simulate import Runner
from bot.store import MemoryStore, Session
from flows.types import ConvKey
from integrations.wisphub.client import WispHubClient

VERIFIED = [
    {"user": "/start"},
    {"press": "Soy cliente"},
    {"user": "1098765432"},
    {"user": "jorge gaitan"},
]


def _store_leaving(day: str) -> type[MemoryStore]:
    class RouterLeftADate(MemoryStore):
        async def load(self, key: ConvKey) -> Session | None:
            session = await super().load(key)
            if session is not None and session.state == "client.menu":
                session.data["promise_date"] = day
            return session

    return RouterLeftADate


async def _play(monkeypatch: pytest.MonkeyPatch, day: str, steps: list[dict[str, Any]]) -> None:
    monkeypatch.setattr(WispHubClient, "backoff_base", 0.01)
    monkeypatch.setattr(bot.simulate, "MemoryStore", _store_leaving(day))
    runner = Runner({"steps": [*VERIFIED, *steps]}, "router-date")
    await runner.run()


async def test_an_allowed_date_from_the_router_is_proposed_for_confirmation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _play(
        monkeypatch,
        "2026-11-27",
        [
            {"press": "Promesa de pago"},
            {"expect": "Registro tu promesa de pago hasta el 27 de noviembre de 2026"},
            {"expect_not": "Jueves 26"},
            {"press": "Confirmar"},
            {"expect_wisphub": {"method": "POST", "path": "/promesa-pago/", "count": 1}},
            {"expect": "hasta el 27 de noviembre de 2026"},
        ],
    )


async def test_a_date_too_far_from_the_router_is_refused_with_the_dates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _play(
        monkeypatch,
        "2026-12-20",
        [
            {"press": "Promesa de pago"},
            {"expect": "El 20 de diciembre de 2026 esta demasiado lejos"},
            {"expect": "Jueves 26 de noviembre de 2026"},
            {"expect_wisphub": {"method": "POST", "path": "/promesa-pago/", "count": 0}},
        ],
    )
