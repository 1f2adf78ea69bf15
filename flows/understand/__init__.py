"""Understanding free text: which need a message expresses (its intent) and what it names.

``Understanding.load()`` trains (or loads from its cache) one classifier per language from the
example files; ``understand(text, language)`` returns a :class:`Result`. It imports nothing from
``bot``: the dialog hands it the ISP's time zone and, in tests, "now".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cachetools import LRUCache

from flows.understand.classifier import IntentModel, load_or_train, model_text
from flows.understand.entities import Entities, extract, warm_up
from flows.understand.examples import INTENTS, LANGUAGES, load_examples, training_files
from flows.understand.labels import match_option
from flows.understand.normalize import fold, has_letters, normalize

__all__ = ["INTENTS", "LANGUAGES", "Result", "Understanding", "match_option"]

# Below this confidence the best guess is not trusted: the message is out of scope.
MIN_CONFIDENCE = 0.20
# Only the start of a message is read: the need is said there, and the cost stays bounded.
MAX_CHARS = 1000
# A second intent this close to the first is offered back ("¿Te refieres a A o a B?").
ALTERNATIVE_RATIO = 0.5
ALTERNATIVE_MIN = 0.15
# Customers write the same short messages again and again ("hola", "gracias", "cuanto debo?"):
# the classifier's verdict on a text is kept (the entities are not: a date depends on today).
VERDICTS_KEPT = 4096


@dataclass(frozen=True)
class Result:
    """What a message means."""

    text: str
    intent: str
    confidence: float
    entities: Entities = field(default_factory=dict)
    alternatives: tuple[tuple[str, float], ...] = ()

    @property
    def understood(self) -> bool:
        """Whether the message asked for something the bot serves."""
        return self.intent != "out_of_scope"

    def as_json(self) -> dict[str, Any]:
        """The CLI's line: text, intent, confidence (0..1), entities."""
        return {
            "text": self.text,
            "intent": self.intent,
            "confidence": round(self.confidence, 4),
            "entities": self.entities,
        }


@dataclass
class LoadReport:
    """How each language's model came to be: seconds taken, and whether from the cache."""

    seconds: dict[str, float] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)


class Understanding:
    """One classifier per language plus the entity extractors."""

    def __init__(self, models: dict[str, IntentModel], tz: tzinfo) -> None:
        self.models = models
        self.tz = tz
        self.report = LoadReport()
        # (language, text) -> intent, confidence, alternatives
        self._verdicts: LRUCache[tuple[str, str], Verdict] = LRUCache(VERDICTS_KEPT)

    @classmethod
    def load(
        cls,
        languages: Sequence[str] = LANGUAGES,
        tz: tzinfo | str = "America/Bogota",
        cache_dir: Path | None = None,
        extra_dirs: Iterable[Path] = (),
    ) -> Understanding:
        """Train or load the models of the given languages (``extra_dirs``: an ISP's own
        ``<language>.yaml`` example files, learned with the shipped ones)."""
        zone = ZoneInfo(tz) if isinstance(tz, str) else tz
        extra = list(extra_dirs)
        report = LoadReport()
        models: dict[str, IntentModel] = {}
        for language in languages:
            started = time.perf_counter()
            files = training_files(language, extra)
            examples = load_examples(files, language)
            models[language], report.cached[language] = load_or_train(
                examples, files, language, cache_dir
            )
            warm_up(language, zone)
            report.seconds[language] = time.perf_counter() - started
        understanding = cls(models, zone)
        understanding.report = report
        return understanding

    def forget(self) -> None:
        """Drop the verdicts kept for texts seen before (a benchmark's first sight)."""
        self._verdicts.clear()

    def understand(self, text: str, language: str, now: datetime | None = None) -> Result:
        """The intent, its confidence, the entities, and a close second intent if any."""
        model = self.models.get(language) or next(iter(self.models.values()))
        read = text[:MAX_CHARS]  # a pasted novel costs no more than a long message
        folded = fold(read)
        entities = extract(folded, language, now or datetime.now(self.tz), self.tz)
        words = normalize(read, language)
        if not has_letters(words):
            if "document" in entities and words.replace(" ", "").isdigit():
                return Result(text, "document", 1.0, entities)
            return Result(text, "out_of_scope", 1.0, entities)
        verdict = self._verdicts.get((language, read))
        if verdict is None:
            verdict = self._verdicts[(language, read)] = _verdict(model, read, language)
        intent, confidence, alternatives = verdict
        return Result(text, intent, confidence, entities, alternatives)


Verdict = tuple[str, float, tuple[tuple[str, float], ...]]


def _verdict(model: IntentModel, read: str, language: str) -> Verdict:
    """The classifier's intent for a text, its confidence and a close second if any."""
    proba = model.proba(model_text(read, language))
    order = proba.argsort()[::-1]
    best, second = int(order[0]), int(order[1])
    intent, confidence = model.classes[best], float(proba[best])
    alternatives: tuple[tuple[str, float], ...] = ()
    runner_up = float(proba[second])
    if runner_up >= ALTERNATIVE_MIN and runner_up >= ALTERNATIVE_RATIO * confidence:
        alternatives = ((model.classes[second], runner_up),)
    if confidence < MIN_CONFIDENCE:
        alternatives = ((intent, confidence), *alternatives)
        intent = "out_of_scope"
    return intent, confidence, alternatives
