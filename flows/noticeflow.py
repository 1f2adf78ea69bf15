"""The notices' questions and their answers (issue 15): outage resolved (Sí · No, sigo sin
servicio), ticket resolved (Sí → rating; No → a new ticket referring to the old one, or an
agent), the 1-5 rating and its optional comment, the cut-off reminder offer; plain notices
(ticket in progress, payment reminder, promise due); opting out and back in.

A notice's question never traps the customer: an answer that is not one of its options is
handled as if the customer were at their menu (``rest_menu``), and the question can be
answered for ``QUESTION_LIFE`` even past the idle reset (``Dialog.process``).
"""

from __future__ import annotations

import logging
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from transitions.extensions.asyncio import AsyncEventData

from flows.agent import agent_request
from flows.base import Conversation, Flow, model
from flows.client import CLIENT_OPTIONS
from flows.main import PUBLIC_OPTIONS
from flows.notices import Notice, end_of_day, notices_on
from flows.ports import HandoffError, SessionRecord
from flows.texts import Texts
from flows.types import Option

if TYPE_CHECKING:
    from flows.registry import Flows

log = logging.getLogger(__name__)

QUESTION_FLOWS = frozenset({"notice", "reminder"})
QUESTION_LIFE = 24 * 3600  # seconds a notice's question stays answerable
QUESTIONS = frozenset({"outage_resolved", "ticket_resolved"})  # the kinds that ask something
LOW_SCORE = 2  # a rating of this or less offers an agent (within business hours)
MAX_COMMENT = 500


# The dialog's options that work everywhere (an agent, the menu): always an answer.
_ALWAYS = frozenset({"agent", "menu"})


def off_question(flows: Flows, flow: str, state: str, option: Option | None, text: str) -> bool:
    """In a notice's question, something that does not answer it (then the customer is at
    their menu: ``rest_menu``)."""
    if flow not in QUESTION_FLOWS:
        return False
    if option is not None and (
        option.id in _ALWAYS or flows.accepts(flow, state, option.id.partition(":")[0])
    ):
        return False
    return not (text and flows.takes_text(flow, state))


def still_asked(flows: Flows, session: SessionRecord, option: Option | None, now: float) -> bool:
    """The option answers a notice's question asked less than QUESTION_LIFE ago: the idle
    reset spares it (notices are answered hours later)."""
    flow, _, state = session.state.partition(".")
    asked = float(session.data.get("asked_at", 0.0))
    if flow not in QUESTION_FLOWS or now - asked > QUESTION_LIFE or option is None:
        return False
    return not off_question(flows, flow, state, option, "")


def _option(conv: Conversation, option_id: str, key: str) -> Option:
    return Option(option_id, conv.t(key))


def _ask(conv: Conversation, text: str, options: list[Option]) -> None:
    """A question of a notice: answerable for QUESTION_LIFE (past the idle reset)."""
    conv.data["asked_at"] = conv.now
    conv.say(text, options)


def _with_hint(conv: Conversation, text: str) -> str:
    """Every notice says how to stop them."""
    return f"{text}\n{conv.t('notice.optout_hint')}"


def rest(conv: Conversation) -> None:
    """After an answer: the menu of the customer's level."""
    conv.jump("client", "again") if conv.verified else conv.jump("main", "again")


def rest_menu(conv: Conversation) -> None:
    """Put the conversation at its menu without a word (an answer that is not the question's)."""
    ids = CLIENT_OPTIONS if conv.verified else PUBLIC_OPTIONS
    conv.session.state = "client.menu" if conv.verified else "main.menu"
    conv.data["opts"] = [[i, conv.t(f"opt.{i}")] for i in ids]
    for name in ("asked_at", "notice_ticket", "score", "cutoff"):
        conv.data.pop(name, None)


def _amount(conv: Conversation, raw: str | None) -> str | None:
    try:
        return conv.money(Decimal(raw)) if raw else None
    except InvalidOperation:
        return None


