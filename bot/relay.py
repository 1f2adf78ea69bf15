"""Relays to the agents' group: a durable outbox per topic, sent outside any conversation lock.

Telegram lets a bot post about 20 messages a minute into one group. When relays were sent during
the customer's turn, the group's pacing held the conversation locks: in a burst of handoffs the
customers' next messages waited for their locks until they were given up. Now::

    customer's turn ─> RelayingAgents.forward / notify / the card ─> outbox of the topic ─> done
                       (Redis list wispbot:relay:{thread}; wispbot:relay:due, a sorted set of the
                        topics with pending relays, scored by their oldest one)
    RelayWorker (one per process): topics due, oldest first
        ─> claim the topic (wispbot:relay:lock:{thread}, a short lease: one sender a topic
           across processes) ─> read what is pending, several texts merged into one message
           (up to Telegram's 4096 characters), media sent in order
        ─> TelegramAgents (the channel honours 429 retry_after) ─> trim what was sent
        a topic whose oldest relay waited longer than RELAY_SLOW_SECONDS: its customer is told
        once per handoff (wispbot:relay:told:{thread}) that the agents are slow

Nothing is taken out of an outbox before Telegram accepted it: a process that dies mid-send
leaves it to the next sender (a rare duplicate, never a loss). A customer's message is queued
once (wispbot:relay:seen:{channel}:{event}), though its turn runs again when its process died
before the save. Topic changes (create, reopen, close) are not messages and still happen in the
turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot import metrics
from bot.channels.telegram.render import MAX_TEXT
from bot.channels.telegram.topics import TelegramAgents, card_text, location_text
from bot.concurrency import retry_delay
from bot.store.interfaces import SessionStore
from bot.store.outbox import Entry, Outbox, OutboxError, make_outbox
from flows.ports import AgentRequest, HandoffError
from flows.types import Inbound

log = logging.getLogger(__name__)

Tell = Callable[[int], Awaitable[None]]  # tell the customer of a topic that agents are slow

SEPARATOR = "\n\n"  # between merged relays
MAX_BATCH = 50  # entries read at once
DUE_LIMIT = 1000  # topics looked at in one pass
IDLE_POLL_SECONDS = 1.0  # how often an idle worker looks for relays another process queued
RETRY_FIRST, RETRY_MAX = 1.0, 60.0  # a topic whose send failed waits this long, doubling
MEDIA_ATTEMPTS = 3  # a media relay that keeps failing is noted in the topic as text


class RelayingAgents:
    """The handoff port whose posts go to the outbox (the turn returns at once); topic changes
    go straight to ``TelegramAgents``."""

    configured = True

    def __init__(
        self,
        agents: TelegramAgents,
        outbox: Outbox,
        *,
        clock: Callable[[], float] = time.time,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.agents = agents
        self.outbox = outbox
        self.clock = clock
        self.wake = wake

    async def _push(self, thread: int, entry: Entry, event: str | None = None) -> None:
        entry["at"] = self.clock()
        try:
            await self.outbox.push(thread, entry, event)
        except OutboxError as err:
            raise HandoffError(str(err)) from err
        self.wake()

    async def open(self, request: AgentRequest, thread_id: int | None) -> int:
        """Create or reopen the topic now (its id is needed); the card goes to the outbox."""
        thread = await self.agents.open_topic(request, thread_id)
        with contextlib.suppress(OutboxError):  # at worst a second notice
            await self.outbox.reset_tell(thread)
        await self._push(thread, {"text": card_text(request, self.agents.t)})
        return thread

    async def forward(self, thread_id: int, inbound: Inbound, label: str) -> None:
        """Text (and a shared location) as text to merge; other media kept whole, in order."""
        media = inbound.media
        event = f"{inbound.key.channel}:{inbound.event_id}"
        if media is None:
            await self._push(thread_id, {"text": label}, event)
        elif media.type == "location":
            await self._push(thread_id, {"text": location_text(media, label)}, event)
        else:
            await self._push(thread_id, {"inbound": inbound.to_json(), "label": label}, event)

    async def notify(self, thread_id: int, text: str) -> None:
        """A note of the bot's, in order after the relays before it."""
        await self._push(thread_id, {"text": text})

    async def close(self, thread_id: int) -> None:
        """Close the topic now (a bot admin still posts what is pending)."""
        await self.agents.close(thread_id)


def merge(entries: list[Entry], limit: int = MAX_TEXT) -> tuple[int, str | None]:
    """How many leading text relays go in one message, and its text (None: a media relay).

    Texts are joined while they fit Telegram's limit; a single longer one goes alone (the
    channel splits it).
    """
    if not entries or "text" not in entries[0]:
        return (1, None) if entries else (0, "")
    parts = [str(entries[0]["text"])]
    size = len(parts[0])
    for entry in entries[1:]:
        text = entry.get("text")
        if text is None or size + len(SEPARATOR) + len(text) > limit:
            break
        parts.append(str(text))
        size += len(SEPARATOR) + len(text)
    return len(parts), SEPARATOR.join(parts)


