"""Typed option labels: "soy clente" chooses **Soy cliente**, "estado d cuenta" **Estado de cuenta**."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rapidfuzz import fuzz, process, utils

from flows.understand.normalize import normalize

# How alike a typed text and a label must be (rapidfuzz ratio, 0-100), and by how much the best
# label must beat the next one, so that a typo picks one option and never a coin toss.
MIN_SCORE = 80.0
MIN_LEAD = 6.0
_NUMBER = re.compile(r"#?\s*(\d{1,2})")


def match_option(text: str, labels: Sequence[str], language: str = "es") -> int | None:
    """The index of the option a typed text means: its number ("2", "#2"), its label folded
    (case, accents, emoji, elongations) or a label within a typo or two; None otherwise."""
    if (number := _NUMBER.fullmatch(text.strip())) is not None:
        index = int(number.group(1)) - 1
        return index if 0 <= index < len(labels) else None
    typed = normalize(text, language)
    if not typed:
        return None
    folded = [normalize(label, language) for label in labels]
    if typed in folded:
        return folded.index(typed)
    ranked = process.extract(
        typed, folded, scorer=fuzz.ratio, processor=utils.default_process, limit=2
    )
    if not ranked or ranked[0][1] < MIN_SCORE:
        return None
    if len(ranked) > 1 and ranked[0][1] - ranked[1][1] < MIN_LEAD:
        return None
    return int(ranked[0][2])
