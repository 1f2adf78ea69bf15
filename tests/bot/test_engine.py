"""The engine's own promises: dedupe, arrival order, rollback on failure, the outbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from bot.engine import LOCK_WAIT_SECONDS, Engine
from bot.handoff import LocalAgents
from bot.metrics import LOCK_TIMEOUTS, REGISTRY
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from bot.store import MemoryStore, Session, StoreUnavailable
from flows.types import AgentMessage, ConvKey, Inbound, Kind, Media, Outbound
from integrations.wisphub.sandbox import Sandbox

KEY = ConvKey("telegram", "5001")


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    clock = Clock()
    async with open_runtime(
        load_settings(),
        LocalAgents(),
        sandbox=Sandbox(),
        store=MemoryStore(clock=clock),
        clock=clock,
    ) as runtime:
        yield runtime


_ids = iter(range(1, 1_000_000))


def say(text: str, key: ConvKey = KEY) -> Inbound:
    return Inbound(key, f"ev{next(_ids)}", Kind.TEXT, text=text)


def texts(replies: list[Outbound]) -> str:
    return "\n".join(r.text for r in replies)


async def verify_ana(engine: Engine) -> None:
    for line in ("/start", "Soy cliente", "1020304050", "Ana Ruiz"):
        await engine.handle(say(line))


async def test_a_redelivered_event_is_answered_once(rt: Runtime) -> None:
    event = say("/start")
    first = await rt.engine.handle(event)
    again = await rt.engine.handle(event)
    assert "Soy cliente" in str([o.label for r in first for o in r.options])
    assert again == []


async def test_a_note_from_a_stranger_is_not_answered_and_starts_no_conversation(
    rt: Runtime,
) -> None:
    """A reaction before any conversation: nothing said, nothing saved, so the customer's
    first real message is still greeted as a first message."""
    key = ConvKey("whatsapp", "573125550000")
    note = Inbound(key, "ev-reaction", Kind.NOTE, text="👍", payload="reaction")
    assert await rt.engine.handle(note) == []
    assert await rt.store.load(key) is None
    assert "Soy cliente" in str(
        [o.label for r in await rt.engine.handle(say("hola", key)) for o in r.options]
    )


async def test_a_move_with_nothing_to_move_is_harmless(rt: Runtime) -> None:
    key, new = ConvKey("whatsapp", "573001112233"), ConvKey("whatsapp", "573009998877")
    assert await rt.engine.handle(Inbound(key, "ev-moved", Kind.MOVED, payload=new.chat_id)) == []
    assert await rt.store.load(new) is None


async def test_a_burst_is_handled_one_at_a_time_in_arrival_order(rt: Runtime) -> None:
    await rt.engine.handle(say("/start"))
    burst = ["Soy cliente", "1020304050", "Ana Ruiz", "Estado de cuenta", "Mis tickets"]
    tasks = [asyncio.create_task(rt.engine.handle(say(text))) for text in burst]
    results = await asyncio.gather(*tasks)
    assert "documento" in texts(results[0])
    assert "nombre completo" in texts(results[1])
    assert "Gracias, Ana" in texts(results[2])
    assert "$ 89.900" in texts(results[3])
    assert "tickets" in texts(results[4]).lower()


async def test_wisphub_failure_keeps_the_step_and_offers_a_way_forward(rt: Runtime) -> None:
    assert rt.sandbox is not None
    await verify_ana(rt.engine)
    for line in ("Reportar falla", "Sin internet", "Sigue igual", "Se cae el internet"):
        await rt.engine.handle(say(line))
    rt.sandbox.add_fault("^/tickets/$", status=500, count=1, method="POST")
    replies = await rt.engine.handle(say("Confirmar"))
    # A 500 to a POST may hide a ticket WispHub made: said so, and looked for before resending.
    assert "no confirmó si el ticket quedó abierto" in texts(replies)
    labels = [o.label for o in replies[-1].options]
    assert labels == ["Confirmar", "Cancelar", "Hablar con un asesor"]
    session = await rt.store.load(KEY)
    assert session is not None
    assert session.state == "fault.confirm"
    posts = [r for r in rt.sandbox.requests if r.method == "POST" and r.path == "/tickets/"]
    assert len(posts) == 1  # never retried blindly
    # Once WispHub answers, the same step goes through.
    replies = await rt.engine.handle(say("Confirmar"))
    assert "abrí el ticket #" in texts(replies)


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_tickets_filed_are_counted_by_origin(rt: Runtime) -> None:
    faults = counted("wispbot_tickets_created_total", origin="fault")
    agents = counted("wispbot_tickets_created_total", origin="agent")
    await verify_ana(rt.engine)
    for line in ("Reportar falla", "Sin internet", "Sigue igual", "Se cae el internet"):
        await rt.engine.handle(say(line))
    assert "abrí el ticket #" in texts(await rt.engine.handle(say("Confirmar")))
    assert counted("wispbot_tickets_created_total", origin="fault") == faults + 1
    await rt.engine.handle(say("/agente"))
    session = await rt.store.load(KEY)
    assert session is not None
    thread = int(session.data["topic"])
    await rt.engine.from_agent(AgentMessage(thread, 1, "/ticket el router no enciende", "Luis"))
    assert counted("wispbot_tickets_created_total", origin="agent") == agents + 1
    assert counted("wispbot_tickets_created_total", origin="fault") == faults + 1


async def test_free_text_is_counted_by_intent_and_misunderstandings_apart(rt: Runtime) -> None:
    """wispbot_intents_total{intent} for each typed message understood (and out_of_scope for
    the others), wispbot_not_understood_total for the ones the bot could not place; options
    chosen by their label are not counted."""
    faults = counted("wispbot_intents_total", intent="fault_no_internet")
    missed = counted("wispbot_not_understood_total")
    await rt.engine.handle(say("/start"))
    await rt.engine.handle(say("Planes y precios"))
    await rt.engine.handle(say("quiero una pizza"))
    assert counted("wispbot_not_understood_total") == missed + 1
    replies = await rt.engine.handle(say("no me jala el internet"))
    assert "documento" in texts(replies)
    assert counted("wispbot_intents_total", intent="fault_no_internet") == faults + 1
    assert counted("wispbot_not_understood_total") == missed + 1


async def test_a_step_rolled_back_is_counted_by_kind(rt: Runtime) -> None:
    assert rt.sandbox is not None
    before = counted("wispbot_flow_errors_total", kind="wisphub")
    await rt.engine.handle(say("/start"))
    await rt.engine.handle(say("Soy cliente"))
    rt.sandbox.add_fault("^/clientes/", status=500, count=10)
    replies = await rt.engine.handle(say("1020304050"))
    assert "no responde" in texts(replies)
    assert counted("wispbot_flow_errors_total", kind="wisphub") == before + 1


async def test_replies_are_kept_until_delivered_and_sent_before_newer_ones(rt: Runtime) -> None:
    sent: list[str] = []
    broken = True

    async def deliver(replies: list[Outbound]) -> list[Outbound]:
        if broken:
            return replies  # the channel is down: nothing went out
        sent.extend(r.text for r in replies)
        return []

    await rt.engine.handle(say("/start"), deliver)
    session = await rt.store.load(KEY)
    assert session is not None
    assert len(session.outbox) == 2
    broken = False
    await rt.engine.handle(say("Planes y precios"), deliver)
    assert sent[0].startswith("¡Hola!")  # the greeting first, then the plans
    assert any("Hogar 50" in text for text in sent[2:])
    session = await rt.store.load(KEY)
    assert session is not None
    assert session.outbox == []


async def test_a_crash_between_saving_and_sending_is_recovered_by_the_sweep(rt: Runtime) -> None:
    async def crash(replies: list[Outbound]) -> list[Outbound]:
        raise SystemExit  # the process dies after the save, before anything is sent

    with pytest.raises(SystemExit):
        await rt.engine.handle(say("/start"), crash)
    sent: list[Outbound] = []

    async def deliver(replies: list[Outbound]) -> list[Outbound]:
        sent.extend(replies)
        return []

    await rt.engine.sweep(deliver)
    assert [r.text for r in sent][:1] == [
        "¡Hola! Soy tu asistente virtual. ¿En qué te puedo ayudar?"
    ]
    await rt.engine.sweep(deliver)
    assert len(sent) == 2  # sent once, not again


async def test_conversations_do_not_share_state(rt: Runtime) -> None:
    other = ConvKey("whatsapp", "573000000000")
    await verify_ana(rt.engine)
    replies = await rt.engine.handle(say("Estado de cuenta", other))
    assert "89.900" not in texts(replies)


async def test_a_flood_is_told_once_then_dropped_without_touching_the_session() -> None:
    clock = Clock()
    settings = load_settings(bot={"rate_limit_per_minute": 5})
    async with open_runtime(
        settings, LocalAgents(), sandbox=Sandbox(), store=MemoryStore(clock=clock), clock=clock
    ) as rt:
        answers = [await rt.engine.handle(say("hola")) for _ in range(5)]
        before = await rt.store.load(KEY)
        answers += [await rt.engine.handle(say("hola")) for _ in range(3)]
        assert all(answers[:5])
        assert "muchos mensajes" in texts(answers[5])
        assert answers[6] == []
        assert answers[7] == []
        assert await rt.store.load(KEY) == before
        clock.now += 61  # a minute later the customer is heard again
        assert await rt.engine.handle(say("hola"))


class FlakyStore(MemoryStore):
    """A store whose backend is away for the first few calls of each kind (a Redis restart)."""

    def __init__(self, clock: Clock, outages: int) -> None:
        super().__init__(clock=clock)
        self.outages = {"claim_event": outages, "load": outages, "save": outages}

    def _maybe_fail(self, what: str) -> None:
        if self.outages[what] > 0:
            self.outages[what] -= 1
            raise StoreUnavailable("redis restarting")

    async def claim_event(self, channel: str, event_id: str, ttl: int = 86400) -> bool:
        self._maybe_fail("claim_event")
        return await super().claim_event(channel, event_id, ttl)

    async def load(self, key: ConvKey) -> Session | None:
        self._maybe_fail("load")
        return await super().load(key)

    async def save(
        self,
        key: ConvKey,
        session: Session,
        ttl: int,
        closes: str | None = None,
        *,
        ticket: str | None = None,
    ) -> None:
        self._maybe_fail("save")
        await super().save(key, session, ttl, closes, ticket=ticket)


async def test_a_short_store_outage_is_waited_out_and_the_message_handled_once() -> None:
    clock = Clock()
    store = FlakyStore(clock, outages=2)
    async with open_runtime(
        load_settings(), LocalAgents(), sandbox=Sandbox(), store=store, clock=clock
    ) as rt:
        replies = await rt.engine.handle(say("/start"))
        assert "Soy cliente" in [o.label for r in replies for o in r.options]
        session = await rt.store.load(KEY)
        assert session is not None
        assert session.state == "main.menu"


class LongTurnElsewhere(MemoryStore):
    """The conversation's lock is held by another process's turn, which ends ``ends_in`` s into
    the engine's wait (never when None); waits are cut to a hundredth of what was asked."""

    def __init__(self, clock: Clock, ends_in: float | None) -> None:
        super().__init__(clock=clock)
        self.ends_in = ends_in
        self.waits: list[float] = []
        self.other: AbstractAsyncContextManager[str] | None = None
        self._ending: asyncio.Task[None] | None = None

    async def hold(self) -> None:
        self.other = super().lock(KEY, timeout=60)
        await self.other.__aenter__()

    async def end_other(self) -> None:
        if self.other is not None:
            await self.other.__aexit__(None, None, None)
            self.other = None

    def lock(
        self,
        key: ConvKey,
        *,
        timeout: float = 30.0,
        wait: float = 20.0,
        ticket: str | None = None,
    ) -> AbstractAsyncContextManager[str]:
        return self._waited(key, timeout, wait, ticket)

    @asynccontextmanager
    async def _waited(
        self, key: ConvKey, lease: float, wait: float, ticket: str | None
    ) -> AsyncIterator[str]:
        self.waits.append(wait)
        if self.ends_in is not None:

            async def end() -> None:
                await asyncio.sleep(self.ends_in or 0)
                await self.end_other()

            self._ending = asyncio.create_task(end())
        async with super().lock(key, timeout=lease, wait=wait / 100, ticket=ticket) as place:
            yield place


