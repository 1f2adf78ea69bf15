"""Hablar con un asesor: handoff to the agents' topic within business hours, else a ticket."""

from __future__ import annotations

import logging
from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Conversation, Flow, model
from flows.client import ticket_lines
from flows.ports import AgentRequest, HandoffError
from flows.types import DAYS
from integrations.wisphub.errors import WispHubError

log = logging.getLogger(__name__)

WAITING = "agent.waiting"


def hours_text(conv: Conversation) -> str:
    """The business hours in words, consecutive days with the same hours told as one range."""
    hours = conv.ctx.settings.hours
    if hours.always_open:
        return conv.t("agent_always")
    weekdays: list[str] = conv.t.raw("weekdays")
    groups: list[tuple[int, int, list[tuple[Any, Any]]]] = []
    for day in range(len(DAYS)):
        spans = hours.spans.get(day, [])
        if not spans:
            continue
        if groups and groups[-1][1] == day - 1 and groups[-1][2] == spans:
            groups[-1] = (groups[-1][0], day, spans)
        else:
            groups.append((day, day, spans))
    parts = []
    for first, last, spans in groups:
        days = (
            weekdays[first]
            if first == last
            else conv.t("hours_days_range", first=weekdays[first], last=weekdays[last])
        )
        for start, end in spans:
            parts.append(
                conv.t(
                    "hours_day", days=days, start=start.strftime("%H:%M"), end=end.strftime("%H:%M")
                )
            )
    return conv.t("hours_join").join(parts)


async def agent_request(conv: Conversation, request: str | None = None) -> AgentRequest:
    """The card's content: verified details only for a verified customer; ``request`` (else
    the one a flow left in ``data["card_request"]``) names what the customer asked for."""
    inbound = conv.inbound
    display = (inbound.display_name if inbound else None) or conv.key.chat_id[-4:]
    history = tuple((str(w), str(t)) for w, t in conv.data.get("history", []))
    asked = conv.data.get("card_request", "") if request is None else request
    if not conv.verified:
        return AgentRequest(
            conv.key, display, history=history, lang=conv.session.lang, request=asked
        )
    try:
        client = await conv.client()
        tickets = tuple(await ticket_lines(conv, client.service_id))
    except (WispHubError, LookupError):
        # The agent still gets the conversation; account details are a courtesy.
        log.warning("card without account details", extra={"conv": str(conv.key)})
        return AgentRequest(
            conv.key, display, history=history, lang=conv.session.lang, request=asked
        )
    return AgentRequest(
        conv.key,
        display,
        verified_name=client.name,
        service_id=client.service_id,
        plan=client.plan.name if client.plan else "",
        balance=conv.money(client.balance),
        open_tickets=tickets,
        history=history,
        lang=conv.session.lang,
        request=asked,
    )


