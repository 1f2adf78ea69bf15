"""The one builder of the bot's ticket requests (the fault flow and the agents' ``/ticket``),
and the filing of the requests' tickets (payment reports, cancellations, plan changes, moves)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flows.names import fold
from flows.settings import TicketMapping
from integrations.wisphub.errors import TicketUnconfirmed
from integrations.wisphub.models import Ticket, TicketRequest

if TYPE_CHECKING:
    from flows.base import Conversation


def ticket_request(
    mapping: TicketMapping,
    *,
    service_id: int,
    category: str,
    description: str,
    requested_at: datetime,
    technician_id: int | None = None,
    recheck: bool = False,
) -> TicketRequest:
    """A ticket for a service, filed the ISP's way (its subject catalogue, department, origin).

    ``technician_id``: the one the client record names, else the mapping's default.
    ``recheck``: an earlier attempt's outcome is unknown (look for that ticket before posting).
    """
    subject, priority = mapping.subject_for(category)
    return TicketRequest(
        service_id=service_id,
        subject=subject,
        description=description,
        priority=priority,
        technician_id=technician_id or mapping.technician_id,
        department=mapping.department,
        origin=mapping.origin,
        requested_at=requested_at,
        recheck=recheck,
    )


async def open_ticket_about(conv: Conversation, category: str) -> Ticket | None:
    """The newest open ticket of the verified service filed under the category's subject: a
    request already under way is told, never filed twice."""
    subject = fold(conv.ctx.settings.tickets.subject_for(category)[0])
    tickets = await conv.ctx.wisphub.open_tickets(conv.data["service_id"])
    same = [t for t in tickets if fold(t.subject or "") == subject]
    return max(same, key=lambda t: t.id) if same else None


async def file_ticket(
    conv: Conversation, category: str, description: str, origin: str | None = None
) -> Ticket | None:
    """File one ticket for the verified service (one POST); None when WispHub's answer is
    unknown: the request's time is kept so that trying again looks for that ticket first.
    ``origin`` labels the ticket in the metrics (default: the category)."""
    client = await conv.client()
    request = ticket_request(
        conv.ctx.settings.tickets,
        service_id=client.service_id,
        category=category,
        description=description,
        technician_id=client.technician.id if client.technician else None,
        requested_at=datetime.fromtimestamp(conv.data.get("unconfirmed", conv.now), tz=UTC),
        recheck="unconfirmed" in conv.data,
    )
    try:
        ticket = await conv.ctx.wisphub.create_ticket(request)
    except TicketUnconfirmed:
        conv.data["unconfirmed"] = request.requested_at.timestamp()
        return None
    conv.data.pop("unconfirmed", None)
    conv.tickets.append(origin or category)
    return ticket
