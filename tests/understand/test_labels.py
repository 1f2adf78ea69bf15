"""Typed option labels choose their option, typos included, and never a coin toss."""

from __future__ import annotations

from flows.understand.labels import match_option

PUBLIC = ["Soy cliente", "Planes y precios", "Hablar con un asesor"]
CLIENT = ["Estado de cuenta", "Reportar falla", "Mis tickets", "Promesa de pago", "Salir"]


def test_exact_labels_in_any_case_or_accents() -> None:
    assert match_option("soy cliente", PUBLIC) == 0
    assert match_option("PLANES Y PRECIOS", PUBLIC) == 1
    assert match_option("hablar con un asesór!!", PUBLIC) == 2


def test_typos_pick_the_meant_option() -> None:
    assert match_option("soy clente", PUBLIC) == 0
    assert match_option("estado d cuenta", CLIENT) == 0
    assert match_option("reportar fall", CLIENT) == 1
    assert match_option("mis tikets", CLIENT) == 2
    assert match_option("promesa de pagoo", CLIENT) == 3


def test_numbers_choose_by_position() -> None:
    assert match_option("2", PUBLIC) == 1
    assert match_option("#3", PUBLIC) == 2
    assert match_option("4", PUBLIC) is None


def test_other_text_matches_nothing() -> None:
    assert match_option("no tengo internet", CLIENT) is None
    assert match_option("", CLIENT) is None
    assert match_option("🙂", CLIENT) is None
    # Two labels alike: a text between them is no choice at all.
    assert match_option("plan", ["Plan A", "Plan B"]) is None
