"""The classifier: the fast scorer equals scikit-learn's pipeline; the cache follows the examples."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from flows.understand import classifier
from flows.understand.classifier import IntentModel, fit_pipeline, load_or_train, model_text
from flows.understand.examples import DATA_DIR, Example, load_examples, load_file

SAMPLES = [
    "no me jala el internet desde ayer",
    "ya cancelé la factura, reconéctenme",
    "quiero cancelar el servicio",
    "CC 1.020.304.050",
    "hola",
    "zzzz qqqq",  # nothing the model knows
    "",
]


def test_the_fast_scorer_gives_the_pipelines_probabilities() -> None:
    examples = load_examples([DATA_DIR / "es.yaml"], "es")
    texts = [model_text(ex.text, "es") for ex in examples]
    pipeline = fit_pipeline(texts, [ex.intent for ex in examples])
    model = IntentModel(pipeline)
    assert list(model.classes) == list(pipeline.classes_)
    for sample in SAMPLES:
        text = model_text(sample, "es")
        expected = pipeline.predict_proba([text])[0]
        np.testing.assert_allclose(model.proba(text), expected, rtol=1e-9, atol=1e-12)


def copy_examples(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA_DIR / "es.yaml", folder / "es.yaml")
    return [folder / "es.yaml"]


def test_the_model_is_cached_by_the_examples_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = copy_examples(tmp_path / "examples")
    cache = tmp_path / "cache"
    trained: list[int] = []
    real_train = classifier.train

    def counting_train(examples: list[Example]) -> IntentModel:
        trained.append(1)
        return real_train(examples)

    monkeypatch.setattr(classifier, "train", counting_train)

    first, cached = load_or_train(load_file(files[0]), files, "es", cache)
    assert (cached, len(trained)) == (False, 1)
    second, cached = load_or_train(load_file(files[0]), files, "es", cache)
    assert (cached, len(trained)) == (True, 1)
    text = model_text("no tengo internet", "es")
    np.testing.assert_allclose(second.proba(text), first.proba(text))

    # A changed example file trains again, and learns the change.
    files[0].write_text(
        files[0].read_text().replace("  plans:\n", "  plans:\n    - zanahorias voladoras\n")
    )
    third, cached = load_or_train(load_file(files[0]), files, "es", cache)
    assert (cached, len(trained)) == (False, 2)
    probe = third.proba(model_text("zanahorias voladoras", "es"))
    assert third.classes[int(probe.argmax())] == "plans"
    assert len(list(cache.glob("intents-es-*.joblib"))) == 2


def test_an_unreadable_cache_file_means_training_again(tmp_path: Path) -> None:
    files = copy_examples(tmp_path / "examples")
    cache = tmp_path / "cache"
    load_or_train(load_file(files[0]), files, "es", cache)
    [cached_file] = cache.glob("intents-es-*.joblib")
    cached_file.write_bytes(b"not a model")

    model, cached = load_or_train(load_file(files[0]), files, "es", cache)

    assert cached is False
    assert model.classes[int(model.proba(model_text("hola", "es")).argmax())] == "greet"
    # ... and the cache is whole again.
    assert load_or_train(load_file(files[0]), files, "es", cache)[1] is True


def test_a_cache_folder_that_cannot_be_made_falls_back_to_a_private_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = copy_examples(tmp_path / "examples")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))

    load_or_train(load_file(files[0]), files, "es", blocked / "cache")

    [folder] = (tmp_path / "tmp").iterdir()
    assert folder.name.startswith("wispbot-")
    assert folder.stat().st_mode & 0o077 == 0  # only its owner reads the pickles
    assert list(folder.glob("intents-es-*.joblib"))
    assert load_or_train(load_file(files[0]), files, "es", blocked / "cache")[1] is True
