"""A kit for the notices' flow tests (tests/flows/test_notices*.py): the engine on the demo
sandbox with in-memory sessions, agents and subscriptions, and a simulated clock."""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from bot.handoff import LocalAgents
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from bot.simulate import ScenarioSubscriptions
from bot.store import MemoryStore
from flows.dialog import Turn
from flows.notices import Notice
from flows.types import AgentMessage, ConvKey, Inbound, Kind, Outbound

START = datetime.fromisoformat("2026-11-25T10:00:00-05:00").timestamp()  # a Wednesday morning
ANA = ("1020304050", "ana ruiz")  # service 10, nothing owed
LUZ = ("52123456", "luz marina pena")  # service 12, her router reports an outage
CARLOS = ("79856321", "carlos perez")  # service 11, a pending invoice, cut-off passed
JORGE = ("1098765432", "jorge gaitan")  # service 13, a balance due, cut-off 5 December
WEEK = 7 * 86400
_events = itertools.count(1)


class Subs(ScenarioSubscriptions):
    """The subscriptions port in memory, read back per conversation."""

    def of(self, key: ConvKey) -> dict[tuple[str, str], tuple[int, float]]:
        return {(t, g): v for (t, g, k), v in self.subs.items() if k == key}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Bot:
    rt: Runtime
    subs: Subs | None
    agents: LocalAgents
    clock: Clock

    async def send(self, key: ConvKey, text: str) -> str:
        """A customer's message; every reply's text and labels, folded."""
        inbound = Inbound(key, f"n{next(_events)}", Kind.TEXT, text=text)
        return _text(await self.rt.engine.handle(inbound))

    async def press(self, key: ConvKey, payload: str) -> str:
        inbound = Inbound(key, f"n{next(_events)}", Kind.BUTTON, payload=payload)
        return _text(await self.rt.engine.handle(inbound))

    async def agent(self, key: ConvKey, text: str) -> str:
        topic = self.agents.topics[(await self.session(key)).data["topic"]]
        message = AgentMessage(topic.thread_id, next(_events), text, "Luis")
        return _text(await self.rt.engine.from_agent(message))

    async def session(self, key: ConvKey):  # type: ignore[no-untyped-def]
        session = await self.rt.store.load(key)
        assert session is not None
        return session

    async def notice(self, key: ConvKey, notice: Notice) -> Turn | None:  # type: ignore[type-arg]
        """What the runtime does with a notice: the dialog's turn, saved."""
        turn = await self.rt.engine.dialog.notice(key, await self.rt.store.load(key), notice)
        if turn is not None:
            await self.rt.store.save(key, turn.session, WEEK)
        return turn

    async def verified(self, key: ConvKey, who: tuple[str, str]) -> None:
        await self.send(key, "/start")
        await self.send(key, "Soy cliente")
        await self.send(key, who[0])
        assert "que quieres hacer" in await self.send(key, who[1])


def _text(replies: list[Outbound]) -> str:
    """Text and labels, case and accents folded (punctuation kept)."""
    raw = "\n".join([r.text for r in replies] + [o.label for r in replies for o in r.options])
    decomposed = unicodedata.normalize("NFKD", raw.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def told(turn: Turn | None) -> str:  # type: ignore[type-arg]
    assert turn is not None
    return _text(turn.replies)


async def make_bot(*, notices: bool = True, hours: str = "") -> AsyncIterator[Bot]:
    settings = load_settings(bot={"business_hours": hours})
    clock = Clock()
    subs = Subs() if notices else None
    agents = LocalAgents()
    store = MemoryStore(clock=clock)
    async with open_runtime(
        settings, agents, use_sandbox=True, store=store, clock=clock, subscriptions=subs
    ) as rt:
        yield Bot(rt, subs, agents, clock)


def outage(service: int = 12) -> Notice:
    return Notice("outage_resolved", service, "outage:2:1")


def resolved(ticket: str = "4711", service: int = 10) -> Notice:
    return Notice("ticket_resolved", service, f"ticket:{ticket}:resolved", {"ticket_id": ticket})
