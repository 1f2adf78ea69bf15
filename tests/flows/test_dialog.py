"""The dialog on its own: a session and an event in, the session and the replies out, with the
runtime's ports faked (no store, no channel, no engine)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest

from flows.base import FlowContext
from flows.commands import command_of
from flows.dialog import Dialog
from flows.main import PUBLIC_OPTIONS
from flows.ports import AgentRequest, PortUnavailable, Promise
from flows.settings import DialogSettings, TicketMapping
from flows.texts import Texts
from flows.tickets import ticket_request
from flows.types import AgentMessage, ConvKey, Inbound, Kind
from integrations.wisphub.errors import WispHubUnavailable

KEY = ConvKey("telegram", "5001")
NOW = 1_795_000_000.0
MAPPING = TicketMapping(
    subjects={"no_internet": ("No Tiene Internet", "3"), "other": ("Internet Intermitente", "2")},
    department="Soporte Técnico",
    origin="redes_sociales",
    technician_id=7,
)


@dataclass
class Record:
    """A session as the dialog sees it (the runtime's own is ``bot.store.Session``)."""

    state: str = "start"
    data: dict[str, Any] = field(default_factory=dict)
    lang: str = "es"
    verified_until: float | None = None
    updated_at: float = 0.0
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return orjson.dumps(vars(self)).decode()

    @classmethod
    def from_json(cls, raw: str) -> Record:
        return cls(**orjson.loads(raw))


class Counters:
    """Failure counters, the topic map and no promises, in a dict."""

    def __init__(self, *, down: bool = False) -> None:
        self.counts: dict[str, int] = {}
        self.down = down

    async def register_failure(self, scope: str, window: int) -> int:
        if self.down:
            msg = "store restarting"
            raise PortUnavailable(msg)
        self.counts[scope] = self.counts.get(scope, 0) + 1
        return self.counts[scope]

    async def failures_many(self, scopes: list[str]) -> list[int]:
        if self.down:
            msg = "store restarting"
            raise PortUnavailable(msg)
        return [self.counts.get(s, 0) for s in scopes]

    async def clear_failures(self, *scopes: str) -> None:
        for scope in scopes:
            self.counts.pop(scope, None)

    async def set_topic(self, thread_id: int, key: ConvKey) -> None:
        pass

    async def get_topic(self, thread_id: int) -> ConvKey | None:
        return None

    async def remember(
        self, service_id: int, day: date, invoices: Sequence[int], until: float
    ) -> None:
        pass

    async def active(self, service_id: int) -> Promise | None:
        return None


class Agents:
    """The agents' side: records notes."""

    configured = False

    def __init__(self) -> None:
        self.notes: list[str] = []

    async def open(self, request: AgentRequest, thread_id: int | None) -> int:
        return 1

    async def forward(self, thread_id: int, inbound: Inbound, label: str) -> None:
        self.notes.append(label)

    async def notify(self, thread_id: int, text: str) -> None:
        self.notes.append(text)

    async def close(self, thread_id: int) -> None:
        pass


class DownWispHub:
    """WispHub that answers nothing."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            msg = "down"
            raise WispHubUnavailable(msg)

        return fail


def dialog(*, store: Counters | None = None, agents: Agents | None = None) -> Dialog[Record]:
    ctx = FlowContext(
        wisphub=DownWispHub(),
        store=store or Counters(),
        settings=DialogSettings(tickets=MAPPING, isp_name="Fibra Andina"),
        handoff=agents or Agents(),
        clock=lambda: NOW,
    )
    return Dialog(ctx, lambda lang: Record(lang=lang), Record.from_json)


def say(text: str) -> Inbound:
    return Inbound(KEY, "ev1", Kind.TEXT, text=text)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("/start", "start"),
        ("/menu@wispbot", "menu"),
        ("/cancelar", "cancel"),
        ("/agente", "agent"),
        ("ASESOR", "agent"),
        ("Menú", "menu"),
        ("quiero un asesor para mi caso", None),
        ("/unknown", None),
        ("1020304050", None),
    ],
)
def test_global_commands_are_recognised_only_as_whole_words(text: str, command: str | None) -> None:
    assert command_of(text) == command


async def test_a_new_conversation_is_greeted_with_the_public_menu_of_the_main_flow() -> None:
    turn = await dialog().process(say("hola"), None)
    t = Texts("es")
    assert "Fibra Andina" in turn.replies[0].text
    assert [o.id for o in turn.replies[-1].options] == list(PUBLIC_OPTIONS)
    assert [o.label for o in turn.replies[-1].options] == [t(f"opt.{i}") for i in PUBLIC_OPTIONS]
    assert turn.session.state == "main.menu"
    assert turn.session.updated_at == NOW
    assert turn.failure is None


async def test_a_number_typed_at_the_new_session_menu_picks_its_option() -> None:
    talk = dialog()
    fresh = talk.new_session()
    assert [i for i, _ in fresh.data["opts"]] == list(PUBLIC_OPTIONS)
    turn = await talk.process(say("1"), fresh)  # 1 = Soy cliente
    assert turn.session.state == "identify.ask_document"


async def test_a_wisphub_failure_rolls_the_step_back_and_says_so() -> None:
    talk = dialog()
    asked = (await talk.process(say("Soy cliente"), talk.new_session())).session
    asked.updated_at = NOW
    turn = await talk.process(say("1020304050"), asked)
    assert turn.failure == "wisphub"
    assert turn.session.state == "identify.ask_document"  # still asking, nothing remembered
    assert "doc" not in turn.session.data
    assert "no responde" in turn.replies[-1].text
    assert [o.id for o in turn.replies[-1].options] == ["agent"]


async def test_an_unavailable_port_puts_the_loaded_session_back_and_is_raised() -> None:
    store = Counters()
    talk = dialog(store=store)
    loaded = (await talk.process(say("Soy cliente"), talk.new_session())).session
    loaded.updated_at = NOW
    before = loaded.to_json()
    store.down = True
    with pytest.raises(PortUnavailable):
        await talk.process(say("1020304050"), loaded)
    assert loaded.to_json() == before  # the runtime runs the step again from here


async def test_an_agents_ticket_needs_a_verified_customer_and_files_nothing_without_one() -> None:
    agents = Agents()
    message = AgentMessage(thread_id=9, message_id=1, text="/ticket sin señal", agent_name="Luis")
    turn = await dialog(agents=agents).from_agent(KEY, Record(state="agent.waiting"), message)
    assert turn.tickets == []
    assert agents.notes == [Texts("es")("agents.ticket_needs_verified")]


def test_one_ticket_builder_maps_the_category_and_falls_back_to_the_default_technician() -> None:
    at = datetime.fromtimestamp(NOW, tz=UTC)
    fault = ticket_request(
        MAPPING, service_id=10, category="no_internet", description="x", requested_at=at
    )
    assert (fault.subject, fault.priority, fault.technician_id) == ("No Tiene Internet", "3", 7)
    assert (fault.department, fault.origin) == ("Soporte Técnico", "redes_sociales")
    named = ticket_request(
        MAPPING,
        service_id=10,
        category="unknown",
        description="x",
        requested_at=at,
        technician_id=3,
    )
    assert (named.subject, named.technician_id) == ("Internet Intermitente", 3)
