"""The gate of `make test`: accuracy on the held-out evaluation files stays at 85% or more."""

from __future__ import annotations

import pytest

from flows.understand import LANGUAGES, Understanding
from flows.understand.evaluate import evaluate
from tests.understand.conftest import EVAL_DIR, NOW

MIN_ACCURACY = 0.85


@pytest.mark.parametrize("language", LANGUAGES)
def test_accuracy_on_the_evaluation_file(understanding: Understanding, language: str) -> None:
    scored = evaluate(understanding, EVAL_DIR / f"eval_{language}.yaml", now=NOW)
    assert scored.total >= 100
    assert scored.accuracy >= MIN_ACCURACY, scored.render()
