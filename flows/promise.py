"""Promesa de pago: only with a pending invoice; dates up to PROMISE_MAX_DAYS ahead."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Conversation, Flow, model
from flows.notices import watch_promise
from flows.types import Option


class PromiseFlow(Flow):
    """Offer dates, register the promise once, confirm it."""

    name = "promise"
    needs_verification = True

    def states(self) -> list[dict[str, Any]]:
        """Waiting for a date."""
        return [{"name": "idle"}, {"name": "choose_date"}]

    def transitions(self) -> list[dict[str, Any]]:
        """The promise table."""
        back = self.back_to_menu
        return [
            {
                "trigger": "begin",
                "source": "*",
                "dest": "choose_date",
                "conditions": self.pending_invoice,
                "after": self.ask_date,
            },
            {"trigger": "begin", "source": "*", "dest": "idle", "after": [self.say_none, back]},
            {
                "trigger": "pick",
                "source": "choose_date",
                "dest": "idle",
                "conditions": self.date_allowed,
                "before": self.register,
                "after": back,
            },
        ]

    async def pending_invoice(self, ev: AsyncEventData) -> bool:
        """The service has an unpaid invoice: remember the oldest."""
        conv = model(ev)
        client = await conv.client()
        invoices = await conv.ctx.wisphub.pending_invoices(client.username)
        if not invoices:
            return False
        oldest = min(invoices, key=lambda i: (i.due_date or date.max, i.id))
        conv.data["invoice"] = [
            oldest.id,
            str(oldest.total),
            oldest.due_date and oldest.due_date.isoformat(),
        ]
        return True

    def _dates(self, conv: Conversation) -> list[date]:
        today = conv.ctx.local_now().date()
        return [today + timedelta(days=n) for n in range(1, conv.ctx.settings.promise_max_days + 1)]

    async def ask_date(self, ev: AsyncEventData) -> None:
        """The invoice and the dates that may be promised."""
        conv = model(ev)
        number, total, due = conv.data["invoice"]
        weekdays = conv.t.raw("weekdays")
        options = [
            Option(
                f"pick:{d.isoformat()}",
                conv.t(
                    "promise_day", weekday=weekdays[d.weekday()].capitalize(), day=conv.t.date(d)
                ),
            )
            for d in self._dates(conv)
        ]
        conv.say(
            conv.t(
                "promise_ask_date",
                invoice=number,
                total=conv.money(total),
                due=conv.t.date(date.fromisoformat(due) if due else None),
            ),
            options,
        )

    async def date_allowed(self, ev: AsyncEventData) -> bool:
        """One of the offered dates."""
        try:
            chosen = date.fromisoformat(ev.kwargs.get("arg", ""))
        except ValueError:
            return False
        return chosen in self._dates(model(ev))

    async def register(self, ev: AsyncEventData) -> None:
        """POST the promise once, then confirm it."""
        conv = model(ev)
        chosen = date.fromisoformat(ev.kwargs["arg"])
        number = conv.data["invoice"][0]
        await conv.ctx.wisphub.payment_promise(number, chosen)
        conv.data.pop("invoice", None)
        conv.say(conv.t("promise_done", invoice=number, date=conv.t.date(chosen)))
        # h8-noticeflows (issue 15): a reminder the day before the promise is due.
        await watch_promise(conv, chosen)

    async def say_none(self, ev: AsyncEventData) -> None:
        """No pending invoice."""
        conv = model(ev)
        conv.say(conv.t("promise_none"))

    async def back_to_menu(self, ev: AsyncEventData) -> None:
        """The client menu again."""
        model(ev).jump("client", "again")
