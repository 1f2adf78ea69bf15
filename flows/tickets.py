"""The one builder of the bot's ticket requests: the fault flow and the agents' ``/ticket``."""

from __future__ import annotations

from datetime import datetime

from flows.settings import TicketMapping
from integrations.wisphub.models import TicketRequest


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
