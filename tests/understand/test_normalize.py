"""The normaliser folds what customers type into what the model learned."""

from __future__ import annotations

import pytest

from flows.understand.normalize import fold, normalize


@pytest.mark.parametrize(
    ("typed", "language", "words"),
    [
        ("Holaaaa!!!", "es", "hola"),
        ("SIIIII", "es", "si"),
        ("graciassss", "es", "gracias"),
        ("Gooood morning", "en", "good morning"),
        ("pleaaase", "en", "please"),
        ("q pasa xq no me anda", "es", "que pasa porque no me anda"),
        ("pq tmb se cae", "es", "porque tambien se cae"),
        ("xfa ayuda", "es", "por favor ayuda"),
        ("thx u r great", "en", "thanks you are great"),
        ("jajajajaja ok", "es", "jaja ok"),
        ("hahahaha", "en", "jaja"),
    ],
)
def test_elongations_laughs_and_sms_spellings(typed: str, language: str, words: str) -> None:
    assert normalize(typed, language) == words


def test_case_and_accents_fold() -> None:
    assert normalize("ESTADO DE CUENTA", "es") == "estado de cuenta"
    assert normalize("Reconéctenme, ya pagué", "es") == "reconectenme ya pague"
    assert normalize("Señal débil", "es") == "senal debil"


def test_zero_width_and_control_characters_vanish() -> None:
    assert normalize("esta\u200bdo de\u200d cuen\ufeffta", "es") == "estado de cuenta"
    assert normalize("hola\x00\x07 mundo\u2028", "es") == "hola mundo"
    assert normalize("so\u00adporte", "es") == "soporte"


def test_emoji_are_dropped_unless_they_say_something() -> None:
    assert normalize("no tengo internet 😡😡🔥", "es") == "no tengo internet"
    assert normalize("👍", "es") == "si"
    assert normalize("👍", "en") == "yes"
    assert normalize("🙏", "es") == "gracias"
    assert normalize("😀🎉", "es") == ""


def test_fold_keeps_punctuation_and_reads_any_script_digits() -> None:
    assert fold("CC 1.020.304.050") == "cc 1.020.304.050"
    assert fold("١٠٢٠٣٠٤٠٥٠") == "1020304050"  # Arabic-Indic digits
    assert fold("１０２０３０４０５０") == "1020304050"  # full width
    assert fold("15/12") == "15/12"
