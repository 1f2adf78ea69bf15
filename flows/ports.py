"""The ports the dialog needs from the runtime, as ``Protocol``s: the runtime implements them.

The handoff port (agents' topics) and what a customer's card carries; the failure counters
behind the verification lockouts; the topic map; the payment promises the bot registered; the
session record the dialog reads and writes; the notice subscriptions; a clock. The runtime
(``bot``) implements them; the dialog imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
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


@dataclass(frozen=True, slots=True)
class Promise:
    """A payment promise the bot registered for a service: until ``day``, for ``invoices``."""

    day: date
    invoices: tuple[int, ...]


class PromiseLedger(Protocol):
    """The payment promises the bot registered, per service, until their date: WispHub cannot
    list promises, so this is how a second promise is refused and the account shows the first."""

    async def remember(
        self, service_id: int, day: date, invoices: Sequence[int], until: float
    ) -> None:
        """Remember the service's promise until ``until`` (epoch seconds; gone after it)."""
        ...

    async def active(self, service_id: int) -> Promise | None:
        """The service's promise not yet past its date, or None."""
        ...


class DialogStore(FailureCounters, TopicMap, PromiseLedger, Protocol):
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
    # What the customer asked for, as an option id ("cancel_service", "payment_report", ...):
    # the card names it (``opt.<id>``); empty for a plain "talk to an agent".
    request: str = ""


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
        """Notify ``key`` about ``target`` of ``topic`` until ``until`` (epoch seconds).

        topic "outage": target = router id; "ticket": ticket id; "reminder" (cut-off reminders)
        and "promise" (a promise due tomorrow): service id, ``until`` the date's end.
        """
        ...

    async def unsubscribe(self, topic: str, target: str, key: ConvKey) -> None:
        """Forget one subscription."""
        ...

    async def opt_out(self, key: ConvKey) -> None:
        """The customer wants no notice at all (every one of theirs stops)."""
        ...

    async def opt_in(self, key: ConvKey) -> None:
        """The customer takes notices again."""
        ...

    async def opted_out(self, key: ConvKey) -> bool:
        """Whether the customer asked for no notices."""
        ...
