"""Planes y precios: the catalogue with prices, and an agent offered for sales."""

from __future__ import annotations

from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Flow, model


class PlansFlow(Flow):
    """Public: no identification needed."""

    name = "plans"

    def states(self) -> list[dict[str, Any]]:
        """After the catalogue, the customer may ask for an agent or go back."""
        return [{"name": "idle"}, {"name": "shown"}]

    def transitions(self) -> list[dict[str, Any]]:
        """Show the plans."""
        return [{"trigger": "begin", "source": "*", "dest": "shown", "after": self.show}]

    async def show(self, ev: AsyncEventData) -> None:
        """Every plan with its monthly price and speeds."""
        conv = model(ev)
        plans = await conv.ctx.wisphub.plans()
        lines = []
        for p in sorted(plans, key=lambda p: (p.price is None, p.price or 0, p.name)):
            speed = conv.t("plan_speed", down=p.download, up=p.upload) if p.download else ""
            if p.price is None:  # PCQ plans: WispHub has no price for them
                lines.append(conv.t("plan_line_no_price", name=p.name, speed=speed))
                continue
            lines.append(conv.t("plan_line", name=p.name, price=conv.money(p.price), speed=speed))
        if lines:
            conv.say("\n".join([conv.t("plans_header"), *lines]))
        else:
            conv.say(conv.t("plans_none"))
        conv.say(conv.t("plans_sales"), conv.opts("agent", "menu"))
