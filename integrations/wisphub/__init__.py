"""WispHub Net: settings, request pipeline, async client, models, errors, ping parsing, sandbox.

Imports nothing from ``bot`` or ``flows``: the dialog and the runtime use it, never the reverse.
"""

from integrations.wisphub.errors import (
    TicketUnconfirmed,
    WispHubConfigError,
    WispHubError,
    WispHubKeyRefused,
    WispHubNotFound,
    WispHubRejected,
    WispHubUnavailable,
)
from integrations.wisphub.models import (
    Client,
    Invoice,
    PaymentMethod,
    PingResult,
    Plan,
    Ticket,
    TicketRequest,
)

__all__ = [
    "Client",
    "Invoice",
    "PaymentMethod",
    "PingResult",
    "Plan",
    "Ticket",
    "TicketRequest",
    "TicketUnconfirmed",
    "WispHubConfigError",
    "WispHubError",
    "WispHubKeyRefused",
    "WispHubNotFound",
    "WispHubRejected",
    "WispHubUnavailable",
]