async def test_a_message_waits_out_a_long_turn_of_another_process() -> None:
    clock = Clock()
    store = LongTurnElsewhere(clock, ends_in=0.1)
    async with open_runtime(
        load_settings(), LocalAgents(), sandbox=Sandbox(), store=store, clock=clock
    ) as rt:
        await store.hold()
        replies = await rt.engine.handle(say("/start"))
        assert "Soy cliente" in [o.label for r in replies for o in r.options]
        # One wait, in the place open_turn took in the line: twice the lock wait.
        assert store.waits == [2 * LOCK_WAIT_SECONDS]


async def test_a_message_that_never_gets_the_lock_is_reported_not_lost_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    store = LongTurnElsewhere(clock, ends_in=None)
    before = LOCK_TIMEOUTS.labels("telegram")._value.get()
    async with open_runtime(
        load_settings(), LocalAgents(), sandbox=Sandbox(), store=store, clock=clock
    ) as rt:
        await store.hold()
        with caplog.at_level(logging.ERROR, logger="bot.engine"):
            assert await rt.engine.handle(say("/start")) == []
        assert "message not handled: its conversation stayed locked" in caplog.text
        assert LOCK_TIMEOUTS.labels("telegram")._value.get() == before + 1
        assert await store.take_orphans(0) == []  # out of the journal: reported, not retried
        # Once the other turn is over, the customer is answered again.
        await store.end_other()
        replies = await rt.engine.handle(say("/start"))
        assert "Soy cliente" in [o.label for r in replies for o in r.options]


