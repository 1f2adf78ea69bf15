"""The holder-name rule (design.md section 5), document normalisation and masking."""

from __future__ import annotations

import pytest

from flows.names import fold, mask, name_matches, normalise_document

ANA = "Ana María Ruiz Gómez"
LUZ = "Luz Marina Peña"
VALENTINA = "Valentina Ortiz Cárdenas"
JORGE = "Jorge Eliécer Gaitán Ramírez"


@pytest.mark.parametrize(
    ("typed", "holder"),
    [
        ("luz peña", LUZ),  # the design's example: a middle name may be left out
        ("luz pena", LUZ),  # ñ typed as n
        ("LUZ MARINA PEÑA", LUZ),
        ("ana ruiz", ANA),
        ("Ana María Ruiz Gómez", ANA),
        ("  ana   MARIA  ruiz gomez ", ANA),  # case, accents and spacing folded
        ("ana-maria ruiz", ANA),  # punctuation is a word break
        ("ana gomez ruiz", ANA),  # order after the first word is free
        ("valentina ortis", VALENTINA),  # one typo in a word of 5+ letters
        ("valentina ortiz cardena", VALENTINA),  # one letter missing, long word
        ("valentin ortiz", VALENTINA),  # one typo in the first word, long enough
        ("jorge gaitan", JORGE),
        ("jorge eliecer gaitan ramirez", JORGE),
    ],
)
def test_names_that_pass(typed: str, holder: str) -> None:
    """At least two words, the first one the holder's first, every word in the holder's name."""
    assert name_matches(typed, holder)


@pytest.mark.parametrize(
    ("typed", "holder"),
    [
        ("valentina", VALENTINA),  # the design's example: one word is not enough
        ("Pedro Ortiz", VALENTINA),  # the design's example: wrong first name
        ("ortiz valentina", VALENTINA),  # the first word must be the holder's first name
        ("maria ruiz", ANA),  # a real name word, but not the first
        ("ana ruiz lopez", ANA),  # every typed word must be in the name
        ("ana ruis", ANA),  # no typo forgiven in a word of fewer than 5 letters
        ("luz pela", LUZ),
        ("ana ruizz", ANA),  # nor when the holder's word is short
        ("valentina ortzi", VALENTINA),  # two edits (a swap) in one word
        ("valentina oxxiz", VALENTINA),  # two substitutions in one word
        ("", ANA),
        ("ana", ANA),
        ("ana ruiz", ""),  # a record without a name never verifies
        ("123 456", ANA),
    ],
)
def test_names_that_fail(typed: str, holder: str) -> None:
    """Anything short of the rule fails."""
    assert not name_matches(typed, holder)


def test_fold() -> None:
    """Case, accents, punctuation and spacing folded; letters and digits kept."""
    assert fold("  Peña-GÓMEZ,  Ana ") == "pena gomez ana"
    assert fold("Calle 34 # 17-21") == "calle 34 17 21"
    assert fold("🙂") == ""


@pytest.mark.parametrize(
    ("typed", "document"),
    [
        ("1020304050", "1020304050"),
        ("1.020.304.050", "1020304050"),
        ("102 030 4050", "1020304050"),
        ("52-123-456", "52123456"),
        ("  79856321\n", "79856321"),
        ("12345", "12345"),  # the shortest accepted
        ("123456789012", "123456789012"),  # the longest accepted
        ("１０２０３０４０５０", "1020304050"),  # full-width digits read as ASCII
        ("١٠٢٠٣٠٤٠٥٠", "1020304050"),  # Arabic-Indic digits read as ASCII
    ],
)
def test_documents_accepted(typed: str, document: str) -> None:
    """Dots, spaces and dashes are dropped; the result is ASCII digits only."""
    assert normalise_document(typed) == document


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "1234",
        "1234567890123",
        "abc",
        "mi cedula 1020304050",
        "+57 300 111 2233",
        "10,5",
        "1e10",
    ],
)
def test_not_documents(typed: str) -> None:
    """Too short, too long, or not only digits: not a document."""
    assert normalise_document(typed) is None


@pytest.mark.parametrize(
    ("document", "masked"),
    [("1020304050", "*******050"), ("52123456", "*****456"), ("1234", "*234"), ("123", "123")],
)
def test_mask_shows_only_the_last_three_digits(document: str, masked: str) -> None:
    """Logs keep a document's length and last three digits, nothing else."""
    assert mask(document) == masked
