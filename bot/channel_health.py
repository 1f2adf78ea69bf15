"""Whether each channel can still send: what ``/readyz`` reports besides Redis and WispHub.

A channel is *failing* when every send of the last ``window`` seconds failed: its calls have
been failing for at least the window, with no success since, and the latest failure lies within
the window (a channel nobody sent on for a while is not reported down on old news). One success
clears it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SendHealth:
    """The outcome of each channel's sends, as one streak of failures per channel."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._streaks: dict[str, tuple[float, float]] = {}  # channel -> (first, last) failure

    def record(self, channel: str, ok: bool) -> None:
        """One send of ``channel`` succeeded (``ok``) or failed."""
        if ok:
            self._streaks.pop(channel, None)
            return
        now = self._clock()
        first, _ = self._streaks.get(channel, (now, now))
        self._streaks[channel] = (first, now)

    def failing(self) -> list[str]:
        """The channels whose every send failed during the last ``window`` seconds."""
        now = self._clock()
        return sorted(
            channel
            for channel, (first, last) in self._streaks.items()
            if now - first >= self.window and now - last < self.window
        )
