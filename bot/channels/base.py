"""What every channel adapter offers the runtime, and what both channels share: text splitting
and the wait for an event's place in its order (the per-key FIFO lock and the retry helper live
in ``bot.concurrency``, which the engine uses too).

Imports nothing from ``bot`` outside ``bot.channels``; channels import it, never the reverse.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from flows.types import AgentMessage as AgentMessage  # re-exported: the channels speak it
from flows.types import Channel, Inbound, Outbound


class DeliveryError(Exception):
    """A reply could not be delivered even after retries (logged and counted, never silent)."""


class WindowClosed(DeliveryError):
    """WhatsApp: the 24-hour customer service window is closed; free text cannot be sent."""


# The sending lane of what the current task sends: "notice" for the notices the bot sends first
# (issue 15), which wait behind the answers to customers who are writing; "reply" otherwise.
# A context variable, so that the engine's delivery path stays the same for both.
SEND_LANE: contextvars.ContextVar[str] = contextvars.ContextVar("send_lane", default="reply")


# The runtime's entry point for customer events; adapters call it for every Inbound.
InboundSink = Callable[[Inbound], Awaitable[None]]
# The same, with a callback called once the event has its place in its conversation's order
# (``Engine.handle``'s ``placed``): an adapter confirms the event to its channel only then.
PlacingSink = Callable[[Inbound, Callable[[], None]], Awaitable[None]]


def settle(future: asyncio.Future[bool], value: bool) -> None:
    """Give an event's "placed" future its outcome, once."""
    if not future.done():
        future.set_result(value)


def settle_when_done(future: asyncio.Future[bool], task: asyncio.Task[Any]) -> None:
    """An event's task ended: placed unless it failed first (raised, or returned False)."""
    settle(future, not task.cancelled() and task.exception() is None and task.result() is not False)


async def placed_within(futures: list[asyncio.Future[bool]], timeout: float) -> list[bool]:  # noqa: ASYNC109
    """Wait (bounded) for events' places: for each, whether it got one in time."""
    if futures:
        await asyncio.wait(futures, timeout=timeout)
    return [f.done() and f.result() for f in futures]


async def placed_in_time(future: asyncio.Future[bool], timeout: float) -> bool:  # noqa: ASYNC109
    """``placed_within`` for one event (a webhook call's): a timer, not ``asyncio.wait``'s
    machinery, on every message's path. Its future is settled False once the time is up."""
    if not future.done():
        timer = asyncio.get_running_loop().call_later(timeout, settle, future, False)
        try:
            await future
        finally:
            timer.cancel()
    return future.result()


AgentSink = Callable[[AgentMessage], Awaitable[None]]


class ChannelAdapter(Protocol):
    """A customer channel: sends replies; its inbound side calls an InboundSink."""

    name: Channel

    async def send(self, out: Outbound) -> None:
        """Deliver one reply in order; retry transient failures; raise DeliveryError at the end."""
        ...


# ---- shared by both channels ------------------------------------------------------------------


def split_text(text: str, limit: int) -> list[str]:
    """Cut text into parts of at most ``limit`` characters, at a line break or else a space in
    the second half of each part, a hard cut for one long word; blank text has no parts."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut < limit // 2:
            cut = max(cut, rest.rfind(" ", 0, limit + 1))
        if cut < limit // 2:
            cut = limit  # one long word: a hard cut rather than tiny parts or a refusal
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def bubbles(replies: list[Outbound]) -> list[Outbound]:
    """A turn's replies as the messages a customer sees: one bubble per turn.

    Consecutive texts to one conversation merge into one reply, joined by a blank line, up to
    and including the first that offers options: its options go on the merged reply. The dialog
    offers a turn's choices with its last reply, so a turn is one bubble; a reply with options
    ends its bubble so that a reply left over from an earlier turn (the outbox) keeps its own
    choices rather than lending them to the next turn's text. A media copy is never merged, so
    it stays in its place between the texts. Each channel's renderer then cuts the merged text
    to its own limits, options on the last part. Agents' messages are not passed through here
    (each is its own message).
    """
    merged: list[Outbound] = []
    for reply in replies:
        last = merged[-1] if merged else None
        if (
            last is None
            or last.key != reply.key
            or last.options
            or last.media is not None
            or reply.media is not None
        ):
            merged.append(reply)
            continue
        text = "\n\n".join(t for t in (last.text.strip(), reply.text.strip()) if t)
        merged[-1] = Outbound(last.key, text, reply.options)
    return merged


class TokenBucket:
    """Up to ``burst`` calls at once, then ``rate`` a second; rate <= 0 means unlimited."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()  # waiters take their turn in order
        self._low = asyncio.Lock()  # low-priority takers, one at a time
        self._high = 0  # ordinary takers waiting or taking
        # A low-priority taker leaves this many tokens for the ordinary ones (when the burst
        # allows it): an answer finds one at once while notices keep the bucket busy.
        self._reserve = 1.0 if self.burst >= 2 else 0.0

    async def take(self, *, low: bool = False) -> None:
        """Wait until one call may go out.

        ``low`` (notices): a low-priority taker goes only when no ordinary taker waits and a
        token is left over for one, and it waits outside the bucket's line, so an answer to a
        customer who is writing never waits behind the notices, however many are queued. The
        notices still get the whole rate when nobody else sends.
        """
        if self.rate <= 0:
            return
        if not low:
            self._high += 1
            try:
                await self._take()
            finally:
                self._high -= 1
            return
        async with self._low:
            while True:
                async with self._lock:
                    self._refill()
                    if not self._high and self._tokens >= 1 + self._reserve:
                        self._tokens -= 1
                        return
                    wait = max(1 + self._reserve - self._tokens, 0.1) / self.rate
                await asyncio.sleep(wait)

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def _take(self) -> None:
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    @property
    def idle(self) -> bool:
        """True when the bucket is full again (it can be forgotten)."""
        elapsed = time.monotonic() - self._stamp
        return self.rate <= 0 or self._tokens + elapsed * self.rate >= self.burst
