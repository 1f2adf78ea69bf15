"""The dialog's entry point: a loaded session and an event in, the new session and the replies out.

It knows no channel and no runtime: the engine opens the turn, loads the session, calls
``Dialog.process`` (a customer's event), ``Dialog.from_agent`` (an agent wrote in the topic),
``Dialog.note`` (a reaction or an edit) or ``Dialog.timeout`` (no agent answered), then saves
what it returns and delivers the replies. Here: command words, option matching, the
verification gate, the idle reset, the new-session menu, relaying during a handoff, and the
agents' ``/cerrar``, ``/ticket`` and ``/verificar``. A step that fails leaves the session as it
was loaded and the customer gets an apology with the options they had plus an agent.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from flows.agent import WAITING
from flows.base import Conversation, FlowContext
from flows.identify import verify_by_agent
from flows.main import PUBLIC_OPTIONS
from flows.names import fold
from flows.notices import Notice, notice_turn
from flows.ports import HandoffError, PortUnavailable, SessionRecord
from flows.registry import Flows, build_flows, split_state
from flows.texts import LANGUAGES, Texts, catalogue
from flows.tickets import ticket_request
from flows.types import AgentMessage, ConvKey, Inbound, Kind, Option, Outbound
from integrations.wisphub.errors import WispHubError

log = logging.getLogger(__name__)

MAX_TEXT = 4000  # characters kept of one customer message
HISTORY = 8  # messages kept for the agents' card
MAX_JUMPS = 5
_LONG_DIGITS = re.compile(r"\d{6,}")
_COMMANDS = {
    "start": "start",
    "menu": "menu",
    "cancelar": "cancel",
    "cancel": "cancel",
    "agente": "agent",
    "agent": "agent",
    "asesor": "agent",
}
_GLOBAL_OPTIONS = {"agent": "agent", "menu": "menu"}

S = TypeVar("S", bound=SessionRecord)


def _words(kind: str) -> frozenset[str]:
    return frozenset(fold(w) for lang in LANGUAGES for w in catalogue(lang)[f"words.{kind}"])


_WORDS = {kind: _words(kind) for kind in ("menu", "agent", "cancel")}


def command_of(text: str) -> str | None:
    """A global command typed anywhere: ``/start``, ``/menu``, ``/cancelar``, ``/agente``, words."""
    folded = fold(text)
    if text.strip().startswith("/"):
        name = text.strip()[1:].split()[0].split("@")[0].lower() if text.strip()[1:] else ""
        return _COMMANDS.get(fold(name))
    for kind, words in _WORDS.items():
        if folded in words:
            return kind
    return None


def _mask_digits(text: str) -> str:
    return _LONG_DIGITS.sub(lambda m: "*" * (len(m[0]) - 3) + m[0][-3:], text)


@dataclass
class Turn(Generic[S]):
    """What one dialog step gives back to the runtime: the session to save, the replies to
    send, and what to count (tickets filed by origin; the kind of failure that was rolled back)."""

    session: S
    replies: list[Outbound]
    tickets: list[str] = field(default_factory=list)
    failure: str | None = None


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

    def new_session(self, lang: str | None = None, keep: dict[str, Any] | None = None) -> S:
        """A conversation at the public menu (the options flows/main.py offers)."""
        session = self._make(lang or self.ctx.settings.language)
        session.state = "main.menu"
        session.data.update(keep or {})
        t = Texts(session.lang)
        session.data["opts"] = [[i, t(f"opt.{i}")] for i in PUBLIC_OPTIONS]
        return session

    async def notice(self, key: ConvKey, loaded: S | None, notice: Notice) -> Turn[S] | None:
        """A notice as a turn: its replies and the session to save; None when nothing must be
        sent (h7's minimal form, ``flows.notices.notice_turn``; h8's dialog side replaces it)."""
        return await notice_turn(self, key, loaded, notice)

    # -- customer events -----------------------------------------------------------------------
    async def process(self, inbound: Inbound, loaded: S | None) -> Turn[S]:
        """One customer event on the session as loaded (None: a new conversation).

        When a port is unavailable (``PortUnavailable``) the loaded session is put back as it
        was and the error raised: the runtime runs the step again.
        """
        now = self.ctx.clock()
        fresh = loaded is None
        session = loaded or self.new_session()
        notes: list[str] = []
        idle = now - session.updated_at if session.updated_at else 0.0
        reset_after = self.ctx.settings.session_idle_reset
        if not fresh and idle > reset_after and session.state != WAITING:
            keep = {k: session.data[k] for k in ("topic",) if k in session.data}
            session = self.new_session(session.lang, keep)
            fresh = True
            notes.append("idle_reset")
        snapshot = session.to_json()
        conv = Conversation(inbound.key, session, inbound, self.ctx)
        for note in notes:
            conv.say(conv.t(note))
        tickets = conv.tickets  # a ticket filed before a later failure was filed all the same
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
        return Turn(session, conv.replies, tickets, failure)

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
            history.append(["c", _mask_digits(inbound.text[:200])])
        history.extend(["b", r.text[:200]] for r in replies if r.text)
        del history[:-HISTORY]

    async def _dispatch(self, conv: Conversation, inbound: Inbound, *, fresh: bool) -> None:
        session = conv.session
        text = inbound.text.strip()
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT]
            conv.say(conv.t("text_too_long", limit=MAX_TEXT))
        command = command_of(text) if inbound.kind in (Kind.TEXT, Kind.BUTTON) and text else None

        if session.state == WAITING:
            await self._while_handed_off(conv, inbound, text, command)
            return
        if inbound.kind in (Kind.MEDIA, Kind.OTHER):
            conv.say(conv.t("media_only_text"))
            return

        flow, state = split_state(session.state)
        if self.flows.needs_verification(flow) and not conv.verified:
            conv.end_verification()
            conv.say(conv.t("verification_expired"))
            await self._run(conv, "identify", "begin", {})
            return

        option = self._match_option(conv, inbound, text)
        if option is not None and option.id in _GLOBAL_OPTIONS:
            command = _GLOBAL_OPTIONS[option.id]
        if command is not None:
            await self._command(conv, command)
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
            await self._run(conv, flow, "text", {"text": text}, state=state)
            return

        if fresh:
            await self._run(conv, "main", "begin", {})
            return
        opts = [Option(i, label) for i, label in conv.data.get("opts", [])]
        conv.say(conv.t("not_understood"), opts)

    @staticmethod
    def _match_option(conv: Conversation, inbound: Inbound, text: str) -> Option | None:
        """The offered option the customer chose: pressed, typed by label, or by number."""
        offered = [Option(i, label) for i, label in conv.data.get("opts", [])]
        if inbound.kind == Kind.BUTTON and inbound.payload:
            found = next((o for o in offered if o.id == inbound.payload), None)
            return found or Option(inbound.payload, inbound.payload)
        if not text or not offered:
            return None
        number = text.lstrip("#").strip()
        if number.isdigit() and 1 <= int(number) <= len(offered):
            return offered[int(number) - 1]
        folded = fold(text)
        return next((o for o in offered if fold(o.label) == folded), None)

    async def _command(self, conv: Conversation, command: str) -> None:
        """Global commands work from any state."""
        if command == "agent":
            await self._run(conv, "agent", "begin", {})
        elif command == "cancel":
            conv.say(conv.t("cancelled"))
            await self._to_menu(conv, again=True)
        else:  # start, menu
            await self._to_menu(conv, again=command == "menu")

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
        label = text or conv.t(
            "agents.customer_media", type=inbound.media.type if inbound.media else "?"
        )
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
            if msg.media is not None:
                conv.replies.append(Outbound(key, msg.text, media=msg.media))
            elif text:
                conv.replies.append(Outbound(key, text))
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
