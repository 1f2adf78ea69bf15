"""WispHub Net: async client, typed models, errors, and a compatible sandbox server."""

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
