"""The notices in a process (issue 15): the polls, the sender and the scheduled job, wired
from the runtime; the service and the console start them with their own delivery."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.engine import Deliver
from bot.notice_jobs import Ticker, running_jobs
from bot.notice_polls import Polls
from bot.notice_send import Notifier, WhatsAppNotices
from bot.runtime import Runtime
from bot.store.subscriptions import NoticeRegistry
from flows.texts import Texts

log = logging.getLogger(__name__)


@dataclass
class Notices:
    """The running notices of one process."""

    registry: NoticeRegistry
    polls: Polls
    notifier: Notifier
    ticker: Ticker

    async def tick(self, tick: int = 0) -> int:
        """One poll and its sending, now (the scheduled job; tests call it directly). A tick
        that comes while another one still runs (in any process) is skipped; the run under way
        finds what was left to do at its next tick."""
        async with self.registry.running("poll") as mine:
            if not mine:
                log.info("notice tick skipped: the previous one still runs", extra={"tick": tick})
                return 0
            due = await self.polls.due(self.notifier.engine.ctx.clock())
            sent = await self.notifier.send_all(due)
        if due:
            log.info("notices sent", extra={"tick": tick, "due": len(due), "sent": sent})
        return sent


@asynccontextmanager
async def running_notices(
    runtime: Runtime,
    deliver: Deliver,
    whatsapp: WhatsAppNotices | None = None,
    busy: Callable[[], bool] = lambda: False,
) -> AsyncIterator[Notices | None]:
    """Run the notices for the block (None when ``NOTIFY_ENABLED`` is false)."""
    registry = runtime.notices
    if registry is None:
        yield None
        return
    bot, wa = runtime.settings.bot, runtime.settings.whatsapp
    texts = Texts(bot.bot_language)
    labels = {"ticket_progress": "wh_status.en progreso", "ticket_resolved": "wh_status.resuelto"}
    notifier = Notifier(
        runtime.engine,
        registry,
        deliver,
        whatsapp,
        templates={
            "outage_resolved": wa.template_outage_resolved,
            "ticket_update": wa.template_ticket_update,
            "payment_reminder": wa.template_payment_reminder,
            "csat": wa.template_csat,
        },
        template_language=wa.template_language,
        status_label=lambda kind: texts(labels[kind]) if kind in labels else "",
        busy=busy,
    )
    polls = Polls(registry, runtime.wisphub, bot.tz, bot.reminder_days_before)
    clock = runtime.engine.ctx.clock
    holder: list[Notices] = []

    async def job(tick: int) -> None:
        await holder[0].tick(tick)

    async with running_jobs(registry, bot.notify_poll_seconds, job, clock, bot.redis_url) as ticker:
        holder.append(Notices(registry, polls, notifier, ticker))
        yield holder[0]
