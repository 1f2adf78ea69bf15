"""The engine: one customer event in, replies out, whatever the channel.

``handle``: in-process FIFO → open the turn (dedupe, rate limit, conversation lock and session
read in one store call) → flow → save with the outbox → deliver → save and unlock (one call).
A failure inside a flow leaves the session as it was loaded, and the customer gets an apology
with the options they had plus an agent. ``from_agent`` relays agents' topic messages and
commands; ``sweep`` ends handoffs that no agent answered in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from bot import metrics
from bot.channels.base import AgentMessage
from bot.store import LockLost, LockTimeout, Session, StoreError, StoreUnavailable, TurnStart
from flows.agent import WAITING
from flows.base import Conversation, FlowContext
from flows.identify import verify_by_agent
from flows.names import fold
from flows.ports import HandoffError
from flows.registry import Flows, build_flows, split_state
from flows.texts import LANGUAGES, Texts, catalogue
from flows.types import ConvKey, Inbound, Kind, Option, Outbound
from integrations.wisphub.errors import WispHubError
from integrations.wisphub.models import TicketRequest

log = logging.getLogger(__name__)

MAX_TEXT = 4000  # characters kept of one customer message
HISTORY = 8  # messages kept for the agents' card
MAX_JUMPS = 5
# The conversation lock's lease (and a process's key's): renewed while a turn runs (however
# long delivery takes). A process dead this long (kill -9) has its turns taken over at the next
# sweep: the customer's next message waits about this long plus one sweep.
LOCK_LEASE_SECONDS = 5.0
LOCK_WAIT_SECONDS = 20.0  # per attempt; a message gets two before it is reported as not handled
RATE_WINDOW = 60  # seconds of the per-conversation rate limit
STORE_RETRY_SECONDS = 20.0  # how long a turn waits out a store outage (a Redis restart)
_T = TypeVar("_T")  # a turn includes delivery, which may wait out Telegram's retry_after

# Sends replies in order; returns those that could not be delivered (kept in the outbox).
Deliver = Callable[[list[Outbound]], Awaitable[list[Outbound]]]
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


class Engine:
    """Channel-agnostic conversation handling (inject everything; build once)."""

    def __init__(self, ctx: FlowContext, flows: Flows | None = None) -> None:
        self.ctx = ctx
        self.flows = flows or build_flows()
        self.settings = ctx.settings.bot
        # Arrival-order turns, per conversation and (for agents' messages) per topic.
        self._fifo: dict[ConvKey | tuple[str, int], tuple[asyncio.Lock, int]] = {}

    # -- ordering ------------------------------------------------------------------------------
    @asynccontextmanager
    async def _fifo_turn(self, key: ConvKey | tuple[str, int]) -> AsyncIterator[None]:
        """In-process arrival order: asyncio.Lock wakes waiters first come, first served.

        It is taken before any other await, so events handed in in order keep that order.
        """
        lock, users = self._fifo.get(key, (asyncio.Lock(), 0))
        self._fifo[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._fifo[key]
            if users <= 1:
                del self._fifo[key]
            else:
                self._fifo[key] = (lock, users - 1)

    @asynccontextmanager
    async def _conversation(self, key: ConvKey) -> AsyncIterator[None]:
        """The store's conversation lock (one turn at a time across processes, first come,
        first served), waiting out a short store outage to take it."""
        async with AsyncExitStack() as stack:
            await self._enter_lock(stack, key)
            yield

    async def _enter_lock(
        self,
        stack: AsyncExitStack,
        key: ConvKey,
        ticket: str | None = None,
        wait: float = LOCK_WAIT_SECONDS,
    ) -> None:
        store = self.ctx.store
        await self._retry(
            lambda: stack.enter_async_context(
                store.lock(key, timeout=LOCK_LEASE_SECONDS, wait=wait, ticket=ticket)
            ),
            "lock",
        )

    async def _wait_for_lock(
        self, stack: AsyncExitStack, inbound: Inbound, ticket: str | None
    ) -> bool:
        """Wait for a busy conversation lock (an earlier turn's) in the place ``open_turn`` took
        in the line, never leaving it: a turn in flight always holds the lock or a place in
        line, which is how a dead process's turns are told from live ones (``take_orphans``).

        A crashed holder's turn is taken over within its lease and a sweep (and still goes
        first); a live turn that runs long is waited
        for twice ``LOCK_WAIT_SECONDS`` (a warning after the first). If even that is not
        enough, the message is reported (log and metric), never dropped silently.
        """
        conv = str(inbound.key)
        warn = asyncio.get_running_loop().call_later(
            LOCK_WAIT_SECONDS,
            lambda: log.warning("conversation lock still busy", extra={"conv": conv}),
        )
        try:
            await self._enter_lock(stack, inbound.key, ticket, wait=2 * LOCK_WAIT_SECONDS)
        except LockTimeout:
            taken = False
        else:
            taken = True
        finally:
            warn.cancel()
        if not taken:
            metrics.LOCK_TIMEOUTS.labels(inbound.key.channel).inc()
            log.error(
                "message not handled: its conversation stayed locked",
                extra={"conv": conv, "event": inbound.event_id},
            )
        return taken

    async def _retry(self, op: Callable[[], Awaitable[_T]], what: str) -> _T:
        """Run a store operation, retrying while the store is unavailable (a Redis restart)."""
        delay = 0.1
        deadline = time.monotonic() + STORE_RETRY_SECONDS
        while True:
            try:
                return await op()
            except StoreUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("session store unavailable, retrying", extra={"op": what})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- customer events -----------------------------------------------------------------------
    async def handle(
        self,
        inbound: Inbound,
        deliver: Deliver | None = None,
        *,
        placed: Callable[[], None] | None = None,
        journal: bool = True,
        resumed: TurnStart | None = None,
    ) -> list[Outbound]:
        """Handle one customer event.

        Without ``deliver`` the replies are returned (console, scenarios). With it, the session
        and its replies are saved first (the outbox), then delivered in order while the
        conversation is still locked, then the outbox is cleared of what was delivered: a
        process killed in between leaves the replies to be sent by the next one.

        ``placed`` is called once the event has its place in the conversation's order (its
        turn opened, or its place taken in the line of waiters that every process shares; or
        found a repeat): a webhook answers its caller then, so an update posted after that
        answer, to any process, is handled after this one. When the store cannot be reached,
        it is never called, and the caller does not confirm the event to its channel.

        From the opening of its turn to the save that makes its outcome durable, the event is
        in the store's journal of turns in flight: if this process dies meanwhile, another
        handles it again (``take_orphans``). ``journal=False`` for such a second try: an event
        that kills every process that handles it is tried twice, not forever.

        ``resumed``: the turn of a dead process, taken over in its place in the conversation's
        line (``take_orphans``): it is handled from there, in its order. A turn whose place
        another process took over (this one was taken for dead) stops and saves nothing.
        """
        try:
            return await self._handle(inbound, deliver, placed, journal, resumed)
        except LockLost:
            log.warning(
                "turn given up: another process took it over", extra={"conv": str(inbound.key)}
            )
            return []

    async def _handle(
        self,
        inbound: Inbound,
        deliver: Deliver | None,
        placed: Callable[[], None] | None,
        journal: bool,
        resumed: TurnStart | None,
    ) -> list[Outbound]:
        key = inbound.key
        store = self.ctx.store
        limit = self.settings.rate_limit_per_minute
        # In-process arrival order into the shared line; the line keeps it from there on.
        async with self._fifo_turn(key):
            start = resumed
            if start is None:
                start = await self._retry(
                    lambda: store.open_turn(
                        key,
                        inbound.event_id,
                        rate_scope=f"rate:{key}",
                        rate_window=RATE_WINDOW,
                        rate_limit=limit,
                        lease=LOCK_LEASE_SECONDS,
                        journal=inbound.to_json() if journal else None,
                    ),
                    "open",
                )
        if placed is not None:
            placed()
        if not start.claimed:
            log.info("duplicate event dropped", extra={"conv": str(key)})
            metrics.DUPLICATES.labels(key.channel).inc()
            return []
        metrics.labelled(metrics.MESSAGES_IN, key.channel).inc()
        if start.hits > limit:
            # Told once, on the first message over the limit; dropped quietly after that.
            log.warning(
                "conversation over its rate limit",
                extra={"conv": str(key), "count": start.hits},
            )
            return await self._answer_flood(inbound, start.hits == limit + 1, deliver)
        ticket, event = start.ticket, inbound.event_id
        async with AsyncExitStack() as stack:
            try:
                if start.locked:
                    # Nothing after the last save; with the ticket, never the next turn's lock.
                    stack.push_async_callback(store.release, key, ticket)
                elif not await self._wait_for_lock(stack, inbound, ticket):
                    await store.drop_turn(key, event)  # reported, not tried again
                    return []
                loaded = await self._retry(lambda: store.load(key), "load")
                if inbound.kind in (Kind.NOTE, Kind.MOVED):  # not a turn: nothing is answered
                    await self._not_a_turn(inbound, loaded)
                    await store.drop_turn(key, event)
                    return []
                pending = self._pending(loaded)
                session, replies = await self._retry(lambda: self._process(inbound, loaded), "flow")
            except asyncio.CancelledError:
                # Nothing of this turn was saved (it waited in line, or was cut short): forget
                # the event so that it is handled when it comes again (kept in the inbox, or
                # re-delivered).
                await store.unclaim_event(key.channel, event)
                await store.drop_turn(key, event)
                raise
            except StoreError:
                raise  # the journal keeps the turn: handled again once the store is back
            except Exception:
                with contextlib.suppress(StoreError):  # a bug: reported, not tried again
                    await store.drop_turn(key, event)
                raise
            return await self._commit(key, session, pending + replies, deliver, ticket, event)

    async def _answer_flood(
        self, inbound: Inbound, tell: bool, deliver: Deliver | None
    ) -> list[Outbound]:
        if not tell:
            return []
        loaded = await self.ctx.store.load(inbound.key)
        reply = [
            Outbound(
                inbound.key,
                Texts(loaded.lang if loaded else self.settings.bot_language)("rate_limited"),
            )
        ]
        if deliver is not None:
            await deliver(reply)
        return reply

    async def _not_a_turn(self, inbound: Inbound, loaded: Session | None) -> None:
        """A reaction or an edit (a line in the agents' topic during a handoff, else nothing),
        or a number change (the conversation and its topic move to the new chat id)."""
        key, store = inbound.key, self.ctx.store
        topic = loaded.data.get("topic") if loaded is not None else None
        if inbound.kind is Kind.MOVED and inbound.payload:
            new = ConvKey(key.channel, inbound.payload)
            moved = await self._retry(lambda: store.move(key, new), "move")
            if moved and topic is not None:
                await store.set_topic(int(topic), new)
            log.info("conversation moved to a new number", extra={"conv": str(key), "moved": moved})
            return
        if loaded is None or loaded.state != WAITING or topic is None or not inbound.text:
            return
        notes = Texts(self.settings.bot_language)
        if inbound.payload == "edit":
            label = notes("agents.customer_edit", text=inbound.text)
        else:
            label = notes("agents.customer_reaction", text=inbound.text)
        try:
            await self.ctx.handoff.forward(int(topic), inbound, label)
        except HandoffError:
            log.warning("note not posted in the topic", extra={"conv": str(key)})

    @staticmethod
    def _pending(session: Session | None) -> list[Outbound]:
        """Replies a previous turn saved but could not send (crash, channel down)."""
        if session is None or not session.outbox:
            return []
        pending = [Outbound.from_dict(raw) for raw in session.outbox]
        session.outbox = []
        return pending

    async def _commit(
        self,
        key: ConvKey,
        session: Session,
        replies: list[Outbound],
        deliver: Deliver | None,
        ticket: str | None = None,
        event: str | None = None,
    ) -> list[Outbound]:
        """Save the turn (with its replies as the outbox while they are sent) and give back the
        conversation lock with the last save: the caller holds it (``ticket``: its turn's).
        The first save takes the customer's turn (``event``) out of the journal."""
        ttl = self.settings.session_ttl
        store = self.ctx.store

        async def save(*, last: bool) -> None:
            # The flow ran once (it may have filed a ticket): only the save is retried.
            if last:
                await self._retry(
                    lambda: store.save_and_release(key, session, ttl, ticket, event), "save"
                )
            else:
                await self._retry(
                    lambda: store.save(key, session, ttl, event, ticket=ticket), "save"
                )

        if deliver is None or not replies:
            session.outbox = []
            await save(last=True)
            return replies
        session.outbox = [r.to_dict() for r in replies]
        await save(last=False)
        undelivered = await deliver(replies)
        session.outbox = [r.to_dict() for r in undelivered]
        await save(last=True)
        return replies

    def _new_session(self, lang: str | None = None, keep: dict[str, Any] | None = None) -> Session:
        session = Session(state="main.menu", lang=lang or self.settings.bot_language)
        session.data.update(keep or {})
        t = Texts(session.lang)
        session.data["opts"] = [[i, t(f"opt.{i}")] for i in ("client", "plans", "agent")]
        return session

    async def _process(
        self, inbound: Inbound, loaded: Session | None
    ) -> tuple[Session, list[Outbound]]:
        now = self.ctx.clock()
        fresh = loaded is None
        session = loaded or self._new_session()
        notes: list[str] = []
        idle = now - session.updated_at if session.updated_at else 0.0
        if not fresh and idle > self.settings.session_idle_reset and session.state != WAITING:
            keep = {k: session.data[k] for k in ("topic",) if k in session.data}
            session = self._new_session(session.lang, keep)
            fresh = True
            notes.append("idle_reset")
        snapshot = session.to_json()
        conv = Conversation(inbound.key, session, inbound, self.ctx)
        for note in notes:
            conv.say(conv.t(note))
        try:
            await self._dispatch(conv, inbound, fresh=fresh)
        except StoreUnavailable:
            # The step is run again once the store is back (nothing was saved or sent): from
            # the session as it was loaded.
            if loaded is not None and session is loaded:
                vars(loaded).update(vars(Session.from_json(snapshot)))
            raise
        except (WispHubError, HandoffError, LookupError) as err:
            log.warning(
                "flow step failed, conversation kept where it was",
                extra={"conv": str(inbound.key), "error": type(err).__name__},
            )
            session = Session.from_json(snapshot)
            conv = Conversation(inbound.key, session, inbound, self.ctx)
            key = "wisphub_down" if isinstance(err, WispHubError) else "error_generic"
            self._apologise(conv, key)
        except Exception:
            log.exception("flow step crashed, conversation kept", extra={"conv": str(inbound.key)})
            session = Session.from_json(snapshot)
            conv = Conversation(inbound.key, session, inbound, self.ctx)
            self._apologise(conv, "error_generic")
        self._remember(session, inbound, conv.replies)
        session.updated_at = now
        return session, conv.replies

    def _apologise(self, conv: Conversation, key: str) -> None:
        """An apology with a way forward: the options the customer had, plus an agent."""
        options = [Option(i, label) for i, label in conv.data.get("opts", [])]
        if not any(o.id == "agent" for o in options):
            options.append(Option("agent", conv.t("opt.agent")))
        conv.say(conv.t(key), options)

    @staticmethod
    def _remember(session: Session, inbound: Inbound, replies: list[Outbound]) -> None:
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

    def _match_option(self, conv: Conversation, inbound: Inbound, text: str) -> Option | None:
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

    # -- agents --------------------------------------------------------------------------------
    async def from_agent(self, msg: AgentMessage, deliver: Deliver | None = None) -> list[Outbound]:
        """An agent wrote in a topic: relay it, or run /cerrar or /ticket.

        A topic's messages keep their arrival order: its FIFO turn is taken before the topic
        look-up, the first await.
        """
        async with self._fifo_turn(("topic", msg.thread_id)):
            return await self._from_agent(msg, deliver)

    async def _from_agent(self, msg: AgentMessage, deliver: Deliver | None) -> list[Outbound]:
        key = await self.ctx.store.get_topic(msg.thread_id)
        if key is None:
            log.info(
                "agent message in a topic of no conversation", extra={"thread_id": msg.thread_id}
            )
            return []
        notes = Texts(self.settings.bot_language)
        async with self._conversation(key):
            loaded = await self.ctx.store.load(key)
            pending = self._pending(loaded)
            session = loaded or self._new_session()
            conv = Conversation(key, session, None, self.ctx)
            conv.replies.extend(pending)
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
            return await self._commit(key, session, conv.replies, deliver)

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
        settings = self.ctx.settings.wisphub
        subject, priority = settings.subject_for("other")
        request = TicketRequest(
            service_id=int(service_id),
            subject=subject,
            description=description[:1000],
            priority=priority,
            technician_id=settings.technician_id,
            department=settings.department,
            origin=settings.report_origin,
            requested_at=datetime.fromtimestamp(self.ctx.clock(), tz=UTC),
        )
        try:
            ticket = await self.ctx.wisphub.create_ticket(request)
        except WispHubError as err:
            await self._note(
                msg.thread_id, notes("agents.ticket_failed", reason=type(err).__name__)
            )
            return
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

    async def tell(
        self, thread_id: int, text_key: str, deliver: Deliver | None = None
    ) -> list[Outbound]:
        """Tell the customer whose handoff is in this topic something of the bot's (that the
        agents are slow): in their language, through the session's outbox; nothing when the
        handoff ended meanwhile."""
        key = await self.ctx.store.get_topic(thread_id)
        if key is None:
            return []
        async with self._conversation(key):
            session = await self.ctx.store.load(key)
            if session is None or session.state != WAITING:
                return []
            if session.data.get("topic") != thread_id:
                return []
            replies = [*self._pending(session), Outbound(key, Texts(session.lang)(text_key))]
            return await self._commit(key, session, replies, deliver)

    # -- time ----------------------------------------------------------------------------------
    async def sweep(self, deliver: Deliver | None = None) -> list[Outbound]:
        """Periodic care: offer a ticket where no agent answered within HANDOFF_TIMEOUT, and
        send replies left in an outbox (a crash between saving and sending, a channel down)."""
        due: list[ConvKey] = []
        now = self.ctx.clock()
        waiting = 0
        async for key, found in self.ctx.store.scan_conversations():
            waiting += found.state == WAITING
            if self._timed_out(found, now) or (deliver is not None and found.outbox):
                due.append(key)
        metrics.HANDOFFS_OPEN.set(waiting)
        replies: list[Outbound] = []
        for key in due:
            try:
                replies.extend(await self._sweep_one(key, deliver))
            except StoreUnavailable:
                raise  # down for every conversation: the next sweep tries again
            except Exception:
                # One conversation's fault (a topic, a bug) must not stop the sweep for others.
                log.exception("sweep of a conversation failed", extra={"conv": str(key)})
        return replies

    async def _sweep_one(self, key: ConvKey, deliver: Deliver | None) -> list[Outbound]:
        async with self._conversation(key):
            session = await self.ctx.store.load(key)
            if session is None:
                return []
            pending = self._pending(session)
            conv = Conversation(key, session, None, self.ctx)
            conv.replies.extend(pending)
            if self._timed_out(session, self.ctx.clock()):
                try:
                    await self._run(conv, "agent", "timeout", {}, state="waiting")
                except (HandoffError, WispHubError):
                    log.warning("handoff timeout step failed", extra={"conv": str(key)})
                session.updated_at = self.ctx.clock()
            return await self._commit(key, session, conv.replies, deliver)

    def _timed_out(self, session: Session, now: float) -> bool:
        data = session.data
        return (
            session.state == WAITING
            and not data.get("agent_answered", False)
            and now - float(data.get("handoff_since", now)) > self.settings.handoff_timeout
        )


def _raise_if_cancelled() -> None:
    """transitions turns a CancelledError inside a callback into "no transition"; a turn that is
    being cancelled (a stopping process) must end as cancelled, not as "not understood"."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def wall_clock() -> float:
    """The real clock (a function, so tests and scenarios can inject their own)."""
    return time.time()
