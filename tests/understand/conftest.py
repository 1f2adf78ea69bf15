"""One trained understanding for the whole session (training takes about a second a language)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flows.understand import Understanding

BOGOTA = ZoneInfo("America/Bogota")
# A Wednesday afternoon in Bogotá: "mañana" is Thursday 26, "el viernes" Friday 27.
NOW = datetime(2026, 11, 25, 15, 30, tzinfo=BOGOTA)
EVAL_DIR = Path(__file__).parent


@pytest.fixture(scope="session")
def understanding(tmp_path_factory: pytest.TempPathFactory) -> Understanding:
    return Understanding.load(tz=BOGOTA, cache_dir=tmp_path_factory.mktemp("understand-cache"))