class RelayWorker:
    """Drains the topics' outboxes into the agents' group, oldest relay first."""

    def __init__(
        self,
        outbox: Outbox,
        agents: TelegramAgents,
        tell: Tell,
        *,
        slow_after: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.agents = agents
        self.tell = tell
        self.slow_after = slow_after
        self.clock = clock
        self.sent_messages = 0  # group messages this worker posted
        self.relayed = 0  # relays those carried
        self._wake = asyncio.Event()
        self._retry_at: dict[int, tuple[float, int]] = {}  # thread -> (monotonic, failures)
        self._media_failures: dict[int, int] = {}

    def wake(self) -> None:
        """Something was queued in this process: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: send what is due, and watch for topics that wait too long."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._send_loop())
            tasks.create_task(self._watch_loop())

    async def _send_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                busy = await self.drain_once()
            except OutboxError:
                log.warning("relay outbox unavailable, retrying")
                busy = False
            except Exception:  # the relays of every topic depend on this loop: never let it die
                log.exception("relay pass failed")
                busy = False
            _raise_if_cancelled()
            if not busy:  # woken by a relay queued here, or by the watch loop's tick
                # (no asyncio.timeout here: on 3.11 a cancel that meets its expiry is lost,
                # and a stopping process waited for this loop forever)
                await self._wake.wait()

    async def _watch_loop(self) -> None:
        # Apart from sending: a send may wait out a 429 for many seconds.
        while True:
            try:
                await self.watch_once()
            except OutboxError:
                log.warning("relay outbox unavailable, retrying")
            except Exception:
                log.exception("relay watch failed")
            self._wake.set()  # the sender looks for relays other processes queued
            await asyncio.sleep(IDLE_POLL_SECONDS)

    async def watch_once(self) -> None:
        """Tell the customers whose relays wait too long (once per handoff); update metrics."""
        due = await self.outbox.due(limit=DUE_LIMIT)
        now = self.clock()
        metrics.RELAY_TOPICS_WAITING.set(len(due))
        metrics.RELAY_OLDEST_SECONDS.set(max(0.0, now - due[0][1]) if due else 0.0)
        for thread, oldest in due:
            if now - oldest <= self.slow_after:
                break  # oldest first: the rest waited less
            if await self.outbox.first_tell(thread):
                await self._tell(thread)

    async def drain_once(self) -> bool:
        """One pass over the due topics, oldest first; True when something was sent."""
        sent = False
        for thread, _ in await self.outbox.due(limit=DUE_LIMIT):
            retry = self._retry_at.get(thread)
            if retry is not None and time.monotonic() < retry[0]:
                continue
            sent = await self._send_next(thread) or sent
        return sent

    async def _tell(self, thread: int) -> None:
        try:
            await self.tell(thread)
        except Exception:  # a notice must not stop the relays
            log.exception("slow-agents notice failed", extra={"topic": thread})

    async def _send_next(self, thread: int) -> bool:
        async with self.outbox.claim(thread) as mine:
            if not mine:
                return False  # another process sends this topic's relays
            entries = await self.outbox.peek(thread, MAX_BATCH)
            if not entries:
                await self.outbox.ack(thread, 0)  # nothing left: no longer due
                return False
            count, text = merge(entries)
            try:
                if text is not None:
                    await self.agents.notify(thread, text)
                else:
                    await self._send_media(thread, entries[0])
            except (HandoffError, ValueError, KeyError) as err:  # the last two: a bad entry
                self._failed(thread, str(err))
                await self._note_media_if_stuck(thread, entries[0])
                return False
            await self.outbox.ack(thread, count)
        self._retry_at.pop(thread, None)
        self._media_failures.pop(thread, None)
        self.sent_messages += 1
        self.relayed += count
        metrics.RELAY_GROUP_MESSAGES.inc()
        metrics.RELAYS_POSTED.inc(count)
        if count > 1:
            log.info("relays merged", extra={"topic": thread, "count": count})
        return True

    async def _send_media(self, thread: int, entry: Entry) -> None:
        inbound = Inbound.from_json(str(entry["inbound"]))
        await self.agents.forward(thread, inbound, str(entry.get("label", "")))

    def _failed(self, thread: int, reason: str) -> None:
        _, failures = self._retry_at.get(thread, (0.0, 0))
        delay = retry_delay(failures, RETRY_FIRST, RETRY_MAX)
        self._retry_at[thread] = (time.monotonic() + delay, failures + 1)
        log.warning(
            "relay not sent yet, kept in the outbox",
            extra={"topic": thread, "delay": delay, "error": reason[:200]},
        )

    async def _note_media_if_stuck(self, thread: int, entry: Entry) -> None:
        """A copy Telegram keeps refusing (the customer deleted it) must not hold back what
        the customer wrote after it: after a few tries its label goes as text instead."""
        if "inbound" not in entry:
            return
        failures = self._media_failures.get(thread, 0) + 1
        self._media_failures[thread] = failures
        if failures >= MEDIA_ATTEMPTS:
            label = str(entry.get("label") or "[?]")
            await self.outbox.replace_head(thread, {"at": entry["at"], "text": label})
            self._media_failures.pop(thread, None)


@dataclass
class Relay:
    """The port the engine uses and the worker that sends, wired together."""

    port: RelayingAgents
    worker: RelayWorker

    @classmethod
    def build(
        cls,
        agents: TelegramAgents,
        store: SessionStore,
        tell: Tell,
        *,
        slow_after: float,
        clock: Callable[[], float] = time.time,
    ) -> Relay:
        """One outbox beside the store, shared by the port and the worker."""
        outbox = make_outbox(store)
        worker = RelayWorker(outbox, agents, tell, slow_after=slow_after, clock=clock)
        port = RelayingAgents(agents, outbox, clock=clock, wake=worker.wake)
        return cls(port, worker)


def _raise_if_cancelled() -> None:
    """A send cut short by a stop can come back as an ordinary failure (the HTTP clients turn
    a cancelled request into an error): the loop must still end, or the stop waits for it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
