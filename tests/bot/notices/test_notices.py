"""Notices the bot sends first (issue 15): polls, dedupe, opt-out, the lane, WhatsApp templates.

In one process on the memory store and the in-process sandbox; the ticks are run directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bot import metrics
from bot.concurrency import on_wire
from bot.handoff import LocalAgents
from bot.notice_runner import Notices, running_notices
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from bot.store import MemoryStore, Session
from flows.agent import WAITING
from flows.notices import Notice
from flows.types import ConvKey, Outbound
from integrations.wisphub.sandbox import Sandbox

BOGOTA = ZoneInfo("America/Bogota")
ANA = ConvKey("telegram", "1001")
LUIS = ConvKey("telegram", "1002")
WA = ConvKey("whatsapp", "573001112233")
NORTH = "2"  # the demo's router "OLT Norte", with a known outage; service 12 is behind it
DAY = 86400.0


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeWhatsApp:
    """The WhatsApp channel's window and templates, as the notices see them."""

    closed: set[str] = field(default_factory=set)
    templates: list[tuple[str, str, str, list[str]]] = field(default_factory=list)

    async def window_known_closed(self, wa_id: str) -> bool:
        return wa_id in self.closed

    async def send_template(self, wa_id: str, name: str, language: str, params: list[str]) -> None:
        self.templates.append((wa_id, name, language, params))


@dataclass
class World:
    rt: Runtime
    notices: Notices
    sandbox: Sandbox
    clock: Clock
    whatsapp: FakeWhatsApp
    sent: list[Outbound]

    def told(self, key: ConvKey) -> list[str]:
        return [o.text for o in self.sent if o.key == key]

    async def subscribe(self, topic: str, target: str, key: ConvKey, service: int) -> None:
        assert self.rt.notices is not None
        until = self.clock() + 7 * DAY
        await self.rt.notices.subscribe(topic, target, key, service_id=service, until=until)


async def _world(template: str | None = None) -> AsyncIterator[World]:
    clock = Clock(datetime(2026, 12, 1, 9, 0, tzinfo=BOGOTA))
    sandbox = Sandbox()
    settings = load_settings(whatsapp={"template_outage_resolved": template} if template else {})
    sent: list[Outbound] = []

    async def deliver(replies: list[Outbound]) -> list[Outbound]:
        sent.extend(replies)
        return []

    whatsapp = FakeWhatsApp()
    store = MemoryStore(clock=clock)
    async with (
        open_runtime(settings, LocalAgents(), sandbox=sandbox, store=store, clock=clock) as rt,
        running_notices(rt, deliver, whatsapp) as notices,
    ):
        assert notices is not None
        yield World(rt, notices, sandbox, clock, whatsapp, sent)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async for w in _world():
        yield w


def _skipped(reason: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("wispbot_notices_skipped_total", {"reason": reason})
        or 0.0
    )


def _sent(kind: str, channel: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value(
            "wispbot_notices_sent_total", {"kind": kind, "channel": channel}
        )
        or 0.0
    )


async def test_an_outage_resolved_reaches_each_subscriber_once(world: World) -> None:
    await world.subscribe("outage", NORTH, ANA, 12)
    await world.subscribe("outage", NORTH, LUIS, 12)
    assert await world.notices.tick() == 0  # the outage is still on: nothing is said
    world.sandbox.set_outage(int(NORTH), False)
    before = _sent("outage_resolved", "telegram")
    assert await world.notices.tick() == 2
    for key in (ANA, LUIS):
        [told] = world.told(key)
        assert "El servicio en tu zona se restableció. ¿Ya tienes internet?" in told
    assert _sent("outage_resolved", "telegram") == before + 2
    assert await world.notices.tick() == 0  # told once: the subscriptions are gone
    assert len(world.sent) == 2
    # One WispHub look-up per router per poll, whatever the number of subscribers.
    assert world.notices.polls.lookups["outage"] == 2


async def test_a_notice_already_marked_is_not_sent_again(world: World) -> None:
    """A tick run twice (a process killed before it forgot the subscriptions) sends once."""
    await world.subscribe("outage", NORTH, ANA, 12)
    world.sandbox.set_outage(int(NORTH), False)
    due = await world.notices.polls.due(world.clock())
    assert await world.notices.notifier.send_all(due) == 1
    assert await world.notices.notifier.send_all(due) == 0
    assert len(world.told(ANA)) == 1


async def test_an_opted_out_customer_is_not_told(world: World) -> None:
    assert world.rt.notices is not None
    await world.subscribe("outage", NORTH, ANA, 12)
    await world.rt.notices.opt_out(ANA)
    world.sandbox.set_outage(int(NORTH), False)
    before = _skipped("opted_out")
    assert await world.notices.tick() == 0
    assert world.told(ANA) == []
    assert _skipped("opted_out") == before + 1