class AgentFlow(Flow):
    """Handoff and its ends: agent closes, customer leaves, nobody answers in time."""

    name = "agent"

    def states(self) -> list[dict[str, Any]]:
        """Waiting is the handed-off state: the bot stays quiet there."""
        return [{"name": "idle"}, {"name": "waiting"}, {"name": "offer_ticket"}, {"name": "closed"}]

    def transitions(self) -> list[dict[str, Any]]:
        """The handoff table."""
        return [
            {
                "trigger": "begin",
                "source": "*",
                "dest": "waiting",
                "conditions": self.agents_open,
                "before": self.open_topic,
            },
            {
                "trigger": "begin",
                "source": "*",
                "dest": "offer_ticket",
                "conditions": self.verified,
                "after": self.say_closed_offer_ticket,
            },
            {"trigger": "begin", "source": "*", "dest": "closed", "after": self.say_closed},
            {
                "trigger": "ticket",
                "source": "offer_ticket",
                "dest": "idle",
                "after": lambda ev: model(ev).jump("fault", "describe_only"),
            },
            {
                "trigger": "client",
                "source": "closed",
                "dest": "idle",
                "after": lambda ev: model(ev).jump("identify"),
            },
            {
                "trigger": "timeout",
                "source": "waiting",
                "dest": "offer_ticket",
                "conditions": self.verified,
                "before": self.close_topic,
                "after": self.say_timeout,
            },
            {
                "trigger": "timeout",
                "source": "waiting",
                "dest": "closed",
                "before": self.close_topic,
                "after": self.say_timeout_public,
            },
            {"trigger": "end", "source": "waiting", "dest": "idle", "after": self.say_ended},
            {"trigger": "leave", "source": "waiting", "dest": "idle", "before": self.customer_left},
        ]

    async def agents_open(self, ev: AsyncEventData) -> bool:
        """An agents' chat exists and it is within business hours."""
        return model(ev).ctx.agents_open()

    async def verified(self, ev: AsyncEventData) -> bool:
        """The customer is verified (a ticket can be filed for them)."""
        return bool(model(ev).verified)

    async def open_topic(self, ev: AsyncEventData) -> None:
        """Create or reopen the customer's topic and post the card."""
        conv = model(ev)
        request = await agent_request(conv)
        thread_id = await conv.ctx.handoff.open(request, conv.data.get("topic"))
        conv.data.pop("card_request", None)  # named on this card; a later handoff is another
        # Set again when the topic is reopened: its mapping may have expired meanwhile.
        await conv.ctx.store.set_topic(thread_id, conv.key)
        conv.data["topic"] = thread_id
        conv.data["handoff_since"] = conv.now
        conv.data["agent_answered"] = False
        conv.say(conv.t("agent_connecting"))

    async def close_topic(self, ev: AsyncEventData) -> None:
        """Tell the agents the customer left and close the topic: best effort, since the
        conversation goes back to the bot whatever the topic's fate (deleted, no rights)."""
        conv = model(ev)
        if "topic" in conv.data:
            try:
                await conv.ctx.handoff.notify(conv.data["topic"], conv.t("agents.customer_left"))
            except HandoffError:
                log.warning("topic could not be told", extra={"conv": str(conv.key)})
            await conv.ctx.handoff.close(conv.data["topic"])

    async def customer_left(self, ev: AsyncEventData) -> None:
        """The customer ended the handoff with /cancelar."""
        conv = model(ev)
        await self.close_topic(ev)
        conv.say(conv.t("agent_left_by_customer"))
        self._menu(conv)

    async def say_closed_offer_ticket(self, ev: AsyncEventData) -> None:
        """Outside hours (or no agents) for a verified customer: offer a ticket."""
        conv = model(ev)
        hours = (
            conv.t("agent_closed_hours", hours=hours_text(conv))
            if conv.ctx.handoff.configured
            else ""
        )
        conv.say(
            " ".join(filter(None, [hours, conv.t("agent_offer_ticket")])),
            conv.opts("ticket", "menu"),
        )

    async def say_closed(self, ev: AsyncEventData) -> None:
        """Outside hours for an unverified customer: the hours, and identification offered."""
        conv = model(ev)
        hours = (
            conv.t("agent_closed_hours", hours=hours_text(conv))
            if conv.ctx.handoff.configured
            else conv.t("handoff_failed")
        )
        conv.say(hours + " " + conv.t("agent_identify_first"), conv.opts("client", "menu"))

    async def say_timeout(self, ev: AsyncEventData) -> None:
        """No agent answered in time: a ticket so nothing is lost."""
        conv = model(ev)
        conv.say(conv.t("handoff_timeout"), conv.opts("ticket", "menu"))

    async def say_timeout_public(self, ev: AsyncEventData) -> None:
        """No agent answered in time and the customer is not verified."""
        conv = model(ev)
        conv.say(conv.t("handoff_timeout_public"), conv.opts("client", "menu"))

    async def say_ended(self, ev: AsyncEventData) -> None:
        """The agent closed the handoff with /cerrar."""
        conv = model(ev)
        conv.say(conv.t("agent_ended"))
        self._menu(conv)

    @staticmethod
    def _menu(conv: Conversation) -> None:
        for name in ("handoff_since", "agent_answered"):
            conv.data.pop(name, None)
        if conv.verified:
            conv.jump("client", "again")
        else:
            conv.jump("main", "again")
