"""Greeting and the public menu: Soy cliente · Planes y precios · Hablar con un asesor."""

from __future__ import annotations

from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Flow, model

PUBLIC_OPTIONS = ("client", "plans", "agent")


class MainFlow(Flow):
    """Entry point of every conversation."""

    name = "main"

    def states(self) -> list[dict[str, Any]]:
        """Idle and the public menu."""
        return [{"name": "idle"}, {"name": "menu"}]

    def transitions(self) -> list[dict[str, Any]]:
        """Greet, then route the three public options to their flows."""
        return [
            {"trigger": "begin", "source": "*", "dest": "menu", "after": self.greet},
            {"trigger": "again", "source": "*", "dest": "menu", "after": self.menu},
            {"trigger": "client", "source": "menu", "dest": "idle", "after": self.to_identify},
            {"trigger": "plans", "source": "menu", "dest": "idle", "after": self.to_plans},
        ]

    async def greet(self, ev: AsyncEventData) -> None:
        """Greeting (with the ISP's name when it has one) and the public menu."""
        conv = model(ev)
        conv.say(conv.greeting())
        conv.say(conv.t("public_menu"), conv.opts(*PUBLIC_OPTIONS))

    async def menu(self, ev: AsyncEventData) -> None:
        """The public menu alone."""
        conv = model(ev)
        conv.say(conv.t("public_menu"), conv.opts(*PUBLIC_OPTIONS))

    async def to_identify(self, ev: AsyncEventData) -> None:
        """Soy cliente."""
        model(ev).jump("identify")

    async def to_plans(self, ev: AsyncEventData) -> None:
        """Planes y precios."""
        model(ev).jump("plans")
