"""A notice as a turn (``Engine.notice``; here to keep the engine's module within its size).

The same path as a customer's message: the conversation lock (first come, first served with
the customer's own turns), the session read, the dialog's ``notice``, the save with the
outbox, delivery, the save and unlock. Nothing of a channel or WispHub is known here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.store import LockLost
from flows.notices import Notice
from flows.types import ConvKey, Outbound

if TYPE_CHECKING:
    from bot.engine import Deliver, Engine

log = logging.getLogger(__name__)


async def run_notice(
    engine: Engine,
    key: ConvKey,
    notice: Notice,
    deliver: Deliver | None,
    mark: Callable[[], Awaitable[bool]] | None,
) -> list[Outbound] | None:
    """Run the notice; its replies, or None when nothing was sent.

    Nothing is sent when the dialog finds nothing to say (a handoff, a notice that no longer
    applies) or when ``mark`` (the notice's dedupe mark, taken under the lock just before the
    save) finds it sent already. The mark comes before the save: a process killed in between
    loses that one notice rather than sending it twice.
    """
    try:
        async with engine._conversation(key) as ticket:
            loaded = await engine._retry(lambda: engine.ctx.store.load(key), "load")
            turn = await engine.dialog.notice(key, loaded, notice)
            if turn is None or (mark is not None and not await mark()):
                return None
            pending = engine._pending(turn.session)
            engine._count(turn)
            return await engine._commit(key, turn.session, pending + turn.replies, deliver, ticket)
    except LockLost:
        log.warning("notice given up: its place was taken over", extra={"conv": str(key)})
        return None
