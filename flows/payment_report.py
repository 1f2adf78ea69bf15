"""Reportar un pago ("ya pagué y sigo sin servicio"): the receipt (a photo or a document) or
the payment typed, ONE ticket (``WISPHUB_SUBJECT_PAYMENT``, default "Reconexión"), the receipt in
the agents' topic when there are agents, and what happens next.

The receipt goes to the topic BEFORE the ticket is posted: a failure after the POST would roll
the step back and the customer's retry would file a second ticket, while a receipt posted twice
costs nothing. The topic is best effort; the ticket is what the ISP acts on.
"""

from __future__ import annotations

import logging
from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.agent import agent_request
from flows.base import Conversation, Flow, model
from flows.ports import HandoffError
from flows.requests import back_to_menu, opening
from flows.texts import Texts
from flows.tickets import file_ticket, open_ticket_about

log = logging.getLogger(__name__)

CATEGORY = "payment"
RECEIPT_TYPES = frozenset({"photo", "document"})  # what a receipt may be sent as
MIN_DETAILS = 5  # characters of a typed payment, after trimming
MAX_DETAILS = 1000


class PaymentReportFlow(Flow):
    """Receipt or details → (topic) → one ticket → next steps."""

    name = "payment_report"
    needs_verification = True
    text_states = frozenset({"receipt"})

    def states(self) -> list[dict[str, Any]]:
        """Waiting for the receipt (or, after an unconfirmed ticket, for "try again")."""
        return [{"name": "idle"}, {"name": "receipt"}]

    def transitions(self) -> list[dict[str, Any]]:
        """The payment report table; conditions run in order, the first that holds wins."""
        done = [self.say_next_steps, back_to_menu]
        return [
            *opening(self.already_reported, self.say_already_reported),
            {"trigger": "begin", "source": "*", "dest": "receipt", "after": self.ask_receipt},
            {
                "trigger": "media",
                "source": "receipt",
                "dest": None,
                "unless": self.is_receipt,
                "after": self.say_not_a_receipt,
            },
            {
                "trigger": "media",
                "source": "receipt",
                "dest": "idle",
                "conditions": self.file,
                "after": done,
            },
            {"trigger": "media", "source": "receipt", "dest": None, "after": self.say_unconfirmed},
            {
                "trigger": "text",
                "source": "receipt",
                "dest": None,
                "unless": self.details_ok,
                "after": self.say_too_short,
            },
            {
                "trigger": "text",
                "source": "receipt",
                "dest": "idle",
                "conditions": self.file,
                "after": done,
            },
            {"trigger": "text", "source": "receipt", "dest": None, "after": self.say_unconfirmed},
            # After an unconfirmed ticket: "Confirmar" looks for it before posting again.
            {
                "trigger": "confirm",
                "source": "receipt",
                "dest": "idle",
                "conditions": [self.has_report, self.file],
                "after": done,
            },
            {
                "trigger": "confirm",
                "source": "receipt",
                "dest": None,
                "after": self.say_unconfirmed,
            },
            {
                "trigger": "cancel",
                "source": "receipt",
                "dest": "idle",
                "after": [self.say_cancelled, back_to_menu],
            },
        ]

    # -- conditions ------------------------------------------------------------------------
    async def already_reported(self, ev: AsyncEventData) -> bool:
        """A payment ticket is open for the service: say so rather than file another."""
        conv = model(ev)
        ticket = await open_ticket_about(conv, CATEGORY)
        if ticket is None:
            return False
        conv.data["open_ticket"] = [ticket.id, ticket.status]
        return True

    async def is_receipt(self, ev: AsyncEventData) -> bool:
        """A photo or a document (a sticker or a voice note is not a receipt)."""
        conv = model(ev)
        media = conv.inbound.media if conv.inbound else None
        if media is None or media.type not in RECEIPT_TYPES:
            return False
        conv.data["pay_report"] = ["media", media.type, media.caption[:MAX_DETAILS]]
        return True

    async def details_ok(self, ev: AsyncEventData) -> bool:
        """Typed payment details of a few characters at least; kept (cut to a sane length)."""
        text = " ".join(ev.kwargs.get("text", "").split())
        if len(text) < MIN_DETAILS:
            return False
        model(ev).data["pay_report"] = ["text", "", text[:MAX_DETAILS]]
        return True

    async def has_report(self, ev: AsyncEventData) -> bool:
        """A report is waiting for its unconfirmed ticket."""
        return "pay_report" in model(ev).data

    async def file(self, ev: AsyncEventData) -> bool:
        """The receipt to the agents' topic (once), then one ticket; False when WispHub's answer
        is unknown. A WispHub error rolls the step back (the receipt may be sent again)."""
        conv = model(ev)
        how, media_type, details = conv.data["pay_report"]
        notes = Texts(conv.ctx.settings.language)  # the ISP's language, for its staff
        if conv.ctx.handoff.configured and not conv.data.get("pay_posted"):
            posted = await self._to_topic(conv, notes, details if how == "text" else "")
            conv.data["pay_posted"] = posted
        if how == "media":
            channel = conv.key.channel.capitalize()
            where = notes(
                "pay_ticket_in_topic" if conv.data.get("pay_posted") else "pay_ticket_ask"
            )
            description = notes(
                "pay_ticket_media", type=media_type, channel=channel, caption=details, where=where
            )
        else:
            description = notes("pay_ticket_text", details=details)
        ticket = await file_ticket(conv, CATEGORY, description)
        if ticket is None:
            return False
        conv.data["pay_ticket"] = ticket.id
        if conv.data.get("pay_posted") and "topic" in conv.data:
            note = notes("pay_topic_ticket", id=ticket.id, subject=ticket.subject or "-")
            try:  # after the POST: nothing here may fail the step (a retry would file again)
                await conv.ctx.handoff.notify(int(conv.data["topic"]), note)
            except HandoffError:
                log.warning("ticket note not posted in the topic", extra={"conv": str(conv.key)})
        return True

    @staticmethod
    async def _to_topic(conv: Conversation, notes: Texts, details: str) -> bool:
        """Card and receipt in the customer's topic, best effort (the ticket matters more)."""
        inbound = conv.inbound
        try:
            request = await agent_request(conv, "payment_report")
            thread_id = await conv.ctx.handoff.open(request, conv.data.get("topic"))
            await conv.ctx.store.set_topic(thread_id, conv.key)
            conv.data["topic"] = thread_id
            if details:
                await conv.ctx.handoff.notify(thread_id, notes("pay_topic_details", text=details))
            elif inbound is not None and inbound.media is not None:
                label = notes("agents.customer_media", type=inbound.media.type)
                await conv.ctx.handoff.forward(thread_id, inbound, label)
        except HandoffError:
            log.warning("payment receipt not posted in the topic", extra={"conv": str(conv.key)})
            return False
        return True

    # -- replies ---------------------------------------------------------------------------
    async def ask_receipt(self, ev: AsyncEventData) -> None:
        """The receipt as a photo or a document, or the payment typed."""
        conv = model(ev)
        for name in ("pay_report", "pay_posted", "pay_ticket", "unconfirmed"):
            conv.data.pop(name, None)
        conv.say(conv.t("pay_ask_receipt"), conv.opts("cancel"))

    async def say_already_reported(self, ev: AsyncEventData) -> None:
        """A payment report is already under way."""
        conv = model(ev)
        number, status = conv.data.pop("open_ticket")
        conv.say(conv.t("pay_already_reported", id=number, status=conv.t.status(status)))

    async def say_not_a_receipt(self, ev: AsyncEventData) -> None:
        """A sticker, a voice note...: ask again."""
        conv = model(ev)
        conv.say(conv.t("pay_not_a_receipt"), conv.opts("cancel"))

    async def say_too_short(self, ev: AsyncEventData) -> None:
        """Too little to go on."""
        conv = model(ev)
        conv.say(conv.t("pay_details_too_short"), conv.opts("cancel"))

    async def say_next_steps(self, ev: AsyncEventData) -> None:
        """The ticket's number and what happens now."""
        conv = model(ev)
        number = conv.data.pop("pay_ticket")
        posted = conv.data.get("pay_posted", False)
        for name in ("pay_report", "pay_posted"):
            conv.data.pop(name, None)
        key = "pay_reported_agents" if posted else "pay_reported"
        conv.say(conv.t(key, id=number))

    async def say_unconfirmed(self, ev: AsyncEventData) -> None:
        """WispHub did not confirm the ticket: Confirmar looks for it first; or an agent."""
        conv = model(ev)
        conv.say(conv.t("ticket_unconfirmed"), conv.opts("confirm", "cancel", "agent"))

    async def say_cancelled(self, ev: AsyncEventData) -> None:
        """No report."""
        conv = model(ev)
        for name in ("pay_report", "pay_posted", "unconfirmed"):
            conv.data.pop(name, None)
        conv.say(conv.t("pay_cancelled"))
