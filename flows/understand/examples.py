"""The intents and their example files: what the classifier learns from and is scored on.

An example file is YAML: ``language: es`` and ``intents:`` mapping each intent id to a list of
messages. The shipped files are ``flows/understand/data/<language>.yaml``; an ISP may add its own
files of the same shape (:func:`training_files`), which are learned together with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

# The public contract (design.md section 8): `python -m bot understand` prints these ids.
INTENTS: tuple[str, ...] = (
    "greet",
    "client",
    "document",
    "fault_no_internet",
    "fault_slow",
    "fault_intermittent",
    "fault_other",
    "account",
    "payment_promise",
    "payment_report",
    "payment_methods",
    "tickets",
    "plans",
    "agent",
    "cancel_service",
    "change_plan",
    "thanks",
    "goodbye",
    "affirm",
    "deny",
    "out_of_scope",
)
# Short answers need fewer examples to be learned; every other intent is a main one.
SMALL_INTENTS = frozenset({"thanks", "goodbye", "affirm", "deny"})
LANGUAGES = ("es", "en")
DATA_DIR = Path(__file__).parent / "data"


class ExamplesError(ValueError):
    """An example file that cannot be used: unreadable, wrong shape, unknown intent."""


@dataclass(frozen=True)
class Example:
    """One labelled message."""

    text: str
    intent: str
    language: str


def load_file(path: Path, language: str | None = None) -> list[Example]:
    """The examples of one file; ``language`` overrides (or supplies) the file's own."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        msg = f"{path}: cannot read examples: {err}"
        raise ExamplesError(msg) from err
    if not isinstance(doc, dict) or not isinstance(doc.get("intents"), dict):
        msg = f"{path}: expected a mapping with `language` and `intents`"
        raise ExamplesError(msg)
    lang = language or doc.get("language")
    if lang not in LANGUAGES:
        msg = f"{path}: language must be one of {', '.join(LANGUAGES)}, not {lang!r}"
        raise ExamplesError(msg)
    found: list[Example] = []
    for intent, texts in doc["intents"].items():
        if intent not in INTENTS:
            msg = f"{path}: unknown intent {intent!r}"
            raise ExamplesError(msg)
        # YAML reads a bare `no` as a boolean, `1020304050` as a number and `id: 12345` as a
        # mapping: every message must come out a string (quote those).
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            bad = next((t for t in texts if not isinstance(t, str)), texts)
            msg = f"{path}: intent {intent!r}: {bad!r} is not a message (quote it)"
            raise ExamplesError(msg)
        found += [Example(t, intent, lang) for t in texts]
    return found


def training_files(language: str, extra_dirs: Iterable[Path] = ()) -> list[Path]:
    """The shipped example file of a language, then ``<language>.yaml`` of each extra folder."""
    files = [DATA_DIR / f"{language}.yaml"]
    files += [
        Path(d) / f"{language}.yaml" for d in extra_dirs if (Path(d) / f"{language}.yaml").exists()
    ]
    return files


def load_examples(files: Sequence[Path], language: str) -> list[Example]:
    """Every example of the given files, for one language."""
    return [ex for path in files for ex in load_file(path, language)]
