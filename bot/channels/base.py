"""What every channel adapter offers the runtime, and what both channels share: text splitting,
the per-key FIFO lock, the retry delay, and the wait for an event's place in its order.

Imports nothing from ``bot`` outside ``bot.channels``; channels import it, never the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

from flows.types import AgentMessage as AgentMessage  # re-exported: the channels speak it
from flows.types import Channel, Inbound, Outbound


class DeliveryError(Exception):
    """A reply could not be delivered even after retries (logged and counted, never silent)."""


class WindowClosed(DeliveryError):
    """WhatsApp: the 24-hour customer service window is closed; free text cannot be sent."""


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


def retry_delay(
    attempt: int, base: float, cap: float, jitter: tuple[float, float] = (1.0, 1.0)
) -> float:
    """The wait before retry ``attempt + 1``: ``base`` doubled per attempt, at most ``cap``,
    times a random factor within ``jitter`` (so many clients do not retry in step)."""
    return min(cap, base * 2.0 ** min(attempt, 30)) * random.uniform(*jitter)


K = TypeVar("K", bound=Hashable)


class KeyedLock(Generic[K]):
    """One FIFO lock per key (a chat): holders of one key run one at a time in arrival order
    (asyncio.Lock wakes waiters first come, first served); an unused key is forgotten."""

    def __init__(self) -> None:
        self._locks: dict[K, asyncio.Lock] = {}
        self._users: dict[K, int] = {}

    def busy(self, key: K) -> bool:
        """Whether someone holds or waits for ``key``."""
        return key in self._users

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the block."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._locks[key]