def _date(conv: Conversation, raw: str | None) -> str | None:
    try:
        return conv.t.date(date.fromisoformat(raw)) if raw else None
    except ValueError:
        return None


def plain_notice(conv: Conversation, notice: Notice) -> str | None:
    """The text of a notice that asks nothing; None when it cannot be told (bad parameters)."""
    params = notice.params
    if notice.kind == "ticket_progress" and params.get("ticket_id", "").isdigit():
        return _with_hint(conv, conv.t("notice.ticket_progress", id=params["ticket_id"]))
    day = _date(conv, params.get("date"))
    amount = _amount(conv, params.get("amount"))
    if day is None:
        return None
    if notice.kind == "payment_reminder":
        if amount is None:
            return _with_hint(conv, conv.t("notice.payment_reminder", date=day))
        return _with_hint(conv, conv.t("notice.payment_reminder_amount", date=day, amount=amount))
    if notice.kind == "promise_due":
        if amount is None:
            return _with_hint(conv, conv.t("notice.promise_due", date=day))
        return _with_hint(conv, conv.t("notice.promise_due_amount", date=day, amount=amount))
    return None


def question_ok(notice: Notice) -> bool:
    """A question notice with what it needs (a ticket's number)."""
    return notice.kind == "outage_resolved" or notice.params.get("ticket_id", "").isdigit()


async def set_notices(conv: Conversation, *, on: bool, offer_again: bool) -> None:
    """/silenciar, "no quiero avisos", STOP (and /avisos back): from any state."""
    subs = conv.ctx.subscriptions
    if subs is None:
        text = conv.t("notice.disabled")
    elif on:
        await subs.opt_in(conv.key)
        text = conv.t("notice.unmuted")
    else:
        await subs.opt_out(conv.key)
        text = conv.t("notice.muted")
    options = [Option(i, label) for i, label in conv.data.get("opts", [])] if offer_again else []
    conv.say(text, options)


async def _tell_agents(conv: Conversation, key: str, **values: object) -> None:
    """A note in the customer's topic (best effort). A customer who never had one gets one,
    opened with a card that names the rating, when agents are configured: the agents see every
    rating, and can answer a low one in the topic."""
    topic = conv.data.get("topic")
    notes = Texts(conv.ctx.settings.language)
    try:
        if topic is None:
            if not conv.ctx.handoff.configured:
                return
            topic = await conv.ctx.handoff.open(await agent_request(conv, "rating"), None)
            await conv.ctx.store.set_topic(topic, conv.key)
            conv.data["topic"] = topic
        await conv.ctx.handoff.notify(int(topic), notes(key, **values))
    except HandoffError:
        log.warning("rating not posted in the topic", extra={"conv": str(conv.key)})


