"""The ports the dialog needs from the runtime, as ``Protocol``s: the runtime implements them.

The handoff port (agents' topics) and what a customer's card carries. The runtime
(``bot``) implements them; the dialog imports nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from flows.types import ConvKey, Inbound


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
