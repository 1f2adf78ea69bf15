"""``python -m benchmarks.understand``: what understanding a message costs.

Training time per language (from the example files, no cache), loading the cached model, and the
CPU time of one ``Understanding.understand()`` call over the evaluation messages, with the
normaliser's and the date parser's memo cleared before every call (each message as if seen for
the first time). Target (issue 13): at most 0.5 ms of CPU per message, training under 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from flows.understand import LANGUAGES, Understanding, entities
from flows.understand.classifier import load_or_train, train
from flows.understand.examples import load_examples, load_file, training_files
from flows.understand.normalize import normalize

ROOT = Path(__file__).resolve().parents[1]
EVAL = {language: ROOT / "tests" / "understand" / f"eval_{language}.yaml" for language in LANGUAGES}
TARGET_US = 500.0
TRAIN_TARGET_S = 2.0


@dataclass
class LanguageCost:
    """One language's figures."""

    language: str
    examples: int = 0
    train_s: list[float] = field(default_factory=list)
    train_cpu_s: list[float] = field(default_factory=list)
    cache_load_s: float = 0.0
    per_call_us: list[float] = field(default_factory=list)

    @property
    def mean_us(self) -> float:
        """Mean CPU microseconds per message."""
        return statistics.fmean(self.per_call_us) if self.per_call_us else float("nan")

    def percentile_us(self, q: float) -> float:
        """CPU microseconds per message at a percentile."""
        if not self.per_call_us:
            return float("nan")
        ordered = sorted(self.per_call_us)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure(rounds: int = 5, languages: tuple[str, ...] = LANGUAGES) -> list[LanguageCost]:
    """Train, load from the cache, and time every evaluation message ``rounds`` times."""
    costs = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        understanding = Understanding.load(languages, cache_dir=cache)
        for language in languages:
            cost = LanguageCost(language)
            files = training_files(language)
            examples = load_examples(files, language)
            cost.examples = len(examples)
            for _ in range(3):  # best of three: the machine is shared
                wall, cpu = time.perf_counter(), time.process_time()
                train(examples)
                cost.train_s.append(time.perf_counter() - wall)
                cost.train_cpu_s.append(time.process_time() - cpu)
            wall = time.perf_counter()
            _, cached = load_or_train(examples, files, language, cache)
            cost.cache_load_s = time.perf_counter() - wall if cached else float("nan")
            texts = [ex.text for ex in load_file(EVAL[language])]
            for _ in range(rounds):
                for text in texts:
                    normalize.cache_clear()
                    entities._resolve.cache_clear()
                    understanding.forget()
                    started = time.process_time_ns()
                    understanding.understand(text, language)
                    cost.per_call_us.append((time.process_time_ns() - started) / 1000)
            costs.append(cost)
    return costs


def render(costs: list[LanguageCost]) -> str:
    """The figures as text."""
    lines = ["understanding free text (CPU per Understanding.understand() call, first sight):"]
    for c in costs:
        lines.append(
            f"  {c.language}: {len(c.per_call_us)} calls, mean {c.mean_us:.0f} us, "
            f"p50 {c.percentile_us(50):.0f} us, p99 {c.percentile_us(99):.0f} us; "
            f"training best of 3 {min(c.train_s):.2f} s, worst {max(c.train_s):.2f} s "
            f"({min(c.train_cpu_s):.2f} s CPU, {c.examples} examples), "
            f"cached model load {c.cache_load_s * 1000:.0f} ms"
        )
    mean = statistics.fmean(us for c in costs for us in c.per_call_us)
    slowest = max(min(c.train_s) for c in costs)
    lines.append(
        f"  targets: <= {TARGET_US:.0f} us CPU per message: mean {mean:.0f} us -> "
        f"{'met' if mean <= TARGET_US else 'NOT met'}; training < {TRAIN_TARGET_S:.0f} s per "
        f"language: best of 3, slowest language {slowest:.2f} s -> {'met' if slowest < TRAIN_TARGET_S else 'NOT met'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.understand", description=__doc__)
    ap.add_argument("--rounds", type=int, default=5, help="passes over the evaluation files (5)")
    args = ap.parse_args(argv)
    print(render(measure(args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
