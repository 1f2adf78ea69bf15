"""Reportar falla: outage check, open-ticket check, category, connection check, self-help,
description, confirmation, and exactly one ticket."""

from __future__ import annotations

from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Conversation, Flow, model
from flows.client import subject_label
from flows.notices import watch_outage, watch_ticket
from flows.tickets import file_ticket
from flows.types import FAULT_CATEGORIES
from integrations.wisphub.errors import WispHubError
from integrations.wisphub.models import PingResult

CATEGORIES = FAULT_CATEGORIES
MIN_DESCRIPTION = 3  # characters, after trimming
MAX_DESCRIPTION = 1000


class FaultFlow(Flow):
    """The fault report, in the order design.md section 5 gives."""

    name = "fault"
    needs_verification = True
    text_states = frozenset({"describe"})

    def states(self) -> list[dict[str, Any]]:
        """Where the fault report waits for the customer."""
        return [
            {"name": "idle"},
            {"name": "category"},
            {"name": "selfhelp"},
            {"name": "describe"},
            {"name": "confirm"},
        ]

    def transitions(self) -> list[dict[str, Any]]:
        """The fault table."""
        back = self.back_to_menu
        table: list[dict[str, Any]] = [
            {
                "trigger": "begin",
                "source": "*",
                "dest": "idle",
                "conditions": self.outage,
                "after": [self.say_outage, back],
            },
            {
                "trigger": "begin",
                "source": "*",
                "dest": "idle",
                "conditions": self.open_ticket,
                "after": [self.say_open_ticket, back],
            },
            # A category already named in words ("no tengo internet"): straight to the check.
            {
                "trigger": "begin",
                "source": "*",
                "dest": "selfhelp",
                "conditions": self.category_named,
                "before": self.check_connection,
            },
            {"trigger": "begin", "source": "*", "dest": "category", "after": self.ask_category},
            # "No, sigo sin servicio" to an outage-resolved notice: the outage check is skipped.
            {
                "trigger": "after_outage",
                "source": "*",
                "dest": "idle",
                "conditions": self.open_ticket,
                "after": [self.say_open_ticket, back],
            },
            {
                "trigger": "after_outage",
                "source": "*",
                "dest": "category",
                "after": self.ask_category,
            },
            # An agent-less request for help lands here with the category "other".
            {
                "trigger": "describe_only",
                "source": "*",
                "dest": "describe",
                "conditions": self.no_open_ticket_for_other,
                "after": self.ask_description,
            },
            {
                "trigger": "describe_only",
                "source": "*",
                "dest": "idle",
                "after": [self.say_open_ticket, back],
            },
            {
                "trigger": "fixed",
                "source": "selfhelp",
                "dest": "idle",
                "after": [self.say_glad, back],
            },
            {
                "trigger": "still",
                "source": "selfhelp",
                "dest": "describe",
                "after": self.ask_description,
            },
            {
                "trigger": "text",
                "source": "describe",
                "dest": None,
                "unless": self.description_ok,
                "after": self.say_too_short,
            },
            {"trigger": "text", "source": "describe", "dest": "confirm", "after": self.ask_confirm},
            {
                "trigger": "confirm",
                "source": "confirm",
                "dest": "idle",
                "conditions": self.create_ticket,
                "after": back,
            },
            # WispHub may have made the ticket but did not say so: stay, and look first next time.
            {
                "trigger": "confirm",
                "source": "confirm",
                "dest": None,
                "after": self.say_unconfirmed,
            },
            {
                "trigger": "cancel",
                "source": "confirm",
                "dest": "idle",
                "after": [self.say_cancelled, back],
            },
            # "atrás": one step back (the category's step before is the client menu).
            {"trigger": "back", "source": "category", "dest": "idle", "after": back},
            {
                "trigger": "back",
                "source": ["selfhelp", "describe"],
                "dest": "category",
                "after": self.ask_category,
            },
            {
                "trigger": "back",
                "source": "confirm",
                "dest": "describe",
                "after": self.ask_description,
            },
        ]
        table += [
            {
                "trigger": c,
                "source": "category",
                "dest": "selfhelp",
                "before": self.check_connection,
            }
            for c in CATEGORIES
        ]
        return table

    # -- conditions ------------------------------------------------------------------------
    async def outage(self, ev: AsyncEventData) -> bool:
        """The client's zone has a known mass outage."""
        conv = model(ev)
        client = await conv.client()
        if client.has_outage and client.router is not None:
            conv.data["outage"] = client.router.outage_description
            conv.data["outage_router"] = client.router.id
            return True
        return False

    async def open_ticket(self, ev: AsyncEventData) -> bool:
        """An open ticket exists for the service: remember it instead of filing another."""
        conv = model(ev)
        tickets = await conv.ctx.wisphub.open_tickets(conv.data["service_id"])
        if not tickets:
            return False
        newest = max(tickets, key=lambda t: t.id)
        conv.data["open_ticket"] = [newest.id, newest.subject, newest.status]
        return True

    async def no_open_ticket_for_other(self, ev: AsyncEventData) -> bool:
        """Before filing a general ticket, make sure none is open already."""
        if await self.open_ticket(ev):
            return False
        conv = model(ev)
        conv.data["category"] = "other"
        conv.data.pop("unconfirmed", None)  # a new report, not a retry of an unconfirmed one
        return True

    async def category_named(self, ev: AsyncEventData) -> bool:
        """The customer named the problem in words (flows.route set ``fault_category``)."""
        conv = model(ev)
        conv.data.pop("unconfirmed", None)  # a new report, not a retry of an unconfirmed one
        return conv.data.get("fault_category") in CATEGORIES

    async def description_ok(self, ev: AsyncEventData) -> bool:
        """A description of a few characters at least; kept (cut to a sane length)."""
        text = " ".join(ev.kwargs.get("text", "").split())
        if len(text) < MIN_DESCRIPTION:
            return False
        model(ev).data["description"] = text[:MAX_DESCRIPTION]
        return True

    # -- actions ---------------------------------------------------------------------------
    async def check_connection(self, ev: AsyncEventData) -> None:
        """Run the ping task, say what it found, give one tip, ask whether it works now."""
        conv = model(ev)
        named = conv.data.pop("fault_category", None)
        category = ev.event.name if ev.event.name in CATEGORIES else str(named)
        conv.data["category"] = category
        try:
            result = await conv.ctx.wisphub.ping(conv.data["service_id"])
        except WispHubError:
            # A check that could not run must not stop the customer from reporting the fault.
            result = PingResult(status="unknown")
        rtt = conv.t("rtt", ms=round(result.avg_rtt_ms)) if result.avg_rtt_ms is not None else ""
        found = conv.t(f"ping.{result.status}", rtt=rtt, received=result.received, sent=result.sent)
        conv.say(found + "\n" + conv.t(f"tip.{category}"))
        conv.say(conv.t("ask_fixed"), conv.opts("fixed", "still"))

    async def create_ticket(self, ev: AsyncEventData) -> bool:
        """One multipart POST; WispHub errors leave the conversation in the confirmation.

        False when the outcome is unknown (WispHub may have made the ticket): the request's time
        is kept so that Confirmar again looks for that ticket before posting, never a duplicate.
        """
        conv = model(ev)
        category = conv.data.get("category", "other")
        ticket = await file_ticket(conv, category, self._description(conv), "fault")
        if ticket is None:
            return False
        for name in ("description", "category", "reopens"):
            conv.data.pop(name, None)
        text = conv.t("ticket_created", id=ticket.id)
        if await watch_ticket(conv, ticket.id):
            text += " " + conv.t("notice.ticket_watch")
        conv.say(text)
        return True

    @staticmethod
    def _description(conv: Conversation) -> str:
        """The customer's words; a ticket reopening a resolved one says which (notices)."""
        description = str(conv.data.get("description", ""))
        if "reopens" in conv.data:
            return conv.t("notice.reopen_description", id=conv.data["reopens"], text=description)
        return description

    # -- replies ---------------------------------------------------------------------------
    async def back_to_menu(self, ev: AsyncEventData) -> None:
        """After each answer the client menu is offered again."""
        conv = model(ev)
        conv.data.pop("fault_category", None)  # named, but an outage or open ticket came first
        conv.jump("client", "again")

    async def say_outage(self, ev: AsyncEventData) -> None:
        """Announce the known outage; no ticket."""
        conv = model(ev)
        description = conv.data.pop("outage", "") or conv.t("outage_no_description")
        # "Te avisaremos" only when a notice will follow.
        watched = await watch_outage(conv, conv.data.pop("outage_router", None))
        after = conv.t("notice.outage_watch" if watched else "notice.outage_no_watch")
        conv.say(conv.t("outage", description=description) + " " + after)

    async def say_open_ticket(self, ev: AsyncEventData) -> None:
        """Tell the open ticket's number and status instead of opening another."""
        conv = model(ev)
        number, subject, status = conv.data.pop("open_ticket")
        conv.data.pop("reopens", None)  # no new ticket: nothing is reopened
        conv.say(
            conv.t(
                "open_ticket_exists",
                id=number,
                subject=subject_label(conv, subject),
                status=conv.t.status(status),
            )
        )

    async def ask_category(self, ev: AsyncEventData) -> None:
        """Which problem."""
        conv = model(ev)
        for name in ("unconfirmed", "reopens"):  # a new report, not a retry or a reopening
            conv.data.pop(name, None)
        conv.say(conv.t("ask_category"), conv.opts(*CATEGORIES))

    async def say_glad(self, ev: AsyncEventData) -> None:
        """It works now."""
        conv = model(ev)
        conv.data.pop("category", None)
        conv.say(conv.t("glad_fixed"))

    async def ask_description(self, ev: AsyncEventData) -> None:
        """A short description."""
        conv = model(ev)
        conv.say(conv.t("ask_description"))

    async def say_too_short(self, ev: AsyncEventData) -> None:
        """The description is too short."""
        conv = model(ev)
        conv.say(conv.t("description_too_short"))

    async def ask_confirm(self, ev: AsyncEventData) -> None:
        """The summary with Confirmar · Cancelar."""
        conv = model(ev)
        category = conv.t(f"opt.{conv.data.get('category', 'other')}")
        client = await conv.client()
        plan = client.plan.name if client.plan and client.plan.name else "-"
        conv.say(
            conv.t(
                "confirm_ticket",
                service=conv.t("ticket_service", address=client.address or "-", plan=plan),
                category=category,
                description=conv.data["description"],
            ),
            conv.opts("confirm", "cancel"),
        )

    async def say_unconfirmed(self, ev: AsyncEventData) -> None:
        """WispHub did not confirm the ticket: say so, offer Confirmar (looks first) or an agent."""
        conv = model(ev)
        conv.say(conv.t("ticket_unconfirmed"), conv.opts("confirm", "cancel", "agent"))

    async def say_cancelled(self, ev: AsyncEventData) -> None:
        """No ticket."""
        conv = model(ev)
        for name in ("description", "category", "unconfirmed", "reopens"):
            conv.data.pop(name, None)
        conv.say(conv.t("ticket_cancelled"))
