"""Formas de pago: WispHub's ``GET /formas-de-pago/`` and the ISP's own words
(``PAYMENT_METHODS_TEXT``), then the menu of the customer's level. Public: no identification."""

from __future__ import annotations

import logging
from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Flow, model
from integrations.wisphub.errors import WispHubError

log = logging.getLogger(__name__)


class PaymentMethodsFlow(Flow):
    """One answer, then the menu."""

    name = "payment_methods"

    def states(self) -> list[dict[str, Any]]:
        """Nothing to wait for."""
        return [{"name": "idle"}]

    def transitions(self) -> list[dict[str, Any]]:
        """Show the methods."""
        return [{"trigger": "begin", "source": "*", "dest": "idle", "after": self.show}]

    async def show(self, ev: AsyncEventData) -> None:
        """WispHub's methods and the ISP's text; the ISP's text alone when WispHub is down."""
        conv = model(ev)
        own = conv.ctx.settings.payment_methods_text.strip()
        try:
            methods = await conv.ctx.wisphub.payment_methods()
        except WispHubError:
            if not own:
                raise  # nothing to tell: the dialog apologises and offers an agent
            log.warning(
                "payment methods not read; the ISP's text alone", extra={"conv": str(conv.key)}
            )
            methods = []
        lines = [conv.t("pay_methods_line", name=m.name) for m in methods if m.name.strip()]
        parts = []
        if lines:
            parts.append("\n".join([conv.t("pay_methods_header"), *lines]))
        if own:
            parts.append(own)
        conv.say("\n\n".join(parts) if parts else conv.t("pay_methods_none"))
        if conv.verified:
            conv.jump("client", "again")
        else:
            conv.jump("main", "again")