class NoticeFlow(Flow):
    """The answers to the notices' questions, and the rating."""

    name = "notice"
    text_states = frozenset({"comment"})

    def states(self) -> list[dict[str, Any]]:
        """Where a notice waits for its answer."""
        names = ("idle", "outage", "ticket", "reopen", "rating", "comment")
        return [{"name": n} for n in names]

    def transitions(self) -> list[dict[str, Any]]:
        """The notices' table."""
        back = self.back
        return [
            {"trigger": "outage_resolved", "source": "*", "dest": "outage", "after": self.ask_net},
            {"trigger": "ticket_resolved", "source": "*", "dest": "ticket", "after": self.ask_fix},
            {"trigger": "rate", "source": "*", "dest": "rating", "after": self.ask_rating},
            {"trigger": "yes", "source": "outage", "dest": "idle", "after": [self.glad, back]},
            {"trigger": "outage_no", "source": "outage", "dest": "idle", "after": self.to_fault},
            {"trigger": "yes", "source": "ticket", "dest": "rating", "after": self.ask_rating},
            {"trigger": "no", "source": "ticket", "dest": "reopen", "after": self.offer_reopen},
            {"trigger": "reopen", "source": "reopen", "dest": "idle", "after": self.to_reopen},
            {
                "trigger": "score",
                "source": "rating",
                "dest": "comment",
                "conditions": self.record_score,
                "after": self.ask_comment,
            },
            {
                "trigger": "text",
                "source": "comment",
                "dest": "idle",
                "before": self.post_comment,
                "after": back,
            },
            {"trigger": "skip", "source": "comment", "dest": "idle", "after": [self.skipped, back]},
        ]

    async def back(self, ev: AsyncEventData) -> None:
        """The menu of the customer's level."""
        conv = model(ev)
        for name in ("asked_at", "score"):
            conv.data.pop(name, None)
        rest(conv)

    # -- outage resolved -------------------------------------------------------------------
    async def ask_net(self, ev: AsyncEventData) -> None:
        """El servicio en tu zona se restableció. ¿Ya tienes internet?"""
        conv = model(ev)
        yes = _option(conv, "yes", "notice.opt_yes")
        _ask(
            conv,
            _with_hint(conv, conv.t("notice.outage_resolved")),
            [yes, _option(conv, "outage_no", "notice.opt_outage_no")],
        )

    async def glad(self, ev: AsyncEventData) -> None:
        """It works again."""
        conv = model(ev)
        conv.say(conv.t("notice.glad"))

    async def to_fault(self, ev: AsyncEventData) -> None:
        """Still no service: the fault report, the outage check skipped (verified first)."""
        conv = model(ev)
        conv.data.pop("asked_at", None)
        if conv.verified:
            conv.jump("fault", "after_outage")
        else:
            self._identify_first(conv)

    @staticmethod
    def _identify_first(conv: Conversation) -> None:
        conv.end_verification()
        conv.say(conv.t("notice.verify_first"))
        conv.jump("identify")

    # -- ticket resolved -------------------------------------------------------------------
    async def ask_fix(self, ev: AsyncEventData) -> None:
        """Tu ticket figura como resuelto. ¿Se solucionó tu problema?"""
        conv = model(ev)
        ticket = ev.kwargs["params"]["ticket_id"]
        conv.data["notice_ticket"] = int(ticket)
        options = [_option(conv, "yes", "notice.opt_yes"), _option(conv, "no", "notice.opt_no")]
        _ask(conv, _with_hint(conv, conv.t("notice.ticket_resolved", id=ticket)), options)

    async def offer_reopen(self, ev: AsyncEventData) -> None:
        """Not solved: a new ticket referring to the old one, or an agent within hours."""
        conv = model(ev)
        ticket = conv.data.get("notice_ticket", "?")
        options = [_option(conv, "reopen", "notice.opt_reopen")]
        if conv.ctx.agents_open():
            options += conv.opts("agent")
            text = conv.t("notice.reopen_offer_agent", id=ticket)
        else:
            text = conv.t("notice.reopen_offer", id=ticket)
        _ask(conv, text, [*options, *conv.opts("menu")])

    async def to_reopen(self, ev: AsyncEventData) -> None:
        """The new ticket: the fault flow's description step, referring to the old ticket."""
        conv = model(ev)
        ticket = conv.data.pop("notice_ticket", None)
        conv.data.pop("asked_at", None)
        if conv.verified:
            if ticket is not None:
                conv.data["reopens"] = ticket
            conv.jump("fault", "describe_only")
        else:
            self._identify_first(conv)

    # -- rating ----------------------------------------------------------------------------
    async def ask_rating(self, ev: AsyncEventData) -> None:
        """1 (bad) to 5 (excellent), as buttons (typed numbers match them too)."""
        conv = model(ev)
        conv.data.pop("notice_ticket", None)
        options = [Option(f"score:{n}", str(n)) for n in range(1, 6)]
        _ask(conv, conv.t("notice.rate_ask"), options)

    async def record_score(self, ev: AsyncEventData) -> bool:
        """A score of 1-5: counted (``Turn.csat``) and posted in the agents' topic."""
        conv = model(ev)
        arg = str(ev.kwargs.get("arg", ""))
        if arg not in ("1", "2", "3", "4", "5"):
            return False
        conv.csat = int(arg)
        conv.data["score"] = conv.csat
        await _tell_agents(conv, "notice.agents_rating", score=arg)
        return True

    async def ask_comment(self, ev: AsyncEventData) -> None:
        """An optional comment; a low score offers an agent within business hours."""
        conv = model(ev)
        low = int(conv.data.get("score", 5)) <= LOW_SCORE
        options = [_option(conv, "skip", "notice.opt_skip")]
        text = conv.t("notice.comment_ask_low" if low else "notice.comment_ask")
        if low and conv.ctx.agents_open():
            options += conv.opts("agent")
            text += " " + conv.t("notice.comment_agent")
        _ask(conv, text, options)

    async def post_comment(self, ev: AsyncEventData) -> None:
        """The comment goes to the agents' topic with the score."""
        conv = model(ev)
        comment = " ".join(str(ev.kwargs.get("text", "")).split())[:MAX_COMMENT]
        score = conv.data.get("score", "?")
        await _tell_agents(conv, "notice.agents_comment", score=score, text=comment)
        conv.say(conv.t("notice.comment_thanks"))

    async def skipped(self, ev: AsyncEventData) -> None:
        """No comment."""
        conv = model(ev)
        conv.say(conv.t("notice.comment_skipped"))


