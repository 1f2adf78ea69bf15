"""Requests about the contract: cancel the service, change the plan, move house.

``data["request"]`` is ``"cancel_service"``, ``"change_plan"`` or ``"move"`` when ``begin``
fires (the client menu's "Otros trámites" sets it, or the free-text router). A verified
customer is handed to an agent with the request named on the card; outside business hours or
without agents, a short detail and a confirmation file a ticket with the request's subject
("Cancelación", "Cambio de Domicilio", ``WISPHUB_SUBJECT_PLAN_CHANGE``), once: an open ticket
of that subject is told instead.
"""

from __future__ import annotations

from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Conversation, Flow, model
from flows.requests import back_to_menu, opening
from flows.texts import Texts
from flows.tickets import file_ticket, open_ticket_about

REQUESTS = ("change_plan", "move", "cancel_service")
# The question asked for each request's detail (the new address, the plan wanted, the reason).
ASK_DETAIL = {
    "change_plan": "req_ask_plan",
    "move": "req_ask_address",
    "cancel_service": "req_ask_reason",
}
MENU_OPTIONS = ("payment_methods", *REQUESTS, "menu")
MIN_DETAIL = 3  # characters, after trimming
MAX_DETAIL = 1000


def _request(conv: Conversation) -> str:
    """The request under way (``begin`` made sure it is one of ``REQUESTS``)."""
    return str(conv.data.get("request", ""))


