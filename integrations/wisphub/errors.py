"""The WispHub exception tree, rooted at ``WispHubError``::

    WispHubError
     ├── WispHubConfigError    wrong base URL (HTML body): an operator must act
     │    └── WispHubKeyRefused   401/403: the API key is wrong, revoked or lacks a permission
     │                            (a 403 right after accepted calls is throttling: Unavailable)
     ├── WispHubNotFound       404 on a detail path
     ├── WispHubUnavailable    5xx, timeouts, transport errors, undecodable JSON: try later
     │    └── TicketUnconfirmed  a ticket POST may have worked but the ticket was not found
     └── WispHubRejected       other 4xx; carries WispHub's own message

Messages never contain the API key.
"""

from __future__ import annotations


class WispHubError(Exception):
    """Anything that went wrong talking to WispHub."""


class WispHubConfigError(WispHubError):
    """The base URL or the API key is wrong, or the key lacks a permission."""


class WispHubKeyRefused(WispHubConfigError):
    """WispHub refused the API key (401/403)."""


class WispHubNotFound(WispHubError):
    """The requested record does not exist."""


class WispHubUnavailable(WispHubError):
    """WispHub did not answer usefully (5xx, timeout, network); the call may work later."""


class TicketUnconfirmed(WispHubUnavailable):
    """A ticket POST's outcome is unknown and the ticket was not found: look before resending."""


class WispHubRejected(WispHubError):
    """WispHub refused the request (4xx other than 401/403/404)."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"WispHub rejected the request ({status}): {detail}")
