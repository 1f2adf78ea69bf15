"""A circuit breaker for WispHub: after repeated failures, fail fast for a while, then probe.

During a mass outage WispHub is what everybody needs at once; when it is down, waiting out
timeouts for every customer only piles load on it and delays every answer. Open, the breaker
answers ``CircuitOpen`` at once so the customer hears "our system is not answering" (with an
agent offered) within the 15-second promise; after ``reset_after`` seconds one call is let
through as a probe, and its success closes the circuit again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from integrations.wisphub.errors import WispHubUnavailable

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]


class CircuitOpen(WispHubUnavailable):
    """WispHub failed repeatedly; calls fail fast until the probe succeeds."""


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open probe."""

    def __init__(
        self,
        failures: int = 5,
        reset_after: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self.threshold = failures
        self.reset_after = reset_after
        self._clock = clock
        self.on_change = on_change
        self.state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    def _set(self, state: State) -> None:
        if state != self.state:
            self.state = state
            log.warning("WispHub circuit %s", state.replace("_", "-"))
            if self.on_change is not None:
                self.on_change(state)

    def before(self) -> None:
        """Raise ``CircuitOpen`` unless a call may go out now."""
        if self.state == "closed":
            return
        if self.state == "open" and self._clock() - self._opened_at >= self.reset_after:
            self._set("half_open")
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return
        msg = "WispHub is failing; not calling it for a while (circuit open)"
        raise CircuitOpen(msg)

    def success(self) -> None:
        """WispHub answered (any answer that is not an outage counts)."""
        self._failures = 0
        self._probing = False
        self._set("closed")

    def failure(self) -> None:
        """WispHub was unavailable for this call (after its retries)."""
        self._probing = False
        self._failures += 1
        if self.state == "half_open" or self._failures >= self.threshold:
            self._opened_at = self._clock()
            self._set("open")
