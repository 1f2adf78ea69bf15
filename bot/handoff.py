"""Handoff to human agents: the port the engine talks to, and its simple implementations.

The Telegram forum-topics implementation lives in ``bot/channels/telegram/topics.py``; the console and the
scenario runner use ``LocalAgents``, which keeps topics in memory; ``NoAgents`` is used when no
agents' chat is configured (customers are offered a ticket instead).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from flows.ports import AgentRequest, HandoffError, HandoffPort
from flows.types import ConvKey, Inbound

__all__ = ["AgentRequest", "HandoffError", "HandoffPort", "LocalAgents", "NoAgents"]


class NoAgents:
    """No agents' chat configured: handoff is never available."""

    configured = False

    async def open(self, request: AgentRequest, thread_id: int | None) -> int:
        """Never called: the flow checks ``configured`` first."""
        raise HandoffError("no agents' chat is configured")

    async def forward(self, thread_id: int, inbound: Inbound, label: str) -> None:
        """Nothing to forward to."""

    async def notify(self, thread_id: int, text: str) -> None:
        """Nothing to notify."""

    async def close(self, thread_id: int) -> None:
        """Nothing to close."""


@dataclass
class LocalTopic:
    """An in-memory agents' topic (console and scenario runs)."""

    thread_id: int
    key: ConvKey
    posts: list[str] = field(default_factory=list)
    open: bool = True


class LocalAgents:
    """Agents' topics kept in memory; the console prints them, the simulator inspects them."""

    configured = True

    def __init__(self) -> None:
        self.topics: dict[int, LocalTopic] = {}
        self._ids = itertools.count(100)

    async def open(self, request: AgentRequest, thread_id: int | None) -> int:
        """Create or reopen the topic and post a plain card."""
        topic = self.topics.get(thread_id) if thread_id is not None else None
        if topic is None:
            topic = LocalTopic(next(self._ids), request.key)
            self.topics[topic.thread_id] = topic
        topic.open = True
        who = request.verified_name or request.display_name
        asked = f" · {request.request}" if request.request else ""
        topic.posts.append(f"[card] {request.key.channel} · {who}{asked}")
        return topic.thread_id

    async def forward(self, thread_id: int, inbound: Inbound, label: str) -> None:
        """Record the customer's message in the topic."""
        self.topics[thread_id].posts.append(label)

    async def notify(self, thread_id: int, text: str) -> None:
        """Record a bot note in the topic."""
        self.topics[thread_id].posts.append(text)

    async def close(self, thread_id: int) -> None:
        """Mark the topic closed."""
        self.topics[thread_id].open = False

    def topic_of(self, key: ConvKey) -> LocalTopic | None:
        """The newest topic of a conversation."""
        found = [t for t in self.topics.values() if t.key == key]
        return found[-1] if found else None
