"""The store's errors (see ``bot.store``)."""

from __future__ import annotations

from flows.ports import PortUnavailable


class StoreError(Exception):
    """Anything that went wrong in the session store."""


class StoreUnavailable(StoreError, PortUnavailable):
    """The backend did not answer; the operation may work later."""


class LockTimeout(StoreError):
    """The conversation lock was still held by someone else when ``wait`` ran out."""


class LockLost(StoreError):
    """The turn no longer owns its conversation: another process took its place over (this one
    was taken for dead, e.g. after a long pause). Nothing of the turn may be saved or sent."""


class SessionCorrupt(StoreError):
    """A stored session could not be read back."""