class ReminderFlow(Flow):
    """ "¿Quieres que te avise antes de tu fecha de corte?" after the account answer."""

    name = "reminder"
    needs_verification = True

    def states(self) -> list[dict[str, Any]]:
        """Waiting for Sí or No."""
        return [{"name": "idle"}, {"name": "offer"}]

    def transitions(self) -> list[dict[str, Any]]:
        """The offer's table."""
        return [
            {"trigger": "offer", "source": "*", "dest": "offer", "after": self.ask},
            {
                "trigger": "yes",
                "source": "offer",
                "dest": "idle",
                "before": self.subscribe,
                "after": self.back,
            },
            {
                "trigger": "no",
                "source": "offer",
                "dest": "idle",
                "after": [self.decline, self.back],
            },
        ]

    async def ask(self, ev: AsyncEventData) -> None:
        """The offer, with the cut-off date."""
        conv = model(ev)
        cutoff = conv.t.date(date.fromisoformat(conv.data["cutoff"]))
        options = [_option(conv, "yes", "notice.opt_yes"), _option(conv, "no", "notice.opt_no")]
        _ask(conv, conv.t("notice.reminder_offer", date=cutoff), options)

    async def subscribe(self, ev: AsyncEventData) -> None:
        """Reminders until the cut-off date has passed."""
        conv = model(ev)
        cutoff = date.fromisoformat(conv.data["cutoff"])
        subs = conv.ctx.subscriptions
        if subs is None or not await notices_on(conv):
            conv.say(conv.t("notice.disabled"))
            return
        service_id = int(conv.data["service_id"])
        until = end_of_day(conv, cutoff)
        await subs.subscribe(
            "reminder", str(service_id), conv.key, service_id=service_id, until=until
        )
        conv.say(_with_hint(conv, conv.t("notice.reminder_on", date=conv.t.date(cutoff))))

    async def decline(self, ev: AsyncEventData) -> None:
        """No reminders."""
        conv = model(ev)
        conv.say(conv.t("notice.reminder_off"))

    async def back(self, ev: AsyncEventData) -> None:
        """The client menu again."""
        conv = model(ev)
        for name in ("asked_at", "cutoff"):
            conv.data.pop(name, None)
        conv.jump("client", "again")
