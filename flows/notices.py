"""Notices the bot sends first (issue 15), the dialog's side: what a notice is, and the
subscriptions the flows make when they promise one.

The runtime (``bot``) keeps the subscriptions (``flows.ports.Subscriptions``), polls WispHub and
calls ``Dialog.notice`` with a ``Notice`` for each subscriber; the flows subscribe only after
verification (an outage: when the customer was told of it) and say "Te avisaremos" only when a
notice will follow: subscriptions configured and the customer not opted out. The questions the
notices ask and their answers are in ``flows.noticeflow``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Conversation, model

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the bot tells a customer first."""

    # "outage_resolved" | "ticket_progress" | "ticket_resolved" | "payment_reminder" | "promise_due"
    kind: str
    service_id: int
    # identity of the event (dedupe: once per customer per event),
    # e.g. "outage:7:1764400000", "ticket:4711:progress", "reminder:10:2026-12-05"
    event: str
    # {"ticket_id": "4711"}, {"date": "2026-12-05", "amount": "89900"}
    params: Mapping[str, str] = field(default_factory=dict)


KINDS = ("outage_resolved", "ticket_progress", "ticket_resolved", "payment_reminder", "promise_due")

# How long a promise is kept: an outage longer than this, or a ticket older, needs the customer
# to ask again (the registry must not grow with customers who left long ago).
OUTAGE_WATCH = 3 * 86400
TICKET_WATCH = 30 * 86400


async def notices_on(conv: Conversation) -> bool:
    """A notice would reach this customer: subscriptions configured and not opted out."""
    subs = conv.ctx.subscriptions
    return subs is not None and not await subs.opted_out(conv.key)


async def _watch(conv: Conversation, topic: str, target: str, until: float) -> bool:
    """Subscribe the conversation when notices are on; True when a notice will follow."""
    subs = conv.ctx.subscriptions
    service_id = conv.data.get("service_id")
    if subs is None or service_id is None or not await notices_on(conv):
        return False
    await subs.subscribe(topic, target, conv.key, service_id=int(service_id), until=until)
    log.info("subscribed", extra={"conv": str(conv.key), "topic": topic, "target": target})
    return True


def end_of_day(conv: Conversation, day: date) -> float:
    """The epoch second a local date ends (the ISP's time zone)."""
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=conv.ctx.settings.tz)
    return end.timestamp()


async def watch_outage(conv: Conversation, router_id: int | None) -> bool:
    """The customer was told of their zone's outage: tell them when the router's is gone."""
    if router_id is None:
        return False
    return await _watch(conv, "outage", str(router_id), conv.now + OUTAGE_WATCH)


async def watch_ticket(conv: Conversation, ticket_id: int) -> bool:
    """A ticket the bot opened for a verified customer (fault report, payment report, an
    agent's /ticket): its status changes are told. True when a notice will follow (say
    ``notice.ticket_watch`` then)."""
    return await _watch(conv, "ticket", str(ticket_id), conv.now + TICKET_WATCH)


async def watch_promise(conv: Conversation, day: date) -> None:
    """A registered payment promise: a reminder the day before it is due (said when so)."""
    if await _watch(conv, "promise", str(conv.data["service_id"]), end_of_day(conv, day)):
        conv.say(conv.t("notice.promise_watch"))


async def offer_reminder(ev: AsyncEventData) -> None:
    """After the account answer (a callback of the client flow): offer cut-off reminders, once
    a session, when a balance is pending and a cut-off date is ahead (the question comes after
    the client menu, whose options keep working: flows/noticeflow.py)."""
    conv = model(ev)
    if conv.data.get("reminder_offered") or not await notices_on(conv):
        return
    client = await conv.client()
    cutoff = client.cutoff_date
    if client.balance <= 0 or cutoff is None or cutoff < conv.ctx.local_now().date():
        return
    conv.data["reminder_offered"] = True
    conv.data["cutoff"] = cutoff.isoformat()
    conv.jump("reminder", "offer")


async def rating_wanted(conv: Conversation) -> bool:
    """Ask for a rating (after a handoff an agent closed) unless the customer opted out."""
    subs = conv.ctx.subscriptions
    return subs is None or not await subs.opted_out(conv.key)