class ServiceRequestFlow(Flow):
    """Agent with the request on the card, or detail → confirmation → one ticket."""

    name = "service_request"
    needs_verification = True
    text_states = frozenset({"detail"})

    def states(self) -> list[dict[str, Any]]:
        """The requests' menu, the detail, the confirmation."""
        return [{"name": "idle"}, {"name": "choose"}, {"name": "detail"}, {"name": "confirm"}]

    def transitions(self) -> list[dict[str, Any]]:
        """The requests table; conditions run in order, the first that holds wins."""
        table: list[dict[str, Any]] = [
            {"trigger": "choose", "source": "*", "dest": "choose", "after": self.show_choices},
            {
                "trigger": "payment_methods",
                "source": "choose",
                "dest": "idle",
                "after": lambda ev: model(ev).jump("payment_methods"),
            },
            *opening(
                self.already_requested,
                self.say_already_requested,
                between=(
                    # No (known) request named: the customer picks one.
                    {
                        "trigger": "begin",
                        "source": "*",
                        "dest": "choose",
                        "unless": self.has_request,
                        "after": self.show_choices,
                    },
                    {
                        "trigger": "begin",
                        "source": "*",
                        "dest": "idle",
                        "conditions": self.agents_open,
                        "after": self.to_agent,
                    },
                ),
            ),
            {"trigger": "begin", "source": "*", "dest": "detail", "after": self.ask_detail},
            {
                "trigger": "text",
                "source": "detail",
                "dest": None,
                "unless": self.detail_ok,
                "after": self.say_too_short,
            },
            {"trigger": "text", "source": "detail", "dest": "confirm", "after": self.ask_confirm},
            {
                "trigger": "confirm",
                "source": "confirm",
                "dest": "idle",
                "conditions": self.file,
                "after": [self.say_filed, back_to_menu],
            },
            {
                "trigger": "confirm",
                "source": "confirm",
                "dest": None,
                "after": self.say_unconfirmed,
            },
            {
                "trigger": "cancel",
                "source": ["detail", "confirm"],
                "dest": "idle",
                "after": [self.say_cancelled, back_to_menu],
            },
        ]
        table += [
            {
                "trigger": r,
                "source": "choose",
                "dest": "idle",
                "before": self.remember_request,
                "after": lambda ev: model(ev).jump("service_request"),
            }
            for r in REQUESTS
        ]
        return table

    # -- conditions ------------------------------------------------------------------------
    async def has_request(self, ev: AsyncEventData) -> bool:
        """``data["request"]`` names one of the requests."""
        return model(ev).data.get("request") in REQUESTS

    async def agents_open(self, ev: AsyncEventData) -> bool:
        """An agents' chat exists and it is within business hours."""
        return model(ev).ctx.agents_open()

    async def already_requested(self, ev: AsyncEventData) -> bool:
        """A ticket of this request's subject is open: say so rather than file another."""
        conv = model(ev)
        ticket = await open_ticket_about(conv, _request(conv))
        if ticket is None:
            return False
        conv.data["open_ticket"] = [ticket.id, ticket.subject, ticket.status]
        return True

    async def detail_ok(self, ev: AsyncEventData) -> bool:
        """A detail of a few characters at least; kept (cut to a sane length)."""
        text = " ".join(ev.kwargs.get("text", "").split())
        if len(text) < MIN_DETAIL:
            return False
        model(ev).data["detail"] = text[:MAX_DETAIL]
        return True

    async def file(self, ev: AsyncEventData) -> bool:
        """One ticket; False when WispHub's answer is unknown (Confirmar looks for it first)."""
        conv = model(ev)
        request = _request(conv)
        notes = Texts(conv.ctx.settings.language)  # the ISP's language, for its staff
        description = notes(
            "req_ticket",
            request=notes(f"opt.{request}"),
            detail=conv.data.get("detail", ""),
            channel=conv.key.channel.capitalize(),
        )
        ticket = await file_ticket(conv, request, description)
        if ticket is None:
            return False
        conv.data["req_ticket"] = ticket.id
        return True

    # -- actions and replies ---------------------------------------------------------------
    async def remember_request(self, ev: AsyncEventData) -> None:
        """The request chosen in the menu."""
        model(ev).data["request"] = ev.event.name

    async def show_choices(self, ev: AsyncEventData) -> None:
        """Formas de pago · Cambiar de plan · Cambio de domicilio · Cancelar el servicio."""
        conv = model(ev)
        conv.say(conv.t("req_choose"), conv.opts(*MENU_OPTIONS))

    async def to_agent(self, ev: AsyncEventData) -> None:
        """To an agent, the request named on the card (``agent_request`` reads it)."""
        conv = model(ev)
        request = _request(conv)
        conv.data.pop("request", None)
        conv.data["card_request"] = request
        conv.say(conv.t("req_to_agent", request=conv.t(f"opt.{request}")))
        conv.jump("agent")

    async def say_already_requested(self, ev: AsyncEventData) -> None:
        """The request is under way already."""
        conv = model(ev)
        number, subject, status = conv.data.pop("open_ticket")
        conv.data.pop("request", None)
        conv.say(
            conv.t("open_ticket_exists", id=number, subject=subject, status=conv.t.status(status))
        )

    async def ask_detail(self, ev: AsyncEventData) -> None:
        """Outside hours or without agents: the detail the request needs."""
        conv = model(ev)
        conv.data.pop("unconfirmed", None)  # a new request, not a retry of an unconfirmed one
        request = _request(conv)
        conv.data["request"] = request
        closed = conv.t("req_no_agents")
        conv.say(closed + " " + conv.t(ASK_DETAIL[request]), conv.opts("cancel"))

    async def say_too_short(self, ev: AsyncEventData) -> None:
        """Too little to go on."""
        conv = model(ev)
        conv.say(conv.t("description_too_short"), conv.opts("cancel"))

    async def ask_confirm(self, ev: AsyncEventData) -> None:
        """The summary with Confirmar · Cancelar."""
        conv = model(ev)
        conv.say(
            conv.t(
                "req_confirm",
                service_id=conv.data["service_id"],
                request=conv.t(f"opt.{_request(conv)}"),
                detail=conv.data["detail"],
            ),
            conv.opts("confirm", "cancel"),
        )

    async def say_filed(self, ev: AsyncEventData) -> None:
        """The ticket's number and what happens next."""
        conv = model(ev)
        number = conv.data.pop("req_ticket")
        for name in ("detail", "request"):
            conv.data.pop(name, None)
        conv.say(conv.t("req_filed", id=number))

    async def say_unconfirmed(self, ev: AsyncEventData) -> None:
        """WispHub did not confirm the ticket: Confirmar looks for it first; or an agent."""
        conv = model(ev)
        conv.say(conv.t("ticket_unconfirmed"), conv.opts("confirm", "cancel", "agent"))

    async def say_cancelled(self, ev: AsyncEventData) -> None:
        """No request filed."""
        conv = model(ev)
        for name in ("detail", "request", "unconfirmed"):
            conv.data.pop(name, None)
        conv.say(conv.t("ticket_cancelled"))
