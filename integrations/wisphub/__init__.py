"""WispHub Net: async client, typed models, errors, and a compatible sandbox server."""

from integrations.wisphub.errors import (
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
    "WispHubConfigError",
    "WispHubError",
    "WispHubKeyRefused",
    "WispHubNotFound",
    "WispHubRejected",
    "WispHubUnavailable",
]
