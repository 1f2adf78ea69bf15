""" "atrás" / "volver" / "back" (and their slash commands) are one command in both languages."""

from __future__ import annotations

import pytest

from flows.commands import command_of


@pytest.mark.parametrize(
    "text",
    [
        "atrás",
        "ATRAS",
        "volver",
        "Volver ",
        "regresar",
        "back",
        "go back",
        "/atras",
        "/atrás",
        "/back",
        "/volver@wispbot",
    ],
)
def test_back_words_and_commands(text: str) -> None:
    assert command_of(text) == "back"


@pytest.mark.parametrize("text", ["menu", "/menu", "inicio", "home"])
def test_menu_words_stay_menu(text: str) -> None:
    assert command_of(text) == "menu"


@pytest.mark.parametrize("text", ["volver a conectar el router", "atrás del router"])
def test_a_sentence_with_the_word_is_no_command(text: str) -> None:
    assert command_of(text) is None
