"""Scoring the understanding on a labelled file: accuracy, per-intent precision and recall,
the worst confusions. The file has the shape of an example file and is never trained on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from flows.understand import Understanding
from flows.understand.examples import load_file


@dataclass
class Score:
    """Precision and recall of one intent."""

    support: int = 0  # messages labelled with it
    predicted: int = 0  # messages the model gave it
    correct: int = 0

    @property
    def precision(self) -> float:
        """Of the messages given this intent, the share that had it."""
        return self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        """Of the messages that had this intent, the share given it."""
        return self.correct / self.support if self.support else 0.0


@dataclass
class Evaluation:
    """The outcome of one labelled file."""

    language: str
    total: int = 0
    correct: int = 0
    intents: dict[str, Score] = field(default_factory=dict)
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    misses: list[tuple[str, str, str]] = field(default_factory=list)  # text, expected, got

    @property
    def accuracy(self) -> float:
        """The share of messages given their labelled intent."""
        return self.correct / self.total if self.total else 0.0

    def render(self, worst: int = 10) -> str:
        """The report as text."""
        lines = [
            f"language {self.language}: {self.total} messages, accuracy {self.accuracy:.1%} "
            f"({self.correct}/{self.total})",
            f"  {'intent':<20} {'precision':>9} {'recall':>7} {'n':>4}",
        ]
        for intent, score in sorted(self.intents.items()):
            lines.append(
                f"  {intent:<20} {score.precision:>9.0%} {score.recall:>7.0%} {score.support:>4}"
            )
        if self.confusions:
            lines.append("  worst confusions (labelled -> understood: count):")
            for (expected, got), count in self.confusions.most_common(worst):
                lines.append(f"    {expected} -> {got}: {count}")
        return "\n".join(lines)


def evaluate(understanding: Understanding, path: Path, now: datetime | None = None) -> Evaluation:
    """Understand every message of a labelled file and score the intents."""
    examples = load_file(path)
    result = Evaluation(examples[0].language if examples else "es")
    for example in examples:
        got = understanding.understand(example.text, example.language, now=now).intent
        result.total += 1
        result.intents.setdefault(example.intent, Score()).support += 1
        result.intents.setdefault(got, Score()).predicted += 1
        if got == example.intent:
            result.correct += 1
            result.intents[got].correct += 1
        else:
            result.confusions[(example.intent, got)] += 1
            result.misses.append((example.text, example.intent, got))
    return result
