"""Sending the notices the polls found (issue 15), each as a turn on the low-priority lane.

For each ``Due``: an opted-out customer is skipped (counted); a notice already marked is not
run again; a WhatsApp customer whose 24-hour window is known closed gets the kind's approved
template instead of the turn's free text, or nothing (counted ``no_template``) when the ISP
registered none. The turn itself (``Engine.notice``) takes the notice's dedupe mark under the
conversation lock, so two processes running the same tick send it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bot import metrics
from bot.channels.base import SEND_LANE, DeliveryError
from bot.engine import Deliver, Engine
from bot.notice_polls import Due
from bot.store.subscriptions import NoticeRegistry
from flows.notices import Notice
from flows.types import Outbound

log = logging.getLogger(__name__)

CONCURRENCY = 16  # notices in flight at once (the channels' pacing sets the rate: 30/s
# needs a handful; more only competes with the answers for the event loop)
# A notice about to start waits while answers are being worked on, at most this long in all.
ANSWERS_FIRST_STEP = 0.01
ANSWERS_FIRST_STEPS = 50
# The template setting of each notice kind, and the parameters its body takes ({{1}}, ...).
TEMPLATE_OF = {
    "outage_resolved": "outage_resolved",
    "ticket_progress": "ticket_update",
    "ticket_resolved": "ticket_update",
    "payment_reminder": "payment_reminder",
    "promise_due": "payment_reminder",
    "csat": "csat",
}


class WhatsAppNotices(Protocol):
    """What the notices need of the WhatsApp channel."""

    async def window_known_closed(self, wa_id: str) -> bool: ...
    async def send_template(
        self, wa_id: str, name: str, language: str, params: list[str]
    ) -> None: ...


def template_params(notice: Notice, status: Callable[[str], str]) -> list[str]:
    """A template's body parameters for a notice (README: the templates to register)."""
    params = notice.params
    if notice.kind in ("ticket_progress", "ticket_resolved"):
        return [params.get("ticket_id", ""), status(notice.kind)]
    if notice.kind in ("payment_reminder", "promise_due"):
        return [params.get("date", "")]
    if notice.kind == "csat":
        return [params.get("ticket_id", "")]
    return []


@dataclass
class Notifier:
    """Runs the due notices of a tick through the engine."""

    engine: Engine
    registry: NoticeRegistry
    deliver: Deliver
    whatsapp: WhatsAppNotices | None = None
    templates: Mapping[str, str | None] = field(default_factory=dict)  # TEMPLATE_OF values
    template_language: str = "es"
    status_label: Callable[[str], str] = str
    # True while a customer's or an agent's turn runs in this process: a notice waits (a
    # little) before it starts, so that the answer has the process to itself.
    busy: Callable[[], bool] = lambda: False

    async def send_all(self, due: list[Due]) -> int:
        """Send everything due, ``CONCURRENCY`` at a time; how many went out."""
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(item: Due) -> bool:
            async with gate:
                for _ in range(ANSWERS_FIRST_STEPS):
                    if not self.busy():
                        break
                    await asyncio.sleep(ANSWERS_FIRST_STEP)
                try:
                    return await self.send(item)
                except Exception:
                    # One customer's failure (a store outage, a bug) must not stop the others;
                    # its subscription stays, the next tick tries again.
                    log.exception("notice failed", extra={"conv": str(item.key)})
                    return False

        SEND_LANE.set("notice")  # this task's sends (and its children's) wait behind answers
        results = await asyncio.gather(*(one(item) for item in due))
        return sum(results)

    async def send(self, due: Due) -> bool:
        """One notice to one conversation; True when it went out."""
        key, notice = due.key, due.notice
        if await self.registry.opted_out(key):
            metrics.labelled(metrics.NOTICES_SKIPPED, "opted_out").inc()
            await self._done(due)
            return False
        if await self.registry.marked(notice.event, key):
            await self._done(due)  # sent before (or skipped and counted then)
            return False
        deliver = self.deliver
        failed: list[bool] = []  # a template Graph refused (not left in the outbox)
        if await self._window_closed(due):
            template = self.templates.get(TEMPLATE_OF.get(notice.kind, notice.kind))
            if not template:
                if await self.registry.mark(notice.event, key):
                    metrics.labelled(metrics.NOTICES_SKIPPED, "no_template").inc()
                await self._done(due)
                return False
            deliver = self._template(template, notice, failed)
        marks: list[bool] = []

        async def mark() -> bool:
            marks.append(await self.registry.mark(notice.event, key))
            return marks[-1]

        replies = await self.engine.notice(key, notice, deliver, mark=mark)
        await self._done(due)
        if replies is None or failed:
            if marks != [False] and not failed:  # not a notice another tick sent meanwhile
                metrics.labelled(metrics.NOTICES_SKIPPED, "not_applicable").inc()
            return False
        metrics.labelled(metrics.NOTICES_SENT, notice.kind, key.channel).inc()
        return True

    async def _window_closed(self, due: Due) -> bool:
        """A WhatsApp customer whose 24-hour window is known closed (free text refused)."""
        if due.key.channel != "whatsapp" or self.whatsapp is None:
            return False
        return await self.whatsapp.window_known_closed(due.key.chat_id)

    def _template(self, name: str, notice: Notice, failed: list[bool]) -> Deliver:
        """A delivery that sends the approved template in place of the turn's text."""
        assert self.whatsapp is not None
        whatsapp, language = self.whatsapp, self.template_language
        params = template_params(notice, self.status_label)

        async def deliver(replies: list[Outbound]) -> list[Outbound]:
            if replies:
                try:
                    await whatsapp.send_template(replies[0].key.chat_id, name, language, params)
                except DeliveryError:
                    # Never left in the outbox: its free text must not go out later instead.
                    log.exception(
                        "notice template not delivered", extra={"conv": str(replies[0].key)}
                    )
                    metrics.labelled(metrics.NOTICES_SKIPPED, "undelivered").inc()
                    failed.append(True)
            return []

        return deliver

    async def _done(self, due: Due) -> None:
        if due.forget:
            await self.registry.unsubscribe(due.topic, due.target, due.key)