async def test_a_customer_with_an_agent_is_not_interrupted(world: World) -> None:
    session = Session(lang="es")
    session.state = WAITING
    await world.rt.store.save(ANA, session, 3600)
    await world.subscribe("outage", NORTH, ANA, 12)
    world.sandbox.set_outage(int(NORTH), False)
    assert await world.notices.tick() == 0
    assert world.told(ANA) == []


async def test_a_ticket_in_progress_is_told_once_and_resolved_asks(world: World) -> None:
    ticket = int(world.sandbox.tickets[0]["id_ticket"])
    await world.subscribe("ticket", str(ticket), ANA, 10)
    world.sandbox.set_ticket_status(ticket, "1")
    assert await world.notices.tick() == 0
    world.sandbox.set_ticket_status(ticket, "2")
    assert await world.notices.tick() == 1
    assert await world.notices.tick() == 0  # in progress is told once
    world.sandbox.set_ticket_status(ticket, "3")
    assert await world.notices.tick() == 1
    progress, resolved = world.told(ANA)
    assert "¿Se solucionó tu problema?" not in progress
    assert "¿Se solucionó tu problema?" in resolved
    assert await world.notices.tick() == 0


async def test_a_payment_reminder_comes_once_days_before_the_cut_off(world: World) -> None:
    # Service 13 owes 59.900 and is cut off on 5/12/2026; REMINDER_DAYS_BEFORE is 2.
    await world.subscribe("reminder", "13", ANA, 13)
    assert await world.notices.tick() == 0  # 1 December: four days before
    world.clock.now += 2 * DAY
    assert await world.notices.tick() == 1  # 3 December
    world.clock.now += 3600
    assert await world.notices.tick() == 0
    assert len(world.told(ANA)) == 1


async def test_a_promise_is_recalled_the_day_before_it_is_due(world: World) -> None:
    assert world.rt.notices is not None
    due_end = datetime(2026, 12, 4, 0, 0, tzinfo=BOGOTA).timestamp()  # the end of 3 December
    await world.rt.notices.subscribe("promise", "13", ANA, service_id=13, until=due_end)
    assert await world.notices.tick() == 0
    world.clock.now += DAY  # 2 December
    assert await world.notices.tick() == 1
    assert await world.notices.tick() == 0
    assert len(world.told(ANA)) == 1


async def test_whatsapp_outside_the_window_without_a_template_is_skipped(world: World) -> None:
    await world.subscribe("outage", NORTH, WA, 12)
    world.whatsapp.closed.add(WA.chat_id)
    world.sandbox.set_outage(int(NORTH), False)
    before = _skipped("no_template")
    assert await world.notices.tick() == 0
    assert world.told(WA) == []
    assert world.whatsapp.templates == []
    assert _skipped("no_template") == before + 1


async def test_whatsapp_outside_the_window_gets_the_template() -> None:
    async for w in _world(template="servicio_restablecido"):
        await w.subscribe("outage", NORTH, WA, 12)
        w.whatsapp.closed.add(WA.chat_id)
        w.sandbox.set_outage(int(NORTH), False)
        assert await w.notices.tick() == 1
        assert w.whatsapp.templates == [(WA.chat_id, "servicio_restablecido", "es", [])]
        assert w.told(WA) == []  # never as free text


async def _killed_while(world: World, *, on_the_wire: bool) -> list[Outbound]:
    """Run an outage notice as a turn whose delivery never comes back (the process dies: the
    task is cancelled, so nothing after the send is saved), then the sweep of the next process;
    what that sweep sends."""
    engine, arrived = world.rt.engine, asyncio.Event()

    async def dies(replies: list[Outbound]) -> list[Outbound]:
        if on_the_wire:
            await on_wire()  # the channel had its pacing slot: the request left
        arrived.set()
        await asyncio.Event().wait()  # its answer never comes back
        return []

    turn = asyncio.create_task(
        engine.notice(ANA, Notice("outage_resolved", 12, "outage:2:1"), dies)
    )
    await arrived.wait()
    turn.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await turn
    swept: list[Outbound] = []

    async def deliver(replies: list[Outbound]) -> list[Outbound]:
        swept.extend(replies)
        return []

    await engine.sweep(deliver)
    return swept


async def test_a_notice_whose_request_was_out_when_the_process_died_is_not_sent_again(
    world: World,
) -> None:
    """No channel can say whether a request it never heard back from arrived: the notice is
    lost rather than told twice (the sweep resends an outbox)."""
    assert await _killed_while(world, on_the_wire=True) == []


async def test_a_notice_still_waiting_for_its_slot_when_the_process_died_is_sent_by_the_sweep(
    world: World,
) -> None:
    [swept] = await _killed_while(world, on_the_wire=False)
    assert "El servicio en tu zona se restableció" in swept.text