class SlowTopicStore(MemoryStore):
    """Topic look-ups that take less time the later they are asked, as over a busy network."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.delays = [0.05, 0.04, 0.03, 0.02, 0.01]

    async def get_topic(self, thread_id: int) -> ConvKey | None:
        await asyncio.sleep(self.delays.pop(0) if self.delays else 0)
        return await super().get_topic(thread_id)


async def test_an_agents_burst_reaches_the_customer_in_order() -> None:
    clock = Clock()
    store = SlowTopicStore(clock)
    async with open_runtime(
        load_settings(), LocalAgents(), sandbox=Sandbox(), store=store, clock=clock
    ) as rt:
        await verify_ana(rt.engine)
        await rt.engine.handle(say("Hablar con un asesor"))
        session = await rt.store.load(KEY)
        assert session is not None
        thread = int(session.data["topic"])
        sent: list[str] = []

        async def deliver(replies: list[Outbound]) -> list[Outbound]:
            sent.extend(r.text for r in replies)
            return []

        messages = [AgentMessage(thread, n, f"parte {n}", "Luis") for n in range(1, 6)]
        tasks = [asyncio.create_task(rt.engine.from_agent(m, deliver)) for m in messages]
        await asyncio.gather(*tasks)
        assert sent == [f"parte {n}" for n in range(1, 6)]


async def test_a_turn_cancelled_mid_flow_saves_nothing_and_can_be_handled_again(
    rt: Runtime,
) -> None:
    assert rt.sandbox is not None
    await verify_ana(rt.engine)
    before = await rt.store.load(KEY)
    rt.sandbox.add_fault("^/formas-de-pago/", status=0, delay=5.0, count=1)
    rt.sandbox.add_fault("^/clientes/", status=0, delay=5.0, count=1)
    rt.wisphub.invalidate()
    event = say("Estado de cuenta")
    seen = len(rt.sandbox.requests)
    task = asyncio.create_task(rt.engine.handle(event))
    for _ in range(300):  # bounded: until the look-up is in flight inside the flow
        if any(r.path == "/clientes/" for r in rt.sandbox.requests[seen:]):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the account look-up never started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await rt.store.load(KEY) == before  # not "not understood", not half a turn
    replies = await rt.engine.handle(event)  # the same event, kept or re-delivered
    assert "$ 89.900" in texts(replies)


def test_an_inbound_survives_the_inbox_round_trip() -> None:
    original = Inbound(
        KEY, "ev-9", Kind.MEDIA, text="", phone="+573001112233", media=Media("photo", "42", "hola")
    )
    assert Inbound.from_json(original.to_json()) == original


class BrokenTopicAgents(LocalAgents):
    """Agents' topics where one topic's close fails in a way nobody foresaw."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[int] = set()

    async def close(self, thread_id: int) -> None:
        if thread_id in self.broken:
            raise RuntimeError("unforeseen")
        await super().close(thread_id)


async def test_one_failing_conversation_never_stops_the_sweep_for_the_others() -> None:
    clock = Clock()
    agents = BrokenTopicAgents()
    store = MemoryStore(clock=clock)
    async with open_runtime(
        load_settings(), agents, sandbox=Sandbox(), store=store, clock=clock
    ) as rt:
        first, second = ConvKey("telegram", "6001"), ConvKey("telegram", "6002")
        for key in (first, second):  # scanned in this order: the broken one first
            await rt.engine.handle(say("/start", key))
            await rt.engine.handle(say("Hablar con un asesor", key))
        first_topic = agents.topic_of(first)
        assert first_topic is not None
        agents.broken.add(first_topic.thread_id)
        clock.now += rt.settings.bot.handoff_timeout + 1
        sent: list[Outbound] = []

        async def deliver(replies: list[Outbound]) -> list[Outbound]:
            sent.extend(replies)
            return []

        await rt.engine.sweep(deliver)
        assert [r.key for r in sent if "siguen ocupados" in r.text] == [second]
        second_topic = agents.topic_of(second)
        assert second_topic is not None
        assert not second_topic.open
