"""The example files: enough per intent, valid, and the evaluation files never trained on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from flows.understand.examples import (
    INTENTS,
    LANGUAGES,
    SMALL_INTENTS,
    ExamplesError,
    load_examples,
    load_file,
    training_files,
)
from flows.understand.normalize import normalize
from tests.understand.conftest import EVAL_DIR

EVAL_FILES = {language: EVAL_DIR / f"eval_{language}.yaml" for language in LANGUAGES}


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_intent_has_enough_examples(language: str) -> None:
    counts = Counter(ex.intent for ex in load_examples(training_files(language), language))
    assert set(counts) == set(INTENTS)
    for intent in INTENTS:
        assert counts[intent] >= (20 if intent in SMALL_INTENTS else 40), intent


def test_the_evaluation_files_are_large_enough_and_label_every_intent() -> None:
    spanish = load_file(EVAL_FILES["es"])
    english = load_file(EVAL_FILES["en"])
    assert len(spanish) >= 200
    assert len(spanish) + len(english) >= 300
    assert {ex.intent for ex in spanish} == set(INTENTS)
    assert {ex.intent for ex in english} == set(INTENTS)


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_evaluation_message_is_a_training_example(language: str) -> None:
    training = {
        normalize(ex.text, language) for ex in load_examples(training_files(language), language)
    }
    leaked = [
        ex.text
        for ex in load_file(EVAL_FILES[language])
        if normalize(ex.text, language) in training
    ]
    assert leaked == []


def test_a_bad_example_file_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "es.yaml"
    bad.write_text("language: es\nintents:\n  greet:\n    - hola\n    - no\n")
    with pytest.raises(ExamplesError, match="False"):
        load_file(bad)
    bad.write_text("language: es\nintents:\n  pizza: [una pizza]\n")
    with pytest.raises(ExamplesError, match="unknown intent 'pizza'"):
        load_file(bad)
    bad.write_text("language: fr\nintents: {}\n")
    with pytest.raises(ExamplesError, match="language"):
        load_file(bad)


def test_an_isp_folder_adds_its_own_examples(tmp_path: Path) -> None:
    (tmp_path / "es.yaml").write_text("language: es\nintents:\n  plans: [tienen planes rurales]\n")
    files = training_files("es", [tmp_path])
    assert files[-1] == tmp_path / "es.yaml"
    assert load_examples(files, "es")[-1].text == "tienen planes rurales"
    assert training_files("en", [tmp_path]) == training_files("en")
