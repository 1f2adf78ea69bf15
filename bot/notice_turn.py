"""A notice as a turn (``Engine.notice``; here to keep the engine's module within its size).

The same path as a customer's message: the conversation lock (first come, first served with
the customer's own turns), the session read, the dialog's ``notice``, the save with the
outbox, delivery, the save and unlock. Nothing of a channel or WispHub is known here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.concurrency import ON_WIRE
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
    loses that one notice rather than sending it twice. The turn's replies are saved as its
    outbox, which the sweep sends should the process die while they wait for their pacing
    slot; once the first of them may go, the outbox is saved empty (``ON_WIRE``): a process
    killed while a request is out loses the notice rather than sending it twice.
    """
    try:
        async with engine._conversation(key) as ticket:
            store, ttl = engine.ctx.store, engine.settings.session_ttl
            loaded = await engine._retry(lambda: store.load(key), "load")
            turn = await engine.dialog.notice(key, loaded, notice)
            if turn is None or (mark is not None and not await mark()):
                return None
            pending = engine._pending(turn.session)
            engine._count(turn)
            session = turn.session
            out = False

            async def taken_out() -> None:
                nonlocal out
                if out:
                    return  # once a turn
                out = True
                session.outbox = []
                await engine._retry(lambda: store.save(key, session, ttl, ticket=ticket), "save")

            wire = ON_WIRE.set(taken_out)
            try:
                return await engine._commit(key, session, pending + turn.replies, deliver, ticket)
            finally:
                ON_WIRE.reset(wire)
    except LockLost:
        log.warning("notice given up: its place was taken over", extra={"conv": str(key)})
        return None
