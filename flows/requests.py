"""What the request flows share (flows/payment_report.py, flows/service_request.py): the
opening of ``begin`` (identify first; a request of the same kind under way is told, not filed
again) and the way back to the client menu."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import model


async def need_identity(ev: AsyncEventData) -> None:
    """Entered before verification (the free-text router): identify first."""
    conv = model(ev)
    conv.say(conv.t("request_identify_first"))
    conv.jump("identify")


async def is_verified(ev: AsyncEventData) -> bool:
    """The customer is verified (the request is filed for their service)."""
    return bool(model(ev).verified)


async def back_to_menu(ev: AsyncEventData) -> None:
    """The client menu again."""
    model(ev).jump("client", "again")


def opening(
    under_way: Callable[..., Any],
    say_under_way: Callable[..., Any],
    between: tuple[dict[str, Any], ...] = (),
) -> list[dict[str, Any]]:
    """``begin``'s first rows: unverified → identification; then ``between``; then, when
    ``under_way`` holds, say so and back to the menu."""
    return [
        {"trigger": "begin", "source": "*", "dest": "idle", "unless": is_verified,
         "after": need_identity},
        *between,
        {"trigger": "begin", "source": "*", "dest": "idle", "conditions": under_way,
         "after": [say_under_way, back_to_menu]},
    ]  # fmt: skip
