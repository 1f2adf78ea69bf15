"""The dialog's entry point: a loaded session and an event in, the new session and the replies out.

It knows no channel and no runtime: the engine opens the turn, loads the session, calls
``Dialog.process`` (a customer's event), ``Dialog.from_agent`` (an agent wrote in the topic),
``Dialog.note`` (a reaction or an edit), ``Dialog.timeout`` (no agent answered) or
``Dialog.notice`` (the bot speaks first, flows/noticeflow.py), then saves what it returns and
delivers the replies. Here: commands and offered options first (``flows.commands``), then free
text (``flows.route``), the verification gate, the idle reset, the new-session menu, relaying
during a handoff, and the agents' ``/cerrar``, ``/ticket`` and ``/verificar``. A step that
fails leaves the session as it was loaded and the customer gets an apology with the options
they had plus an agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from flows import formats, noticeflow
from flows.agent import WAITING
from flows.base import Conversation, FlowContext
from flows.commands import GLOBAL_OPTIONS, WORDS, command_of, mask_digits, match_offered
from flows.desk import agent_reply, media_note
from flows.identify import verify_by_agent
from flows.main import PUBLIC_OPTIONS
from flows.notices import Notice, rating_wanted, watch_ticket
from flows.ports import HandoffError, PortUnavailable, SessionRecord
from flows.registry import Flows, build_flows, split_state
from flows.route import ASK, FreeText
from flows.texts import LANGUAGES, Texts
from flows.tickets import ticket_request
from flows.types import AgentMessage, ConvKey, Inbound, Kind, Option, Outbound
from integrations.wisphub.errors import WispHubError

log = logging.getLogger(__name__)

MAX_TEXT = 4000  # characters kept of one customer message
HISTORY = 8  # messages kept for the agents' card
MAX_JUMPS = 5
FIRST = "main.idle"  # a conversation the bot only spoke in (a notice)

S = TypeVar("S", bound=SessionRecord)


@dataclass
class Turn(Generic[S]):
    """What one dialog step gives back to the runtime: the session to save, the replies to
    send, and what to count (tickets filed by origin; the kind of failure that was rolled back;
    the intents of free text understood, ``out_of_scope`` for a message not understood; a
    rating 1-5 the customer gave)."""

    session: S
    replies: list[Outbound]
    tickets: list[str] = field(default_factory=list)
    failure: str | None = None
    intents: list[str] = field(default_factory=list)
    csat: int | None = None


class Dialog(Generic[S]):
    """The whole dialog over the shared flow machines (build once; one call per event).

    ``new_session`` makes an empty session in a language; ``restore`` reads one back from the
    JSON its ``to_json`` gave (to roll a failed step back).
    """

    def __init__(
        self,
        ctx: FlowContext[Any],
        new_session: Callable[[str], S],
        restore: Callable[[str], S],
        flows: Flows | None = None,
    ) -> None:
        self.ctx = ctx
        self.flows = flows or build_flows()
        self._make = new_session
        self._restore = restore
        understanding = ctx.understanding
        self.free = (
            FreeText(understanding, self.flows, self._run, self._to_menu, WORDS["agent"])
            if understanding is not None
            else None
        )
        formats.warm_up(ctx.settings.money, LANGUAGES)

    def new_session(self, lang: str | None = None, keep: dict[str, Any] | None = None) -> S:
        """A conversation at the public menu (the options flows/main.py offers)."""
        session = self._make(lang or self.ctx.settings.language)
        session.state = "main.menu"
        session.data.update(keep or {})
        t = Texts(session.lang)
        session.data["opts"] = [[i, t(f"opt.{i}")] for i in PUBLIC_OPTIONS]
        return session

    # -- customer events -----------------------------------------------------------------------
    async def process(self, inbound: Inbound, loaded: S | None) -> Turn[S]:
        """One customer event on the session as loaded (None: a new conversation).

        When a port is unavailable (``PortUnavailable``) the loaded session is put back as it
        was and the error raised: the runtime runs the step again.
        """
        now = self.ctx.clock()
        fresh = loaded is None or loaded.state == FIRST  # a notice's session: nothing said yet
        session = loaded or self.new_session()
        notes: list[str] = []
        idle = now - session.updated_at if session.updated_at else 0.0
        reset_after = self.ctx.settings.session_idle_reset
        if (
            not fresh
            and idle > reset_after
            and session.state != WAITING
            and not noticeflow.still_asked(
                self.flows,
                session,
                match_offered(session.data, session.lang, inbound, inbound.text),
                now,
            )
        ):
            keep = {k: session.data[k] for k in ("topic",) if k in session.data}
            session = self.new_session(session.lang, keep)
            fresh = True
            notes.append("idle_reset")
        snapshot = session.to_json()
        conv = Conversation(inbound.key, session, inbound, self.ctx)
        for note in notes:
            conv.say(conv.t(note))
        tickets = conv.tickets  # a ticket filed before a later failure was filed all the same
        intents = conv.intents  # and a message understood was understood
        failure: str | None = None
        try:
            await self._dispatch(conv, inbound, fresh=fresh)
        except PortUnavailable:
            # The step is run again once the port is back (nothing was saved or sent): from
            # the session as it was loaded.
            if loaded is not None and session is loaded:
                vars(loaded).update(vars(self._restore(snapshot)))
            raise
        except (WispHubError, HandoffError, LookupError) as err:
            log.warning(
                "flow step failed, conversation kept where it was",
                extra={"conv": str(inbound.key), "error": type(err).__name__},
            )
            session = self._restore(snapshot)
            conv = Conversation(inbound.key, session, inbound, self.ctx)
            failure = _failure_kind(err)
            self._apologise(
                conv, "wisphub_down" if isinstance(err, WispHubError) else "error_generic"
            )
        except Exception:
            log.exception("flow step crashed, conversation kept", extra={"conv": str(inbound.key)})
            session = self._restore(snapshot)
            conv = Conversation(inbound.key, session, inbound, self.ctx)
            failure = "crash"
            self._apologise(conv, "error_generic")
        self._remember(session, inbound, conv.replies)
        session.updated_at = now
        return Turn(session, conv.replies, tickets, failure, intents, conv.csat)

    def _apologise(self, conv: Conversation, key: str) -> None:
        """An apology with a way forward: the options the customer had, plus an agent."""
        options = [Option(i, label) for i, label in conv.data.get("opts", [])]
        if not any(o.id == "agent" for o in options):
            options.append(Option("agent", conv.t("opt.agent")))
        conv.say(conv.t(key), options)

    @staticmethod
    def _remember(session: SessionRecord, inbound: Inbound, replies: list[Outbound]) -> None:
        history: list[list[str]] = session.data.setdefault("history", [])
        if inbound.text:
            history.append(["c", mask_digits(inbound.text[:200])])
        history.extend(["b", r.text[:200]] for r in replies if r.text)
        del history[:-HISTORY]

    async def _dispatch(self, conv: Conversation, inbound: Inbound, *, fresh: bool) -> None:
        session = conv.session
        text = inbound.text.strip()
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT]
            conv.say(conv.t("text_too_long", limit=MAX_TEXT))
        command = command_of(text) if inbound.kind in (Kind.TEXT, Kind.BUTTON) and text else None

        if command in ("mute", "unmute"):
            await noticeflow.set_notices(
                conv, on=command == "unmute", offer_again=session.state != WAITING
            )
            return
        if session.state == WAITING:
            await self._while_handed_off(conv, inbound, text, command)
            return
        flow, state = split_state(session.state)
        # Media is read only where a flow asks for it (a payment receipt).
        takes_media = inbound.kind == Kind.MEDIA and self.flows.accepts(flow, state, "media")
        if inbound.kind in (Kind.MEDIA, Kind.OTHER) and not takes_media:
            conv.say(conv.t("media_only_text"))
            return

        if self.flows.needs_verification(flow) and not conv.verified:
            conv.end_verification()
            conv.say(conv.t("verification_expired"))
            await self._run(conv, "identify", "begin", {})
            return
        if takes_media:
            await self._run(conv, flow, "media", {}, state=state)
            return

        misses = conv.data.pop("misses", 0)  # misunderstandings in a row (flows.route)
        option = match_offered(conv.data, conv.session.lang, inbound, text)
        if command is None and noticeflow.off_question(self.flows, flow, state, option, text):
            noticeflow.rest_menu(conv)  # the customer is at their menu
            flow, state = split_state(session.state)
            option = match_offered(conv.data, conv.session.lang, inbound, text)
        if option is not None and option.id in GLOBAL_OPTIONS:
            command = GLOBAL_OPTIONS[option.id]
        if command is not None:
            await self._command(conv, command)
            return

        if option is not None and option.id.startswith(ASK) and self.free is not None:
            conv.intents.append(option.id[len(ASK) :])
            await self.free.act(conv, option.id[len(ASK) :], {})
            return
        if option is not None:
            trigger, _, arg = option.id.partition(":")
            if self.flows.accepts(flow, state, trigger):
                conv.data.pop("opts", None)
                if await self._run(conv, flow, trigger, {"arg": arg}, state=state):
                    return
        elif inbound.kind == Kind.CONTACT and self.flows.accepts(flow, state, "contact"):
            await self._run(conv, flow, "contact", {}, state=state)
            return
        elif text and self.flows.takes_text(flow, state):
            if self.free is None or not await self.free.interrupts(conv, text):
                await self._run(conv, flow, "text", {"text": text}, state=state)
            return
        elif text and inbound.kind == Kind.TEXT and self.free is not None:
            await self.free.route(conv, text, fresh=fresh, misses=misses)
            return

        if fresh:
            await self._run(conv, "main", "begin", {})
            return
        opts = [Option(i, label) for i, label in conv.data.get("opts", [])]
        conv.say(conv.t("not_understood"), opts)

    async def _command(self, conv: Conversation, command: str) -> None:
        """Global commands work from any state."""
        conv.data.pop("want", None)  # a need typed before is dropped with the step it began
        if command == "agent":
            await self._run(conv, "agent", "begin", {})
        elif command == "cancel":
            conv.say(conv.t("cancelled"))
            await self._to_menu(conv, again=True)
        elif command == "back":
            await self._back(conv)
        else:  # start, menu
            await self._to_menu(conv, again=command == "menu")

    async def _back(self, conv: Conversation) -> None:
        """ "atrás": the flow's step before this one where it has one, else the current menu."""
        flow, state = split_state(conv.session.state)
        if self.flows.accepts(flow, state, "back"):
            conv.data.pop("opts", None)
            await self._run(conv, flow, "back", {}, state=state)
        else:
            await self._to_menu(conv, again=True)

    async def _to_menu(self, conv: Conversation, *, again: bool) -> None:
        if conv.verified:
            await self._run(conv, "client", "again" if again else "menu", {})
        else:
            await self._run(conv, "main", "again" if again else "begin", {})

    async def _while_handed_off(
        self, conv: Conversation, inbound: Inbound, text: str, command: str | None
    ) -> None:
        """The bot stays quiet: everything goes to the agents' topic, except the commands that
        leave the handoff (/cancelar, /menu, /start; the agents are told in the topic)."""
        if command in ("cancel", "menu", "start"):
            await self._run(conv, "agent", "leave", {}, state="waiting")
            return
        thread = conv.data.get("topic")
        if thread is None:  # cannot happen unless the data was damaged; do not trap the customer
            await self._run(conv, "main", "begin", {})
            return
        label = text or media_note(Texts(self.ctx.settings.language), inbound.media)
        await self.ctx.handoff.forward(int(thread), inbound, label)

    async def _run(
        self,
        conv: Conversation,
        flow: str,
        trigger: str,
        kwargs: dict[str, Any],
        *,
        state: str = "idle",
    ) -> bool:
        """Fire a trigger on a flow's shared machine, then follow the jumps it asked for."""
        conv.state = state
        done = await self.flows.machines[flow].events[trigger].trigger(conv, **kwargs)
        _raise_if_cancelled()
        current = flow
        for _ in range(MAX_JUMPS):
            if conv.goto is None:
                break
            current, next_trigger = conv.goto
            conv.goto = None
            conv.state = "idle"
            await self.flows.machines[current].events[next_trigger].trigger(conv)
            _raise_if_cancelled()
        conv.session.state = f"{current}.{conv.state}"
        return bool(done)

    async def note(self, inbound: Inbound, loaded: SessionRecord | None) -> None:
        """A customer's reaction or edit: a line in the agents' topic during a handoff, else
        nothing (it is not a turn: nothing is answered or saved)."""
        topic = loaded.data.get("topic") if loaded is not None else None
        if loaded is None or loaded.state != WAITING or topic is None or not inbound.text:
            return
        notes = Texts(self.ctx.settings.language)
        if inbound.payload == "edit":
            label = notes("agents.customer_edit", text=inbound.text)
        else:
            label = notes("agents.customer_reaction", text=inbound.text)
        try:
            await self.ctx.handoff.forward(int(topic), inbound, label)
        except HandoffError:
            log.warning("note not posted in the topic", extra={"conv": str(inbound.key)})

    # -- agents --------------------------------------------------------------------------------
    async def from_agent(self, key: ConvKey, loaded: S | None, msg: AgentMessage) -> Turn[S]:
        """An agent wrote in the conversation's topic: relay it, or run /cerrar, /ticket or
        /verificar (the bot's answers to the agents are notes in the topic)."""
        notes = Texts(self.ctx.settings.language)
        session = loaded or self.new_session()
        conv = Conversation(key, session, None, self.ctx)
        text = msg.text.strip()
        word = text.split()[0].split("@")[0].lower() if text.startswith("/") else ""
        if word == "/cerrar":
            if session.state == WAITING:
                await self._run(conv, "agent", "end", {}, state="waiting")
                if await rating_wanted(conv):  # after the menu: its options keep working
                    await self._run(conv, "notice", "rate", {})
            await self._note(msg.thread_id, notes("agents.closed"))
            await self.ctx.handoff.close(msg.thread_id)
        elif word == "/ticket":
            await self._agent_ticket(conv, msg, text.partition(" ")[2].strip(), notes)
        elif word == "/verificar":
            note = await verify_by_agent(conv, text.partition(" ")[2], notes)
            await self.ctx.handoff.notify(msg.thread_id, note)
        else:
            if session.state != WAITING:  # an agent took the conversation up again
                session.state = WAITING
                conv.data["topic"] = msg.thread_id
            conv.data["agent_answered"] = True
            if msg.media is not None or text:
                conv.replies.append(agent_reply(conv, msg))
        session.updated_at = self.ctx.clock()
        return Turn(session, conv.replies, conv.tickets)

    async def _agent_ticket(
        self, conv: Conversation, msg: AgentMessage, description: str, notes: Texts
    ) -> None:
        if not description:
            await self._note(msg.thread_id, notes("agents.ticket_usage"))
            return
        service_id = conv.data.get("service_id")
        if service_id is None:
            await self._note(msg.thread_id, notes("agents.ticket_needs_verified"))
            return
        request = ticket_request(
            self.ctx.settings.tickets,
            service_id=int(service_id),
            category="other",
            description=description[:1000],
            requested_at=datetime.fromtimestamp(self.ctx.clock(), tz=UTC),
        )
        try:
            ticket = await self.ctx.wisphub.create_ticket(request)
        except WispHubError as err:
            await self._note(
                msg.thread_id, notes("agents.ticket_failed", reason=type(err).__name__)
            )
            return
        conv.tickets.append("agent")
        text = conv.t("agent_opened_ticket", id=ticket.id)
        if await watch_ticket(conv, ticket.id):
            text += " " + conv.t("notice.ticket_watch")
        conv.say(text)
        await self._note(
            msg.thread_id, notes("agents.ticket_created", id=ticket.id, service_id=service_id)
        )

    async def _note(self, thread_id: int, text: str) -> None:
        """A note of the bot's in a topic, best effort: an agent's turn that failed on it would
        be sent again by Telegram, and again."""
        try:
            await self.ctx.handoff.notify(thread_id, text)
        except HandoffError:
            log.warning("note not posted in the topic", extra={"thread_id": thread_id})

    # -- notices -------------------------------------------------------------------------------
    async def notice(self, key: ConvKey, loaded: S | None, notice: Notice) -> Turn[S] | None:
        """The bot speaks first (the runtime checked the opt-out): the notice's replies and the
        session to save, its question's answers understood; None when nothing is to be sent
        (a handoff in progress, or a notice that cannot be told)."""
        session = loaded or self.new_session()
        if session.state == WAITING:
            return None
        conv = Conversation(key, session, None, self.ctx)
        if notice.kind in noticeflow.QUESTIONS and noticeflow.question_ok(notice):
            await self._run(conv, "notice", notice.kind, {"params": dict(notice.params)})
            session.updated_at = self.ctx.clock()
        else:
            text = noticeflow.plain_notice(conv, notice)
            if text is None:
                log.warning("notice not told", extra={"conv": str(key), "kind": notice.kind})
                return None
            conv.say(text)
            if loaded is None:
                session.state = FIRST  # the customer's first message is greeted
        return Turn(session, conv.replies)

    # -- time ----------------------------------------------------------------------------------
    def timed_out(self, session: SessionRecord, now: float) -> bool:
        """A handoff that no agent answered within HANDOFF_TIMEOUT."""
        data = session.data
        return (
            session.state == WAITING
            and not data.get("agent_answered", False)
            and now - float(data.get("handoff_since", now)) > self.ctx.settings.handoff_timeout
        )

    async def timeout(self, key: ConvKey, session: S) -> list[Outbound]:
        """No agent answered: the customer is offered a ticket (a failing step is logged)."""
        conv = Conversation(key, session, None, self.ctx)
        try:
            await self._run(conv, "agent", "timeout", {}, state="waiting")
        except (HandoffError, WispHubError):
            log.warning("handoff timeout step failed", extra={"conv": str(key)})
        session.updated_at = self.ctx.clock()
        return conv.replies


def _failure_kind(err: Exception) -> str:
    """The ``kind`` label of ``wispbot_flow_errors_total`` for a step rolled back."""
    if isinstance(err, WispHubError):
        return "wisphub"
    if isinstance(err, HandoffError):
        return "handoff"
    return "lookup"


def _raise_if_cancelled() -> None:
    """transitions turns a CancelledError inside a callback into "no transition"; a turn that is
    being cancelled (a stopping process) must end as cancelled, not as "not understood"."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
