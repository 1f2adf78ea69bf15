"""The intent classifier: TF-IDF over character and word n-grams, a linear SVM, calibrated.

scikit-learn learns it from the example files at start-up (well under 2 s), and the fitted model
is kept on disk under a name made of the examples' content hash, so a start-up with the same
examples loads it instead, and a changed example file trains again. A message is then scored
without scikit-learn's per-call validation (milliseconds for one message): the fitted
vectorizers' own analyzers, vocabularies and idf weights, the SVM's coefficients and the Platt
calibrators give the same probabilities as the pipeline's ``predict_proba`` in a fraction of the
time (a test holds the two equal).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from flows.understand.examples import Example
from flows.understand.normalize import normalize

log = logging.getLogger(__name__)

# Bump when the features or the model change: cached models of another version are not loaded.
MODEL_VERSION = "1"
_DIGIT = re.compile(r"\d")


def model_text(text: str, language: str) -> str:
    """What the classifier reads: the normalised words, every digit a 0 (a document number
    is "0000000000", an amount "00000": their shape matters, their value does not)."""
    return _DIGIT.sub("0", normalize(text, language))


def _vectorizers() -> list[tuple[str, TfidfVectorizer]]:
    """Character n-grams within words (typos, regional spellings) and word 1-2-grams."""
    return [
        (
            "chars",
            TfidfVectorizer(
                analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=False
            ),
        ),
        (
            "words",
            TfidfVectorizer(
                analyzer="word",
                ngram_range=(1, 2),
                sublinear_tf=True,
                lowercase=False,
                token_pattern=r"\b\w+\b",  # noqa: S106 (a regex, not a password)
            ),
        ),
    ]


def fit_pipeline(texts: Sequence[str], labels: Sequence[str]) -> Pipeline:
    """Fit the scikit-learn pipeline on model texts."""
    features = FeatureUnion(_vectorizers())
    svm = LinearSVC(C=0.5, class_weight="balanced", random_state=0)  # the same model every time
    classifier = CalibratedClassifierCV(svm, method="sigmoid", cv=3, ensemble=False)
    pipeline = Pipeline([("features", features), ("classifier", classifier)])
    # One BLAS thread: the calibration's many tiny L-BFGS steps run ~8x slower when OpenBLAS
    # spreads them over threads on a busy 2-core machine (2 s instead of 0.25 s, measured).
    with threadpool_limits(limits=1):
        pipeline.fit(list(texts), list(labels))
    return pipeline


@dataclass
class _Part:
    analyzer: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: np.ndarray
    offset: int


class IntentModel:
    """A fitted classifier, scoring one message fast."""

    def __init__(self, pipeline: Pipeline) -> None:
        union: FeatureUnion = pipeline.named_steps["features"]
        calibrated = pipeline.named_steps["classifier"].calibrated_classifiers_[0]
        svm: LinearSVC = calibrated.estimator
        self.classes: tuple[str, ...] = tuple(str(c) for c in svm.classes_)
        self._parts: list[_Part] = []
        offset = 0
        for _name, vectorizer in union.transformer_list:
            self._parts.append(
                _Part(
                    vectorizer.build_analyzer(),
                    dict(vectorizer.vocabulary_),
                    np.asarray(vectorizer.idf_, dtype=np.float64),
                    offset,
                )
            )
            offset += len(vectorizer.vocabulary_)
        self._weights = np.ascontiguousarray(svm.coef_.T, dtype=np.float64)  # features x classes
        self._intercept = np.asarray(svm.intercept_, dtype=np.float64)
        self._cal_a = np.array([c.a_ for c in calibrated.calibrators], dtype=np.float64)
        self._cal_b = np.array([c.b_ for c in calibrated.calibrators], dtype=np.float64)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_parts"] = [(p.vocabulary, p.idf, p.offset) for p in self._parts]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        parts = state.pop("_parts")
        self.__dict__.update(state)
        # The analyzers are rebuilt rather than pickled: they are closures over the settings.
        fresh = [vectorizer.build_analyzer() for _, vectorizer in _vectorizers()]
        self._parts = [_Part(a, v, idf, off) for a, (v, idf, off) in zip(fresh, parts, strict=True)]

    def proba(self, text: str) -> np.ndarray:
        """Calibrated probabilities of every class (in ``classes`` order) for a model text."""
        indices: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for part in self._parts:
            get = part.vocabulary.get
            known = [i for i in map(get, part.analyzer(text)) if i is not None]
            if not known:
                continue
            idx, tf = np.unique(np.array(known, dtype=np.intp), return_counts=True)
            vals = (np.log(tf) + 1.0) * part.idf[idx]  # sublinear tf times idf, as fitted
            vals /= np.sqrt(vals @ vals)  # each vectorizer's rows are L2-normalised
            indices.append(idx + part.offset)
            values.append(vals)
        scores = self._intercept.copy()
        if indices:
            scores += np.concatenate(values) @ self._weights[np.concatenate(indices)]
        proba = 1.0 / (1.0 + np.exp(self._cal_a * scores + self._cal_b))
        total = proba.sum()
        return proba / total if total > 0 else np.full_like(proba, 1.0 / len(proba))


def train(examples: Sequence[Example]) -> IntentModel:
    """Learn a model from labelled examples (one language)."""
    texts = [model_text(ex.text, ex.language) for ex in examples]
    return IntentModel(fit_pipeline(texts, [ex.intent for ex in examples]))


def content_hash(files: Sequence[Path], language: str) -> str:
    """What a cached model depends on: the example files' bytes, the features, the library."""
    digest = hashlib.sha256(f"{MODEL_VERSION}|{sklearn.__version__}|{language}".encode())
    for path in files:
        digest.update(b"\0" + path.read_bytes())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/wispbot`` (``~/.cache/wispbot``); a user without a home gets a
    private temporary folder instead (see ``_private_dir``)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no passwd entry (some containers)
            base = tempfile.gettempdir()
    return Path(base) / "wispbot"


def _private_dir(wanted: Path) -> Path | None:
    """A cache folder only this user writes (a model file is a pickle: never load a stranger's)."""
    for folder in (wanted, Path(tempfile.gettempdir()) / f"wispbot-{os.getuid()}"):
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if folder.stat().st_uid == os.getuid():
                return folder
        except OSError:
            continue
    return None


def load_or_train(
    examples: Sequence[Example], files: Sequence[Path], language: str, cache_dir: Path | None
) -> tuple[IntentModel, bool]:
    """The cached model for these example files, or a freshly trained one (then cached).

    Returns the model and whether it came from the cache."""
    folder = _private_dir(cache_dir or default_cache_dir())
    path = (
        folder / f"intents-{language}-{content_hash(files, language)[:24]}.joblib"
        if folder
        else None
    )
    if path is not None and path.exists():
        try:
            model = joblib.load(path)
            if isinstance(model, IntentModel):
                return model, True
        except Exception as err:  # a truncated or foreign file: train again
            log.warning(
                "understand.cache_unreadable", extra={"path": str(path), "error": repr(err)}
            )
    model = train(examples)
    if path is not None:
        try:
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            joblib.dump(model, tmp)
            tmp.replace(path)
        except OSError as err:
            log.warning(
                "understand.cache_not_written", extra={"path": str(path), "error": repr(err)}
            )
    return model, False
