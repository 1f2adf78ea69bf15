"""What every channel adapter offers the runtime, and what the runtime hands to adapters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

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
