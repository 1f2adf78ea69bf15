"""An ISP's own free-text examples (UNDERSTANDING_EXAMPLES) reach the running bot's model."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.runtime import understanding
from bot.settings import BotSettings

# A word no shipped example knows: only the ISP's file can teach it.
OWN = "zorblax quimbo"


def test_the_isps_own_examples_are_learned_at_start(tmp_path: Path) -> None:
    (tmp_path / "es.yaml").write_text(
        "language: es\nintents:\n  payment_methods:\n"
        + "".join(f"    - {text}\n" for text in (OWN, "zorblax", "pago por zorblax quimbo"))
    )
    tz = ZoneInfo("America/Bogota")
    assert understanding(tz).understand(OWN, "es").intent != "payment_methods"
    assert understanding(tz, tmp_path).understand(OWN, "es").intent == "payment_methods"


def test_a_missing_examples_folder_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UNDERSTANDING_EXAMPLES", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="expected a folder"):
        BotSettings()
