"""Free text in the dialog (flows.route): what a typed need leads to, what is kept for later,
and what is counted; the runtime's ports faked as in test_dialog."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from flows.base import Conversation, FlowContext
from flows.dialog import Dialog
from flows.route import FreeText, wanted
from flows.settings import DialogSettings
from flows.understand import Result, Understanding
from tests.flows.test_dialog import KEY, MAPPING, NOW, Agents, Counters, DownWispHub, Record, say


@pytest.fixture(scope="module")
def understanding() -> Understanding:
    return Understanding.load(tz="America/Bogota")


def dialog(understanding: Understanding) -> Dialog[Record]:
    ctx = FlowContext(
        wisphub=DownWispHub(),
        store=Counters(),
        settings=DialogSettings(tickets=MAPPING, isp_name="Fibra Andina"),
        handoff=Agents(),
        clock=lambda: NOW,
        understanding=understanding,
    )
    return Dialog(ctx, lambda lang: Record(lang=lang), Record.from_json)


async def test_a_typed_promise_date_is_kept_through_identification(
    understanding: Understanding,
) -> None:
    """ "quiero pagar el viernes" from an unknown customer: identification first, the need and
    its date kept in the session (flows.promise proposes conv.data["promise_date"])."""
    d = dialog(understanding)
    turn = await d.process(say("quiero pagar el viernes"), None)
    today = d.ctx.local_now().date()
    friday = today + timedelta(days=(4 - today.weekday()) % 7 or 7)
    assert turn.session.state == "identify.ask_document"
    assert turn.session.data["want"] == "payment_promise"
    assert turn.session.data["promise_date"] == friday.isoformat()
    assert turn.intents == ["payment_promise"]
    turn = await d.process(say("/cancelar"), turn.session)
    assert "want" not in turn.session.data  # a need is dropped with the step it began
    assert turn.intents == []  # a command is not free text


async def test_misunderstandings_are_counted_and_the_second_offers_an_agent(
    understanding: Understanding,
) -> None:
    d = dialog(understanding)
    turn = await d.process(say("hola"), None)
    assert turn.intents == ["greet"]
    turn = await d.process(say("quiero una pizza"), turn.session)
    assert turn.intents == ["out_of_scope"]
    assert "No entendí" in turn.replies[-1].text
    assert [o.id for o in turn.replies[-1].options] == ["client", "plans", "agent"]
    turn = await d.process(say("qué hora es en japón"), turn.session)
    assert "asesor" in turn.replies[-1].text
    assert turn.replies[-1].options[0].id == "agent"
    turn = await d.process(say("Soy cliente"), turn.session)  # an option resets the count
    assert "misses" not in turn.session.data


def test_a_need_kept_for_after_identification_prepares_its_flow() -> None:
    session = Record(data={"want": "fault_slow"})
    ctx = FlowContext(
        DownWispHub(), Counters(), DialogSettings(tickets=MAPPING), Agents(), lambda: NOW
    )
    conv = Conversation(KEY, session, None, ctx)
    assert wanted(conv) == ("fault", "begin")
    assert session.data == {"fault_category": "slow"}
    assert wanted(conv) == ("client", "menu")  # nothing wanted: the client menu


@pytest.mark.parametrize(
    ("result", "decided"),
    [
        # a greeting in front of a need does not hide the need
        (
            Result("", "greet", 0.49, {}, (("fault_no_internet", 0.48),)),
            ("fault_no_internet", None),
        ),
        # a date says promise, whatever came close
        (
            Result(
                "", "payment_methods", 0.5, {"date": "2026-11-26"}, (("payment_promise", 0.45),)
            ),
            ("payment_promise", None),
        ),
        # two close needs of different kinds: asked back
        (Result("", "account", 0.53, {}, (("plans", 0.43),)), (None, ("account", "plans"))),
        # two kinds of fault: the best is good enough
        (Result("", "fault_slow", 0.5, {}, (("fault_intermittent", 0.4),)), ("fault_slow", None)),
        # sure enough
        (Result("", "account", 0.59, {}, (("payment_promise", 0.3),)), ("account", None)),
        # unsure between a need and nothing: not understood
        (Result("", "out_of_scope", 0.18, {}, (("plans", 0.18),)), (None, None)),
        # a guess too weak to act on ("Z̸a̵l̷g̶o̴" read as "saldo"): not understood
        (Result("", "account", 0.28, {}, (("out_of_scope", 0.2),)), (None, None)),
    ],
)
def test_which_intent_is_acted_on(
    understanding: Understanding,
    result: Result,
    decided: tuple[str | None, tuple[str, str] | None],
) -> None:
    d = dialog(understanding)
    assert d.free is not None
    assert isinstance(d.free, FreeText)
    assert d.free.decide(result) == decided


def test_dates_are_read_in_the_isp_time_zone(understanding: Understanding) -> None:
    """ "mañana" is the ISP's tomorrow, from the dialog's clock (simulated in scenarios)."""
    d = dialog(understanding)
    assert d.free is not None
    conv = Conversation(KEY, Record(), say("x"), d.ctx)
    tomorrow = (datetime.fromtimestamp(NOW, d.ctx.settings.tz) + timedelta(days=1)).date()
    assert d.free.understand(conv, "pago mañana").entities["date"] == tomorrow.isoformat()
