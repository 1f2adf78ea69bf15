"""Notices: what the bot tells a customer first (issue 15).

The ``Notice`` type is the contract between the runtime (``bot.notices``: polls, scheduling,
sending) and the dialog (the replies a notice gives and the state that understands the answer).

MINIMAL FORM (h7-notices): ``notice_turn`` is the smallest dialog side the runtime needs to run
and be tested before h8-noticeflows' dialog side is merged; h8's ``Dialog.notice`` replaces it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flows.agent import WAITING
from flows.texts import Texts
from flows.types import ConvKey, Outbound

if TYPE_CHECKING:
    from flows.dialog import Dialog, Turn


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the bot tells a customer first."""

    kind: str  # one of KINDS
    service_id: int
    # The event's identity (dedupe: once per customer per event), e.g. "outage:7:1764400000",
    # "ticket:4711:progress", "reminder:10:2026-12-05".
    event: str
    params: Mapping[str, str] = field(default_factory=dict)


KINDS = ("outage_resolved", "ticket_progress", "ticket_resolved", "payment_reminder", "promise_due")


async def notice_turn(
    dialog: Dialog[Any], key: ConvKey, loaded: Any, notice: Notice
) -> Turn[Any] | None:
    """The minimal dialog side: one text per kind, the session unchanged; nothing during a
    handoff with an agent (the agent speaks then)."""
    from flows.dialog import Turn  # the dialog imports this module's types

    if loaded is not None and loaded.state == WAITING:
        return None
    session = loaded if loaded is not None else dialog.new_session()
    text = Texts(session.lang)(f"notice_min.{notice.kind}", **dict(notice.params))
    return Turn(session, [Outbound(key, text)])
