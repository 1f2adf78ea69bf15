"""Before verification the bot reveals nothing of a client's record (design.md section 5).

For each named demo client (10-16) the test walks every state a not-yet-verified customer can
reach (greeting, public menu, plans, document question, not found, name question, wrong name,
blocked, WhatsApp phone match, agent request) and checks that no reply, option label or agents'
card carries the record's name words, address, plan name or phone numbers.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from bot.handoff import LocalAgents
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from bot.store import MemoryStore
from flows.names import fold
from flows.texts import catalogue
from flows.types import ConvKey, Inbound, Kind, Outbound
from integrations.wisphub.sandbox import Sandbox
from integrations.wisphub.sandbox.demo_data import demo_data

NAMED = range(10, 17)
START = datetime.fromisoformat("2026-11-25T10:00:00-05:00").timestamp()  # within agents' hours
WRONG_NAME = "Nadie Nunca"


def _record(service_id: int) -> dict[str, object]:
    return next(c for c in demo_data()["clients"] if c["id_servicio"] == service_id)


def _secrets(record: dict[str, object]) -> list[str]:
    """Folded strings that must not appear: name words of 4+ letters, address, plan, phones."""
    words = [w for w in fold(str(record["nombre"])).split() if len(w) >= 4]
    address = fold(str(record["direccion"]))
    plan = record["plan_internet"]
    assert isinstance(plan, dict)
    phones = [p for p in str(record["telefono"]).split(",") if p]
    return [*words, address, address.split(" apto")[0], fold(str(plan["nombre"])), *phones]


@dataclass
class Walk:
    """One customer's conversation, with everything the bot said and the agents received."""

    rt: Runtime
    agents: LocalAgents
    key: ConvKey
    phone: str | None = None
    said: list[tuple[str, str]] = field(default_factory=list)  # (step, text)
    events: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def send(self, step: str, text: str = "", *, press: str | None = None) -> str:
        """Send a text (or press an option); return everything the bot replied, folded."""
        kind = Kind.BUTTON if press else Kind.TEXT
        inbound = Inbound(
            self.key, f"{self.key.chat_id}-{next(self.events)}", kind, text, press, self.phone
        )
        replies = await self.rt.engine.handle(inbound)
        shown = "\n".join(_texts(replies))
        self.said.append((step, shown))
        topic = self.agents.topic_of(self.key)
        if topic is not None:
            self.said.extend((f"{step} (agents)", post) for post in topic.posts)
        return fold(shown)


def _texts(replies: list[Outbound]) -> list[str]:
    return [part for r in replies for part in (r.text, *(o.label for o in r.options))]


def _t(key: str) -> str:
    return fold(str(catalogue("es")[key]))


@pytest.fixture
async def runtime() -> AsyncIterator[tuple[Runtime, LocalAgents]]:
    """A fresh engine on the demo sandbox, in-memory sessions and agents, a fixed clock."""
    agents = LocalAgents()

    def clock() -> float:
        return START  # time does not move during the walk

    settings = load_settings(bot={"isp_name": "FibraNet Demo"}, wisphub={"ping_deadline": 5.0})
    store = MemoryStore(clock=clock)
    sandbox = Sandbox.from_fixture({})
    async with open_runtime(settings, agents, sandbox=sandbox, store=store, clock=clock) as rt:
        yield rt, agents


def _assert_private(walk: Walk, record: dict[str, object], *, public_plans: bool) -> None:
    secrets = _secrets(record)
    plan_names = {fold(str(p["nombre"])) for p in demo_data()["plans"]}
    for step, text in walk.said:
        folded = fold(text)
        for secret in secrets:
            if step == "plans" and public_plans and secret in plan_names:
                continue  # the catalogue of plans is public; it is not the client's plan
            assert not re.search(rf"\b{re.escape(secret)}\b", folded), (
                f"client {record['id_servicio']}: {secret!r} revealed at {step!r}: {text!r}"
            )


@pytest.mark.parametrize("service_id", NAMED)
async def test_nothing_of_the_record_before_verification(
    service_id: int, runtime: tuple[Runtime, LocalAgents]
) -> None:
    """Every pre-verification state, document route, for one demo client."""
    rt, agents = runtime
    record = _record(service_id)
    walk = Walk(rt, agents, ConvKey("telegram", f"9{service_id}"))

    assert _t("public_menu") in await walk.send("greeting", "/start")
    assert "planes" in await walk.send("plans", press="plans")
    assert _t("public_menu") in await walk.send("public menu", "/menu")
    assert _t("ask_document") in await walk.send("ask document", press="client")
    assert _t("document_invalid") in await walk.send("invalid document", "mi cedula")
    assert _t("not_found") in await walk.send("not found", "999999999")
    assert _t("ask_document") in await walk.send("retry", press="retry")
    assert _t("ask_name") in await walk.send("ask name", str(record["cedula"]))
    assert _t("agent_connecting") in await walk.send("agent request", "/agente")
    assert "asesor" in await walk.send("agent left", "/cancelar")
    await walk.send("again", press="client")
    assert _t("ask_name") in await walk.send("ask name again", str(record["cedula"]))
    assert "no coincide" in await walk.send("wrong name", WRONG_NAME)
    assert "no coincide" in await walk.send("wrong name", WRONG_NAME)
    assert "bloqueada" in await walk.send("blocked", WRONG_NAME)
    assert _t("public_menu") in await walk.send("public menu again", press="menu")
    assert "bloqueada" in await walk.send("blocked again", press="client")

    _assert_private(walk, record, public_plans=True)


@pytest.mark.parametrize("service_id", NAMED)
async def test_nothing_of_the_record_on_a_whatsapp_phone_match(
    service_id: int, runtime: tuple[Runtime, LocalAgents]
) -> None:
    """The sender's number matches: the name is asked without saying whose service it is.

    Every number of the record is tried from its own chat, and each chat is locked by its own
    wrong names: a chat whose sender's number matched is not held by the document's lock.
    """
    rt, agents = runtime
    record = _record(service_id)
    phones = [p for p in str(record["telefono"]).split(",") if p]
    for phone in phones:
        walk = Walk(rt, agents, ConvKey("whatsapp", f"57{phone}"), phone=f"+57{phone}")
        await walk.send("greeting", "hola")
        replied = await walk.send("phone match", press="client")
        assert _t("phone_match") in replied
        assert _t("ask_name") in replied
        assert "no coincide" in await walk.send("wrong name", WRONG_NAME)
        assert "no coincide" in await walk.send("wrong name", WRONG_NAME)
        assert "bloqueada" in await walk.send("blocked", WRONG_NAME)
        assert _t("agent_connecting") in await walk.send("agent request", "asesor")
        _assert_private(walk, record, public_plans=False)


async def test_the_check_catches_what_verification_reveals(
    runtime: tuple[Runtime, LocalAgents],
) -> None:
    """After a correct name the account is shown; the same check must flag it (it can fail)."""
    rt, agents = runtime
    record = _record(10)
    walk = Walk(rt, agents, ConvKey("telegram", "9910"))
    await walk.send("greeting", "/start")
    await walk.send("ask document", press="client")
    await walk.send("ask name", str(record["cedula"]))
    await walk.send("verified", "ana ruiz")
    await walk.send("account", press="account")
    with pytest.raises(AssertionError, match="revealed at 'account'"):
        _assert_private(walk, record, public_plans=False)
