"""Reading a ping task's result: ok, no response, partial, unknown."""

from __future__ import annotations

from typing import Any

import pytest
from wisphub_respx import ping_item

from integrations.wisphub.ping import classify_ping


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (
            [
                ping_item(1, 1),
                ping_item(2, 1, "1ms500us"),
                ping_item(3, 1),
                {"ping-exitoso": "3 de 3"},
            ],
            ("ok", 3, 3),
        ),
        (
            [ping_item(1, 0), ping_item(2, 0), ping_item(3, 0), {"ping-exitoso": "0 de 3"}],
            ("no_response", 3, 0),
        ),
        ([ping_item(1, 1), ping_item(2, 0), ping_item(3, 1)], ("partial", 3, 2)),
        ([{"ping-exitoso": "2 de 4"}], ("partial", 4, 2)),
        (["failure: no route to host"], ("unknown", 0, 0)),
        ("router is not reachable by API", ("unknown", 0, 0)),
        ([], ("unknown", 0, 0)),
        (None, ("unknown", 0, 0)),
    ],
)
def test_classify_ping(result: Any, expected: tuple[str, int, int]) -> None:
    got = classify_ping(result)
    assert (got.status, got.sent, got.received) == expected


def test_classify_ping_averages_round_trip_times() -> None:
    got = classify_ping([ping_item(1, 1, "10ms"), ping_item(2, 1, "1ms500us"), ping_item(3, 0)])
    assert got.avg_rtt_ms == pytest.approx(5.75)
