"""The ports the dialog needs from the runtime, as ``Protocol``s: the runtime implements them.

The handoff port (agents' topics) and what a customer's card carries; the failure counters
behind the verification lockouts; the topic map; the session record the dialog reads and
writes; a clock. The runtime (``bot``) implements them; the dialog imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flows.types import ConvKey, Inbound

# Epoch seconds now (simulated in scenarios and tests).
Clock = Callable[[], float]


class PortUnavailable(Exception):
    """A port of the runtime could not be reached for now (the session store restarting): the
    dialog neither apologises nor moves on, the runtime runs the step again later."""


class SessionRecord(Protocol):
    """One conversation's state as the dialog sees it (the runtime's stored session)."""

    state: str
    data: dict[str, Any]  # JSON-safe values only
    lang: str
    verified_until: float | None  # epoch seconds
    updated_at: float
    outbox: list[dict[str, Any]]

    def to_json(self) -> str:
        """The record as stored (the dialog keeps it to roll a failed step back)."""
        ...


class FailureCounters(Protocol):
    """Counters of failed verifications per scope, in a window (the lockouts)."""

    async def register_failure(self, scope: str, window: int) -> int:
        """Count one failure in a window of ``window`` s started by the first; return the count."""
        ...

    async def failures_many(self, scopes: list[str]) -> list[int]:
        """The failures of several scopes at once, in their order."""
        ...

    async def clear_failures(self, *scopes: str) -> None:
        """Reset the counters of these scopes (a successful verification)."""
        ...


class TopicMap(Protocol):
    """Which conversation each agents' forum topic belongs to."""

    async def set_topic(self, thread_id: int, key: ConvKey) -> None:
        """Remember the topic's conversation."""
        ...

    async def get_topic(self, thread_id: int) -> ConvKey | None:
        """The conversation of a topic, or None."""
        ...


class DialogStore(FailureCounters, TopicMap, Protocol):
    """The slice of the session store the dialog uses (the runtime loads and saves sessions)."""


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """Everything the agents' card shows about a customer who asked for a human."""

    key: ConvKey
    display_name: str
    verified_name: str | None = None
    service_id: int | None = None
    plan: str = ""
    balance: str = ""
    open_tickets: tuple[str, ...] = ()
    history: tuple[tuple[str, str], ...] = ()  # ("c" customer | "b" bot, text), oldest first
    lang: str = "es"


class HandoffError(Exception):
    """The agents' side could not be reached."""


class HandoffPort(Protocol):
    """Where conversations handed to humans go."""

    @property
    def configured(self) -> bool:
        """True when there is an agents' chat at all."""
        ...

    async def open(self, request: AgentRequest, thread_id: int | None) -> int:
        """Create (or reopen ``thread_id``) the customer's topic and post the card; return it."""
        ...

    async def forward(self, thread_id: int, inbound: Inbound, label: str) -> None:
        """Relay one customer message (text, or a copy of media) into the topic."""
        ...

    async def notify(self, thread_id: int, text: str) -> None:
        """Post a note of the bot's into the topic."""
        ...

    async def close(self, thread_id: int) -> None:
        """Close the topic (the conversation went back to the bot); never raises: a failure
        is logged."""
        ...


class Subscriptions(Protocol):
    """Who asked for (or was promised) a notice. Written by the dialog, read by the runtime."""

    async def subscribe(
        self, topic: str, target: str, key: ConvKey, *, service_id: int, until: float
    ) -> None:
        """Subscribe a conversation to a topic's target until ``until`` (epoch seconds).

        topic "outage": target = router id; "ticket": target = ticket id; "reminder": target =
        service id (cut-off reminders); "promise": target = service id (promise due tomorrow;
        ``until`` = the end of the promise date)."""
        ...

    async def unsubscribe(self, topic: str, target: str, key: ConvKey) -> None:
        """Forget one subscription."""
        ...

    async def opt_out(self, key: ConvKey) -> None:
        """No notice at all for this conversation."""
        ...

    async def opt_in(self, key: ConvKey) -> None:
        """Notices again."""
        ...

    async def opted_out(self, key: ConvKey) -> bool:
        """True after ``opt_out`` (until ``opt_in``)."""
        ...
