"""Identity checks on names and documents: folding, word-by-word holder-name matching.

The Spanish sound-alike fold (``sounds``) is a handful of hand-written rewrites: the phonetic
libraries on PyPI implement English algorithms (Soundex, Metaphone) or whole Spanish encoders
that also merge letters a holder-name check must keep apart (r/rr, m/n); the rules wanted here
are the spelling slips Spanish speakers make, and only those. Edit distance is rapidfuzz's.
"""

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


# Letters Spanish speakers write for one another (on folded text: lower case, no accents):
# "ll" and "y", "c" before e/i and "s" and "z", "v" and "b", and a silent "h" (not in "ch").
_SOUND_ALIKES = (
    (re.compile(r"ll"), "y"),
    (re.compile(r"c(?=[ei])"), "s"),
    (re.compile(r"z"), "s"),
    (re.compile(r"v"), "b"),
    (re.compile(r"(?<!c)h"), ""),
)
MIN_TYPO_LETTERS = 4  # one typo is forgiven in words this long (shorter ones are too easy)


@functools.lru_cache(maxsize=4096)
def sounds(word: str) -> str:
    """A folded word spelt as it sounds: "gomez" and "gomes", "herrera" and "errera" agree."""
    for pattern, plain in _SOUND_ALIKES:
        word = pattern.sub(plain, word)
    return word


def _word_matches(typed: str, real: str) -> bool:
    if typed == real:
        return True
    heard, said = sounds(typed), sounds(real)
    if heard == said:
        return bool(heard)
    # One typo (after the sound-alikes) is forgiven only in longer words: short words are
    # too easy to guess.
    return (
        len(typed) >= MIN_TYPO_LETTERS
        and len(real) >= MIN_TYPO_LETTERS
        and Levenshtein.distance(heard, said, score_cutoff=1) <= 1
    )


def _all_placed(typed: list[str], real: list[str]) -> bool:
    """Every typed word matched to its own word of the name (Kuhn's augmenting paths)."""
    owner: dict[int, int] = {}  # index in ``real`` -> index in ``typed``

    def place(t: int, seen: set[int]) -> bool:
        for r, word in enumerate(real):
            if r in seen or not _word_matches(typed[t], word):
                continue
            seen.add(r)
            if r not in owner or place(owner[r], seen):
                owner[r] = t
                return True
        return False

    return all(place(t, set()) for t in range(len(typed)))


def name_matches(typed: str, holder: str) -> bool:
    """The verification rule of design.md section 5, forgiving Spanish sound-alike spellings.

    Passes when each typed word matches a different word of the holder's name, and the matched
    words include the name's first word and one of its last two (a Spanish name ends with two
    surnames; a two-word name needs both words). Knowing a first name is not enough.
    """
    words, real = fold(typed).split(), fold(holder).split()
    if not real or len(words) > len(real) or not _all_placed(words, real):
        return False
    # Mendelsohn-Dulmage: when every typed word can be placed, and two different typed words
    # can take the first word and a surname, one placement does both at once.
    firsts = {t for t, w in enumerate(words) if _word_matches(w, real[0])}
    surnames = range(max(len(real) - 2, 1), len(real))
    return any(
        firsts - {t} for r in surnames for t, w in enumerate(words) if _word_matches(w, real[r])
    )


def normalise_document(text: str) -> str | None:
    """ASCII digits of a typed document number (dots, spaces, dashes allowed; full-width or
    other scripts' digits read as their values); None when it is not one."""
    compact = re.sub(r"[\s.\-]", "", unicodedata.normalize("NFKC", text.strip()))
    ascii_digits = "".join(
        str(unicodedata.decimal(c)) if unicodedata.decimal(c, None) is not None else c
        for c in compact
    )
    return ascii_digits if re.fullmatch(r"[0-9]{5,12}", ascii_digits) else None
