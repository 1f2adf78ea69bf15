"""Identity checks on names and documents: folding, word-by-word holder-name matching."""

from __future__ import annotations

import functools
import re
import unicodedata

from rapidfuzz.distance import Levenshtein

_NOT_LETTER = re.compile(r"[^a-z0-9ñ ]+")


@functools.lru_cache(maxsize=4096)  # menu labels and commands are folded on every message
def fold(text: str) -> str:
    """Lower-case, accents dropped (ñ kept as n), punctuation to spaces, spacing collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_NOT_LETTER.sub(" ", plain).split())


def _word_matches(typed: str, real: str) -> bool:
    if typed == real:
        return True
    # One typo is forgiven only in longer words: short words are too easy to guess.
    return (
        len(typed) >= 5
        and len(real) >= 5
        and Levenshtein.distance(typed, real, score_cutoff=1) <= 1
    )


def name_matches(typed: str, holder: str) -> bool:
    """The verification rule of design.md section 5.

    Passes when the answer has at least two words, its first word matches the holder's first
    word, and every typed word matches some word of the holder's name.
    """
    words, real = fold(typed).split(), fold(holder).split()
    if len(words) < 2 or not real or not _word_matches(words[0], real[0]):
        return False
    return all(any(_word_matches(w, r) for r in real) for w in words)


def normalise_document(text: str) -> str | None:
    """ASCII digits of a typed document number (dots, spaces, dashes allowed; full-width or
    other scripts' digits read as their values); None when it is not one."""
    compact = re.sub(r"[\s.\-]", "", unicodedata.normalize("NFKC", text.strip()))
    ascii_digits = "".join(
        str(unicodedata.decimal(c)) if unicodedata.decimal(c, None) is not None else c
        for c in compact
    )
    return ascii_digits if re.fullmatch(r"[0-9]{5,12}", ascii_digits) else None


def mask(document: str) -> str:
    """A document for logs: only its last 3 digits show."""
    return "*" * max(len(document) - 3, 0) + document[-3:]
