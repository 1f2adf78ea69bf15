"""Real-shape payloads kept under ``tests/fixtures/`` (each file names its source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture(name: str) -> Any:
    """The parsed YAML file ``tests/fixtures/<name>``."""
    return yaml.safe_load((FIXTURES / name).read_text(encoding="utf-8"))
