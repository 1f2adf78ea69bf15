"""Promesa de pago: for the whole pending balance, once per service until its date.

WispHub takes a promise per invoice and cannot list them afterwards: the bot files one for every
pending invoice and remembers what it filed (``PromiseLedger``, per service, until the end of
the promised day), so a second promise shows the first instead of silently replacing it. Dates
run from tomorrow to ``PROMISE_MAX_DAYS`` ahead; a typed date ("el viernes", "4/12") or the one
the free-text router left in ``conv.data["promise_date"]`` is proposed for confirmation when
allowed, else the customer is told why and offered the dates.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Conversation, Flow, model
from flows.notices import watch_promise
from flows.types import Option
from flows.understand.entities import date_in
from flows.understand.normalize import fold

DATES = ["choose_date", "confirm_date"]


class PromiseFlow(Flow):
    """Show the balance and its invoices, offer dates, register the promise once, confirm it."""

    name = "promise"
    needs_verification = True
    text_states = frozenset(DATES)

    def states(self) -> list[dict[str, Any]]:
        """Choosing a date, or confirming a proposed one."""
        return [{"name": "idle"}, {"name": "choose_date"}, {"name": "confirm_date"}]

    def transitions(self) -> list[dict[str, Any]]:
        """The promise table."""
        back = self.back_to_menu
        return [
            {
                "trigger": "begin",
                "source": "*",
                "dest": "idle",
                "unless": self.pending_invoices,
                "after": [self.say_none, back],
            },
            {
                "trigger": "begin",
                "source": "*",
                "dest": "idle",
                "conditions": self.already_promised,
                "after": [self.say_existing, back],
            },
            {
                "trigger": "begin",
                "source": "*",
                "dest": "confirm_date",
                "conditions": self.proposed_allowed,
                "after": self.ask_confirm,
            },
            {"trigger": "begin", "source": "*", "dest": "choose_date", "after": self.ask_date},
            {
                "trigger": "text",
                "source": DATES,
                "dest": "confirm_date",
                "conditions": self.typed_allowed,
                "after": self.ask_confirm,
            },
            {"trigger": "text", "source": DATES, "dest": "choose_date", "after": self.ask_date},
            {"trigger": "dates", "source": DATES, "dest": "choose_date", "after": self.ask_date},
            {
                "trigger": "pick",
                "source": DATES,
                "dest": "idle",
                "conditions": self.date_allowed,
                "before": self.register,
                "after": back,
            },
        ]

    # -- conditions --------------------------------------------------------------------------
    async def pending_invoices(self, ev: AsyncEventData) -> bool:
        """The service has unpaid invoices: remember them all, oldest first, and the balance."""
        conv = model(ev)
        client = await conv.client()
        invoices = await conv.ctx.wisphub.pending_invoices(client.username)
        if not invoices:
            return False
        invoices = sorted(invoices, key=lambda i: (i.due_date or date.max, i.id))
        conv.data["promise"] = {
            "invoices": [
                [i.id, str(i.total), i.due_date and i.due_date.isoformat()] for i in invoices
            ],
            "total": str(sum((i.total for i in invoices), Decimal(0))),
            "suspended": client.suspended,
        }
        return True

    async def already_promised(self, ev: AsyncEventData) -> bool:
        """The bot registered a promise for this service that has not reached its date."""
        conv = model(ev)
        found = await conv.ctx.store.active(conv.data["service_id"])
        if found is None:
            return False
        conv.data["promise_shown"] = found.day.isoformat()
        return True

    async def proposed_allowed(self, ev: AsyncEventData) -> bool:
        """The free-text router left a date ("quiero pagar el viernes") that may be promised."""
        conv = model(ev)
        proposed = conv.data.pop("promise_date", None)
        return proposed is not None and self._check(conv, str(proposed))

    async def typed_allowed(self, ev: AsyncEventData) -> bool:
        """The customer typed a date that may be promised."""
        conv = model(ev)
        found = date_in(
            fold(ev.kwargs.get("text", "")), conv.t.lang, conv.ctx.local_now(), conv.ctx.settings.tz
        )
        if found is None:
            conv.data["promise_refused"] = ["promise_date_unclear", ""]
            return False
        return self._check(conv, found)

    async def date_allowed(self, ev: AsyncEventData) -> bool:
        """One of the offered dates, for the balance shown."""
        conv = model(ev)
        return "promise" in conv.data and self._parse(conv, ev.kwargs.get("arg", "")) is not None

    def _dates(self, conv: Conversation) -> list[date]:
        today = conv.ctx.local_now().date()
        return [today + timedelta(days=n) for n in range(1, conv.ctx.settings.promise_max_days + 1)]

    def _parse(self, conv: Conversation, text: str) -> date | None:
        try:
            chosen = date.fromisoformat(text)
        except ValueError:
            return None
        return chosen if chosen in self._dates(conv) else None

    def _check(self, conv: Conversation, text: str) -> bool:
        """Whether ``text`` (ISO) may be promised; if not, why (said with the dates)."""
        chosen = self._parse(conv, text)
        if chosen is not None:
            conv.data["promise_proposed"] = chosen.isoformat()
            return True
        try:
            day = date.fromisoformat(text)
        except ValueError:
            conv.data["promise_refused"] = ["promise_date_unclear", ""]
            return False
        dates = self._dates(conv)
        key = "promise_date_past" if day < dates[0] else "promise_date_too_far"
        conv.data["promise_refused"] = [key, day.isoformat()]
        return False

    # -- what the customer sees --------------------------------------------------------------
    def _balance(self, conv: Conversation) -> str:
        """The balance and one line per invoice it covers."""
        today = conv.ctx.local_now().date()
        lines = []
        for number, total, due in conv.data["promise"]["invoices"]:
            day = date.fromisoformat(due) if due else None
            key = "promise_invoice_overdue" if day and day < today else "promise_invoice_line"
            lines.append(conv.t(key, invoice=number, total=conv.money(total), due=conv.t.date(day)))
        return "\n".join(lines)

    async def ask_date(self, ev: AsyncEventData) -> None:
        """The balance, its invoices, what a promise does, and the dates that may be promised."""
        conv = model(ev)
        refused = conv.data.pop("promise_refused", None)
        dates = self._dates(conv)
        if refused:
            key, day = refused
            shown = conv.t.date(date.fromisoformat(day)) if day else ""
            conv.say(conv.t(key, date=shown, last=conv.t.date(dates[-1])))
        options = [
            Option(
                f"pick:{d.isoformat()}",
                conv.t("promise_day", weekday=conv.t.weekday(d), day=conv.t.date(d)),
            )
            for d in dates
        ]
        promise = conv.data["promise"]
        total, invoices = conv.money(promise["total"]), self._balance(conv)
        effect = self._effect(conv)
        conv.say(conv.t("promise_ask_date", total=total, invoices=invoices, effect=effect), options)

    def _effect(self, conv: Conversation) -> str:
        """What a promise does to a suspended service ('' for an active one)."""
        if not conv.data["promise"]["suspended"]:
            return ""
        reactivates = conv.ctx.settings.promise_reactivates
        return "\n" + conv.t(
            "promise_effect_reactivates" if reactivates else "promise_effect_stays"
        )

    async def ask_confirm(self, ev: AsyncEventData) -> None:
        """Propose the date the customer named."""
        conv = model(ev)
        chosen = date.fromisoformat(conv.data.pop("promise_proposed"))
        promise = conv.data["promise"]
        conv.say(
            conv.t(
                "promise_confirm",
                date=conv.t.date(chosen),
                total=conv.money(promise["total"]),
                invoices=self._balance(conv),
            )
            + self._effect(conv),
            [
                Option(f"pick:{chosen.isoformat()}", conv.t("opt.confirm")),
                Option("dates", conv.t("promise_other_date")),
            ],
        )

    async def register(self, ev: AsyncEventData) -> None:
        """POST a promise per invoice (each once), remember them, then confirm."""
        conv = model(ev)
        chosen = date.fromisoformat(ev.kwargs["arg"])
        service_id = conv.data["service_id"]
        promise = conv.data["promise"]
        # The ledger keeps it until the end of the promised day in the ISP's time zone.
        until = datetime.combine(chosen + timedelta(days=1), time(), conv.ctx.settings.tz)
        ledger = conv.ctx.store
        earlier = await ledger.active(service_id)
        # A step that failed half-way filed some already: never file those twice.
        done = list(earlier.invoices) if earlier and earlier.day == chosen else []
        for number, _, _ in promise["invoices"]:
            if number in done:
                continue
            await conv.ctx.wisphub.payment_promise(number, chosen)
            done.append(number)
            await ledger.remember(service_id, chosen, done, until.timestamp())
        conv.data.pop("promise", None)
        if not promise["suspended"]:
            key = "promise_done"
        elif conv.ctx.settings.promise_reactivates:
            key = "promise_done_reactivates"
        else:
            key = "promise_done_stays"
        conv.say(conv.t(key, total=conv.money(promise["total"]), date=conv.t.date(chosen)))
        # h8-noticeflows (issue 15): a reminder the day before the promise is due.
        await watch_promise(conv, chosen)

    async def say_existing(self, ev: AsyncEventData) -> None:
        """The promise already registered, instead of another."""
        conv = model(ev)
        day = date.fromisoformat(conv.data.pop("promise_shown"))
        conv.data.pop("promise", None)
        conv.data.pop("promise_date", None)
        conv.say(conv.t("promise_existing", date=conv.t.date(day)))

    async def say_none(self, ev: AsyncEventData) -> None:
        """No pending invoice."""
        conv = model(ev)
        conv.data.pop("promise_date", None)
        conv.say(conv.t("promise_none"))

    async def back_to_menu(self, ev: AsyncEventData) -> None:
        """The client menu again."""
        model(ev).jump("client", "again")
