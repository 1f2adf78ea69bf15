"""The verified client's menu, account status and open tickets."""

from __future__ import annotations

from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Conversation, Flow, model
from flows.names import fold
from flows.notices import offer_reminder
from flows.types import FAULT_CATEGORIES

CLIENT_OPTIONS = (
    *("account", "fault", "tickets", "promise"),
    *("payment_report", "requests"),  # flows/payment_report.py, flows/service_request.py
    *("agent", "exit"),
)


def subject_label(conv: Conversation, subject: str) -> str:
    """A ticket's WispHub subject as the customer's fault category ("No Tiene Internet" →
    "Sin internet" / "No internet") when the ISP's subject mapping names one, else as it is."""
    folded = fold(subject)
    for category, (mapped, _) in conv.ctx.settings.tickets.subjects.items():
        if fold(mapped) == folded and category in FAULT_CATEGORIES:
            return conv.t(f"opt.{category}")  # categories sharing a subject: the first names it
    return subject or "-"


async def ticket_lines(conv: Conversation, service_id: int) -> list[str]:
    """One line per open ticket of the service: number, subject, status, date."""
    tickets = await conv.ctx.wisphub.open_tickets(service_id)
    return [
        conv.t(
            "ticket_line",
            id=t.id,
            subject=subject_label(conv, t.subject),
            status=conv.t.status(t.status),
            date=conv.t.date(t.opened_at.date() if t.opened_at else None),
        )
        for t in sorted(tickets, key=lambda t: t.id, reverse=True)
    ]


class ClientFlow(Flow):
    """Estado de cuenta · Reportar falla · Mis tickets · Promesa de pago · Reportar un pago ·
    Otros trámites · asesor · Salir."""

    name = "client"
    needs_verification = True

    def states(self) -> list[dict[str, Any]]:
        """The client menu is the one place this flow waits."""
        return [{"name": "idle"}, {"name": "menu"}]

    def transitions(self) -> list[dict[str, Any]]:
        """Answers that stay in the menu, and jumps to the longer flows."""
        return [
            {"trigger": "menu", "source": "*", "dest": "menu", "after": self.show_menu},
            {"trigger": "again", "source": "*", "dest": "menu", "after": self.show_menu_again},
            {
                "trigger": "account",
                "source": ["menu", "idle"],  # idle: asked for in words, or before verifying
                "dest": "menu",
                "before": self.show_account,
                "after": [self.show_menu_again, offer_reminder],  # h8: cut-off reminders
            },
            {
                "trigger": "tickets",
                "source": ["menu", "idle"],  # idle: asked for in words, or before verifying
                "dest": "menu",
                "before": self.show_tickets,
                "after": self.show_menu_again,
            },
            {
                "trigger": "fault",
                "source": "menu",
                "dest": "idle",
                "after": lambda ev: model(ev).jump("fault"),
            },
            {
                "trigger": "promise",
                "source": "menu",
                "dest": "idle",
                "after": lambda ev: model(ev).jump("promise"),
            },
            {
                "trigger": "payment_report",
                "source": "menu",
                "dest": "idle",
                "after": lambda ev: model(ev).jump("payment_report"),
            },
            {
                "trigger": "requests",
                "source": "menu",
                "dest": "idle",
                "after": lambda ev: model(ev).jump("service_request", "choose"),
            },
            {"trigger": "exit", "source": "menu", "dest": "idle", "after": self.log_out},
        ]

    async def show_menu(self, ev: AsyncEventData) -> None:
        """The client menu, greeting by first name."""
        conv = model(ev)
        first = conv.data.get("first_name", "")
        conv.say(conv.t("client_menu", first_name=first), conv.opts(*CLIENT_OPTIONS))

    async def show_menu_again(self, ev: AsyncEventData) -> None:
        """The client menu after an answer."""
        conv = model(ev)
        conv.say(conv.t("client_menu_again"), conv.opts(*CLIENT_OPTIONS))

    async def show_account(self, ev: AsyncEventData) -> None:
        """Plan, price, balance, invoices, status, cut-off date."""
        conv = model(ev)
        c = await conv.client()
        conv.say(
            conv.t(
                "account",
                service_id=c.service_id,
                address=c.address or "-",
                plan=c.plan.name if c.plan and c.plan.name else "-",
                price=conv.money(c.plan_price),
                balance=conv.money(c.balance),
                invoice_status=conv.t.status(c.invoice_status),
                status=conv.t.status(c.status),
                cutoff=conv.t.date(c.cutoff_date),
            )
        )
        if c.balance > 0:
            methods = await conv.ctx.wisphub.payment_methods()
            names = ", ".join(m.name for m in methods) or "-"
            # A promise the bot registered is shown, and none is offered on top of it.
            promise = await conv.ctx.store.active(c.service_id)
            key = "account_due"
            if c.suspended:
                key = "account_suspended_promised" if promise else "account_suspended"
            conv.say(conv.t(key, balance=conv.money(c.balance), methods=names))
            if promise is not None:
                conv.say(conv.t("account_promise", date=conv.t.date(promise.day)))

    async def show_tickets(self, ev: AsyncEventData) -> None:
        """Open tickets of the service."""
        conv = model(ev)
        lines = await ticket_lines(conv, conv.data["service_id"])
        if not lines:
            conv.say(conv.t("tickets_none"))
        else:
            conv.say("\n".join([conv.t("tickets_header"), *lines]))

    async def log_out(self, ev: AsyncEventData) -> None:
        """Salir: end the verification, back to the public menu."""
        conv = model(ev)
        first = conv.data.get("first_name", "")
        conv.end_verification()
        conv.say(conv.t("bye", first_name=first))
        conv.jump("main", "again")
