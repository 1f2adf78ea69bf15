"""The engine runs turns: one customer event in, replies out, whatever the channel.

``handle``: in-process FIFO → open the turn (dedupe, rate limit, conversation lock and session
read in one store call) → the dialog (``flows.dialog``) → save with the outbox → deliver → save
and unlock (one call). ``from_agent`` runs an agent's topic message the same way; ``sweep``
hands the dialog the handoffs that no agent answered in time and sends what outboxes kept.
What is said, and when, is the dialog's; the engine knows no channel and no WispHub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TypeVar

from bot import metrics
from bot.concurrency import KeyedLock
from bot.notice_turn import run_notice
from bot.settings import BotSettings
from bot.store import (
    LockLost,
    LockTimeout,
    Session,
    SessionStore,
    StoreError,
    StoreUnavailable,
    TurnStart,
)
from flows.agent import WAITING
from flows.base import FlowContext
from flows.dialog import Dialog, Turn
from flows.notices import Notice
from flows.registry import Flows
from flows.texts import Texts
from flows.types import AgentMessage, ConvKey, Inbound, Kind, Outbound

log = logging.getLogger(__name__)

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


class Engine:
    """Channel-agnostic conversation handling (inject everything; build once)."""

    def __init__(
        self, ctx: FlowContext[SessionStore], settings: BotSettings, flows: Flows | None = None
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.dialog = Dialog(ctx, _blank_session, Session.from_json, flows)
        # Arrival-order turns, per conversation and (for agents' messages) per topic: each is
        # taken before any other await, so events handed in in order keep that order.
        self._fifo: KeyedLock[ConvKey | tuple[str, int]] = KeyedLock()

    # -- ordering ------------------------------------------------------------------------------
    @asynccontextmanager
    async def _conversation(self, key: ConvKey) -> AsyncIterator[str]:
        """The store's conversation lock (one turn at a time across processes, first come,
        first served), waiting out a short store outage to take it. Yields the lock's place in
        the conversation's line, for the turn's saves (fenced like a customer's turn)."""
        async with AsyncExitStack() as stack:
            yield await self._enter_lock(stack, key)

    async def _enter_lock(
        self,
        stack: AsyncExitStack,
        key: ConvKey,
        ticket: str | None = None,
        wait: float = LOCK_WAIT_SECONDS,
    ) -> str:
        store = self.ctx.store
        return await self._retry(
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
        async with self._fifo.hold(key):
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
                turn = await self._retry(lambda: self.dialog.process(inbound, loaded), "flow")
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
            self._count(turn)
            return await self._commit(
                key, turn.session, pending + turn.replies, deliver, ticket, event
            )

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
        await self.dialog.note(inbound, loaded)

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

    @staticmethod
    def _count(turn: Turn[Session]) -> None:
        """The dialog's tickets, rolled-back steps, free text understood and ratings, in the
        metrics."""
        for origin in turn.tickets:
            metrics.TICKETS_CREATED.labels(origin).inc()
        if turn.failure is not None:
            metrics.FLOW_ERRORS.labels(turn.failure).inc()
        for intent in turn.intents:
            metrics.count_understanding(intent, understood=intent != "out_of_scope")
        if turn.csat is not None:
            metrics.labelled(metrics.CSAT, str(turn.csat)).inc()

    # -- agents --------------------------------------------------------------------------------
    async def from_agent(self, msg: AgentMessage, deliver: Deliver | None = None) -> list[Outbound]:
        """An agent wrote in a topic: relay it, or run /cerrar or /ticket.

        A topic's messages keep their arrival order: its FIFO turn is taken before the topic
        look-up, the first await.
        """
        async with self._fifo.hold(("topic", msg.thread_id)):
            # A command may have acted outside the session (a ticket filed, a note posted).
            again = not msg.text.strip().startswith("/")
            return await self._unless_lost(
                lambda d: self._from_agent(msg, d), deliver, "agent's message", msg.thread_id, again
            )

    async def _from_agent(self, msg: AgentMessage, deliver: Deliver | None) -> list[Outbound]:
        key = await self.ctx.store.get_topic(msg.thread_id)
        if key is None:
            log.info(
                "agent message in a topic of no conversation", extra={"thread_id": msg.thread_id}
            )
            return []
        async with self._conversation(key) as ticket:
            loaded = await self.ctx.store.load(key)
            pending = self._pending(loaded)
            turn = await self.dialog.from_agent(key, loaded, msg)
            self._count(turn)
            return await self._commit(key, turn.session, pending + turn.replies, deliver, ticket)

    async def tell(
        self, thread_id: int, text_key: str, deliver: Deliver | None = None
    ) -> list[Outbound]:
        """Tell the customer whose handoff is in this topic something of the bot's (that the
        agents are slow): in their language, through the session's outbox; nothing when the
        handoff ended meanwhile."""
        key = await self.ctx.store.get_topic(thread_id)
        if key is None:
            return []
        return await self._unless_lost(
            lambda d: self._tell(key, thread_id, text_key, d), deliver, "notice", thread_id, True
        )

    async def _unless_lost(
        self,
        turn: Callable[[Deliver | None], Awaitable[list[Outbound]]],
        deliver: Deliver | None,
        what: str,
        thread_id: int,
        again: bool,
    ) -> list[Outbound]:
        """Run a turn of an agent's or the bot's (``store.lock``). When its place in the line
        was taken over (its process stalled for longer than a lease and was taken for dead), it
        saved nothing: it runs once more, at the end of the line, when nothing of it left the
        process yet (nothing delivered; ``again``: nothing done outside the session), else it is
        given up with a warning (what was delivered stays in the outbox the new owner sends)."""
        sent = False

        async def tracked(replies: list[Outbound]) -> list[Outbound]:
            nonlocal sent
            sent = True
            assert deliver is not None
            return await deliver(replies)

        for last in (False, True):
            try:
                return await turn(None if deliver is None else tracked)
            except LockLost:
                fate = "given up" if last or sent or not again else "tried again"
                log.warning(
                    f"{what} {fate}: its place was taken over", extra={"thread_id": thread_id}
                )
                if fate == "given up":
                    break
        return []

    async def _tell(
        self, key: ConvKey, thread_id: int, text_key: str, deliver: Deliver | None
    ) -> list[Outbound]:
        async with self._conversation(key) as ticket:
            session = await self.ctx.store.load(key)
            if session is None or session.state != WAITING:
                return []
            if session.data.get("topic") != thread_id:
                return []
            replies = [*self._pending(session), Outbound(key, Texts(session.lang)(text_key))]
            return await self._commit(key, session, replies, deliver, ticket)

    # -- notices -------------------------------------------------------------------------------
    async def notice(
        self,
        key: ConvKey,
        notice: Notice,
        deliver: Deliver | None = None,
        *,
        mark: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[Outbound] | None:
        """Run a notice the bot sends first as a turn (``bot.notice_turn``); None: not sent."""
        return await run_notice(self, key, notice, deliver, mark)

    # -- time ----------------------------------------------------------------------------------
    async def sweep(self, deliver: Deliver | None = None) -> list[Outbound]:
        """Periodic care: offer a ticket where no agent answered within HANDOFF_TIMEOUT, and
        send replies left in an outbox (a crash between saving and sending, a channel down)."""
        due: list[ConvKey] = []
        now = self.ctx.clock()
        waiting = 0
        async for key, found in self.ctx.store.scan_conversations():
            waiting += found.state == WAITING
            if self.dialog.timed_out(found, now) or (deliver is not None and found.outbox):
                due.append(key)
        metrics.HANDOFFS_OPEN.set(waiting)
        replies: list[Outbound] = []
        for key in due:
            try:
                replies.extend(await self._sweep_one(key, deliver))
            except StoreUnavailable:
                raise  # down for every conversation: the next sweep tries again
            except LockLost:
                # Its place was taken over: what it did not save (the outbox, a timeout) is the
                # new owner's or the next sweep's to do.
                log.warning(
                    "sweep of a conversation given up: its place was taken over",
                    extra={"conv": str(key)},
                )
            except Exception:
                # One conversation's fault (a topic, a bug) must not stop the sweep for others.
                log.exception("sweep of a conversation failed", extra={"conv": str(key)})
        return replies

    async def _sweep_one(self, key: ConvKey, deliver: Deliver | None) -> list[Outbound]:
        async with self._conversation(key) as ticket:
            session = await self.ctx.store.load(key)
            if session is None:
                return []
            replies = self._pending(session)
            if self.dialog.timed_out(session, self.ctx.clock()):
                replies += await self.dialog.timeout(key, session)
            return await self._commit(key, session, replies, deliver, ticket)


def _blank_session(lang: str) -> Session:
    return Session(lang=lang)


def wall_clock() -> float:
    """The real clock (a function, so tests and scenarios can inject their own)."""
    return time.time()
