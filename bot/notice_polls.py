"""The notices' polls (issue 15): what changed in WispHub since the customers subscribed.

Each poll reads the registry (``bot.store.subscriptions``) and WispHub, and gives back
``Due`` items: a conversation, the notice to run, and what to forget once it went out.

- outage: ONE look-up per router per poll (the record of one subscriber's service carries the
  router's ``falla_general``), never one per customer; the outage's identity is the time its
  first subscriber came, so a poll run twice (a process killed mid-tick) names it alike;
- ticket: one look-up per ticket; "En Progreso" is told once (its dedupe mark), "Resuelto" or
  "Cerrado" asks whether it was solved and ends the subscription;
- reminder: one look-up per service; ``REMINDER_DAYS_BEFORE`` days (or fewer, when a poll was
  missed) before ``fecha_corte`` while the balance is pending, once per cut-off date;
- promise: the day before the promise's date (``until`` is the end of that date), once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.store.subscriptions import NoticeRegistry, Subscriber
from flows.notices import Notice
from flows.types import ConvKey
from integrations.wisphub.errors import WispHubError
from integrations.wisphub.models import Client, Ticket

log = logging.getLogger(__name__)

TOPICS = ("outage", "ticket", "reminder", "promise")
PROGRESS = {"en progreso"}
DONE = {"resuelto", "cerrado"}


class PollSource(Protocol):
    """The part of the WispHub client the polls read (fresh, never cached)."""

    async def fresh_client(self, service_id: int) -> Client | None: ...
    async def ticket(self, ticket_id: int) -> Ticket | None: ...


@dataclass(frozen=True)
class Due:
    """A notice to run for one conversation; ``forget``: its subscription ends once sent."""

    key: ConvKey
    notice: Notice
    topic: str
    target: str
    forget: bool = False


@dataclass
class Polls:
    """Every poll, over one registry and one WispHub client."""

    registry: NoticeRegistry
    wisphub: PollSource
    tz: ZoneInfo
    reminder_days: int = 2
    lookups: dict[str, int] = field(default_factory=dict)  # per poll kind, for the tests

    async def due(self, now: float) -> list[Due]:
        """Everything due now, poll by poll (a poll whose look-up fails waits for the next)."""
        found: list[Due] = []
        today = datetime.fromtimestamp(now, tz=self.tz).date()
        for topic in TOPICS:
            for target in await self.registry.targets(topic):
                subs = await self.registry.subscribers(topic, target)
                if not subs:
                    continue
                try:
                    found += await self._poll(topic, target, subs, today)
                except WispHubError as err:
                    log.warning(
                        "notice poll failed; the next one tries again",
                        extra={"topic": topic, "error": type(err).__name__},
                    )
        return found

    async def _poll(
        self, topic: str, target: str, subs: list[Subscriber], today: date
    ) -> list[Due]:
        self.lookups[topic] = self.lookups.get(topic, 0) + 1
        if topic == "outage":
            return await self._outage(target, subs)
        if topic == "ticket":
            return await self._ticket(target, subs)
        if topic == "reminder":
            return await self._reminder(target, subs, today)
        return self._promise(target, subs, today)

    async def _outage(self, router: str, subs: list[Subscriber]) -> list[Due]:
        client = await self.wisphub.fresh_client(subs[0].service_id)
        if client is None or client.router is None or client.router.outage:
            return []
        since = await self.registry.since("outage", router)
        event = f"outage:{router}:{int(since or 0)}"
        return [
            Due(s.key, Notice("outage_resolved", s.service_id, event), "outage", router, True)
            for s in subs
        ]

    async def _ticket(self, target: str, subs: list[Subscriber]) -> list[Due]:
        ticket = await self.wisphub.ticket(int(target))
        if ticket is None:
            return []
        status = ticket.status.strip().lower()
        if status in PROGRESS:
            kind, stage, forget = "ticket_progress", "progress", False
        elif status in DONE:
            kind, stage, forget = "ticket_resolved", "resolved", True
        else:
            return []
        params = {"ticket_id": target}
        event = f"ticket:{target}:{stage}"
        return [
            Due(s.key, Notice(kind, s.service_id, event, params), "ticket", target, forget)
            for s in subs
        ]

    async def _reminder(self, target: str, subs: list[Subscriber], today: date) -> list[Due]:
        client = await self.wisphub.fresh_client(int(target))
        if client is None or client.cutoff_date is None or client.balance <= 0:
            return []
        left = (client.cutoff_date - today).days
        if not 0 <= left <= self.reminder_days:
            return []
        cutoff = client.cutoff_date.isoformat()
        event = f"reminder:{target}:{cutoff}"
        notice = Notice("payment_reminder", int(target), event, {"date": cutoff})
        return [Due(s.key, notice, "reminder", target) for s in subs]

    def _promise(self, target: str, subs: list[Subscriber], today: date) -> list[Due]:
        found = []
        for s in subs:
            # ``until`` is the end of the promise's date: its last second is on that date.
            promised = datetime.fromtimestamp(s.until - 1, tz=self.tz).date()
            if promised - today != timedelta(days=1):
                continue
            event = f"promise:{target}:{promised.isoformat()}"
            params = {"date": promised.isoformat()}
            found.append(
                Due(s.key, Notice("promise_due", s.service_id, event, params), "promise", target)
            )
        return found
