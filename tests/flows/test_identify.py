"""Identification budgets and the agents' /verificar, through the engine on the demo sandbox.

The end-to-end tests (tests/e2e/test_identity_e2e.py, test_whatsapp_e2e.py) play the attacks
against the real service; these pin the rules down branch by branch, in memory.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator

import pytest

from bot.handoff import LocalAgents
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from bot.store import MemoryStore
from flows.names import fold
from flows.types import AgentMessage, ConvKey, Inbound, Kind, Outbound
from integrations.wisphub.sandbox import Sandbox

START = 1_795_000_000.0
ANA_DOC = "1020304050"
_events = itertools.count(1)


AGENTS = LocalAgents()


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    """A fresh engine on the demo sandbox, in-memory sessions and agents, always open."""
    settings = load_settings(bot={"business_hours": ""})
    store = MemoryStore(clock=lambda: START)
    AGENTS.topics.clear()
    async with open_runtime(
        settings, AGENTS, sandbox=Sandbox(), store=store, clock=lambda: START
    ) as runtime:
        yield runtime


async def send(rt: Runtime, key: ConvKey, text: str, phone: str | None = None) -> str:
    """One customer message; everything the bot answered, folded."""
    inbound = Inbound(key, f"ev{next(_events)}", Kind.TEXT, text=text, phone=phone)
    replies: list[Outbound] = await rt.engine.handle(inbound)
    return fold(
        "\n".join([r.text for r in replies] + [o.label for r in replies for o in r.options])
    )


async def to_document(rt: Runtime, key: ConvKey, phone: str | None = None) -> str:
    await send(rt, key, "/start", phone)
    return await send(rt, key, "Soy cliente", phone)


async def test_found_and_unknown_documents_spend_one_budget(rt: Runtime) -> None:
    key = ConvKey("telegram", "8001")
    for document in ("52123456", "11111111", "79856321", "22222222", "80123456"):
        await to_document(rt, key)
        assert "bloqueada" not in await send(rt, key, document)
    assert "bloqueada" in await to_document(rt, key)


async def test_the_fifth_looked_up_document_still_gets_its_name_check(rt: Runtime) -> None:
    """The budget gates look-ups, not the name answer of the last one allowed."""
    key = ConvKey("telegram", "8002")
    await to_document(rt, key)
    for document in ("11111111", "22222222", "33333333", "44444444"):
        assert "no encontre" in await send(rt, key, document)
    assert "nombre completo" in await send(rt, key, ANA_DOC)
    assert "gracias ana" in await send(rt, key, "ana ruiz")


async def lock_ana(rt: Runtime) -> None:
    for chat, wrong in (("8101", 3), ("8102", 2)):
        key = ConvKey("telegram", chat)
        await to_document(rt, key)
        await send(rt, key, ANA_DOC)
        for n in range(wrong):
            said = await send(rt, key, f"ana lopez {n}")
        assert "bloqueada" in said


async def test_a_locked_document_is_locked_for_a_new_chat_but_not_for_the_holders_phone(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flows.identify"):
        await lock_ana(rt)
    [locked] = [r for r in caplog.records if r.getMessage().startswith("document locked")]
    assert getattr(locked, "doc", None) == "*******050"  # operators see it, masked
    other = ConvKey("telegram", "8103")
    await to_document(rt, other)
    assert "bloqueada" in await send(rt, other, ANA_DOC)

    ana = ConvKey("whatsapp", "573001112233")
    assert "nombre completo" in await to_document(rt, ana, "+573001112233")
    assert "gracias ana" in await send(rt, ana, "ana ruiz", "+573001112233")


async def test_an_unknown_sender_number_is_counted_once(rt: Runtime) -> None:
    key = ConvKey("whatsapp", "573125550000")
    phone = "+573125550000"
    for _ in range(4):  # pressing "Soy cliente" again does not spend more
        assert "documento" in await to_document(rt, key, phone)
    for document in ("11111111", "22222222", "33333333", "44444444"):
        assert "no encontre" in await send(rt, key, document, phone)
    assert "bloqueada" in await send(rt, key, ANA_DOC, phone)


async def open_topic(rt: Runtime, key: ConvKey) -> int:
    await send(rt, key, "/agente")
    session = await rt.store.load(key)
    assert session is not None
    return int(session.data["topic"])


async def agent(rt: Runtime, thread: int, text: str) -> str:
    """An agent writes in the topic; the newest note the bot posted there."""
    await rt.engine.from_agent(AgentMessage(thread, next(_events), text, "Luis"))
    return fold(AGENTS.topics[thread].posts[-1])


@pytest.mark.parametrize(
    ("command", "note"),
    [
        ("/verificar", "uso verificar"),
        ("/verificar abc", "uso verificar"),
        ("/verificar 1020304050 10 11", "uso verificar"),
        ("/verificar 1020304050 diez", "uso verificar"),
        ("/verificar 99999999", "no encontre servicios con el documento 99999999"),
        ("/verificar 1032456789", "varios servicios 14 calle 45"),
        ("/verificar 1032456789 99", "varios servicios"),
    ],
)
async def test_verificar_refuses_what_it_cannot_resolve(
    rt: Runtime, command: str, note: str
) -> None:
    key = ConvKey("telegram", "8201")
    thread = await open_topic(rt, key)
    assert note in await agent(rt, thread, command)
    session = await rt.store.load(key)
    assert session is not None
    assert session.verified_until is None


@pytest.mark.parametrize(
    ("command", "holder", "service"),
    [
        ("/verificar 1.020.304.050", "ana maria ruiz gomez", "10"),
        ("/verificar 1032456789 15", "valentina ortiz cardenas", "15"),
    ],
)
async def test_verificar_verifies_even_while_the_document_is_locked(
    rt: Runtime, command: str, holder: str, service: str
) -> None:
    """Ana's document is locked by guessers; the agent vouches, the client menu follows."""
    await lock_ana(rt)
    key = ConvKey("telegram", "8202")
    await to_document(rt, key)
    assert "bloqueada" in await send(rt, key, ANA_DOC)
    thread = await open_topic(rt, key)
    note = await agent(rt, thread, command)
    assert f"verificado por un asesor {holder} servicio {service}" in note
    await agent(rt, thread, "/cerrar")
    assert f"servicio {service}" in await send(rt, key, "Estado de cuenta")


async def test_verificar_when_wisphub_fails_says_so(rt: Runtime) -> None:
    assert rt.sandbox is not None
    key = ConvKey("telegram", "8204")
    thread = await open_topic(rt, key)
    rt.sandbox.add_fault("^/clientes/", status=401, count=None)
    assert "no pude consultar wisphub" in await agent(rt, thread, "/verificar 52123456")


async def test_a_wisphub_failure_spends_no_look_up(rt: Runtime) -> None:
    """During an outage the customer may retype the document as often as needed."""
    assert rt.sandbox is not None
    key = ConvKey("telegram", "8301")
    await to_document(rt, key)
    rt.sandbox.add_fault("^/clientes/", status=401, count=None)
    for _ in range(6):
        assert "bloqueada" not in await send(rt, key, ANA_DOC)
    rt.sandbox.clear_faults()
    assert "nombre completo" in await send(rt, key, ANA_DOC)
