"""What a ticket POST carries, and how to recognise its ticket when the POST's outcome is unknown.

WispHub has no idempotency: a ticket POST that timed out or got an unreadable answer is not
sent again; the client looks for the ticket it may have made instead (``matching_ticket``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta

from integrations.wisphub.models import Ticket, TicketRequest

# How far before ``requested_at`` a reconciled ticket may claim to be created (clock skew).
RECONCILE_SKEW = timedelta(minutes=2)
# Hours from the start of a ticket to its ``fecha_final``, per WispHub priority code.
SLA_HOURS: Mapping[str, int] = {"1": 72, "2": 48, "3": 24, "4": 8}
_WISPHUB_DATETIME = "%d/%m/%Y %H:%M"


def ticket_fields(req: TicketRequest, technician: int | None, start: datetime) -> dict[str, str]:
    """The form fields of a ticket POST starting at ``start`` (in the ISP's time zone)."""
    end = start + timedelta(hours=SLA_HOURS.get(req.priority, 24))
    fields = {
        "servicio": str(req.service_id),
        "asunto": req.subject,
        "asuntos_default": req.subject,
        "descripcion": req.description,
        "estado": "1",
        "prioridad": req.priority,
        "departamento": req.department,
        "departamentos_default": req.department,
        "origen_reporte": req.origin,
        "fecha_inicio": start.strftime(_WISPHUB_DATETIME),
        "fecha_final": end.strftime(_WISPHUB_DATETIME),
    }
    if technician is not None:
        fields["tecnico"] = str(technician)
    return fields


def matching_ticket(
    req: TicketRequest,
    tickets: Iterable[Ticket],
    *,
    since: datetime,
    aware: Callable[[datetime | None], datetime | None],
) -> Ticket | None:
    """The newest open ticket that is this request: same service, subject and description.

    Real ticket items often lack ``fecha_creacion``: time only excludes a ticket whose
    ``fecha_creacion`` is before ``since``. The planned start is no proof (a tenant may plan
    from midnight), and an older open ticket with the same words is the same report.
    """
    subject = req.subject.strip().casefold()
    description = _plain(req.description)
    candidates = [
        t
        for t in tickets
        if t.service_id == req.service_id
        and t.subject.strip().casefold() == subject
        and _plain(t.description) == description
        and ((created := aware(t.created_at)) is None or created >= since)
    ]
    return max(candidates, key=lambda t: t.id) if candidates else None


def _plain(text: str) -> str:
    """Text compared across WispHub's echo: tags dropped (descriptions come back as HTML),
    entities decoded, spacing and case folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", text)).split()).casefold()
