"""One reply, one bubble: a turn's replies merged before any channel renders them (issue 14)."""

from __future__ import annotations

from bot.channels.base import bubbles
from bot.channels.telegram.render import MAX_TEXT, text_parts
from bot.channels.whatsapp.render import BODY_LIMIT, Renderer
from flows.types import ConvKey, Media, Option, Outbound

KEY = ConvKey("telegram", "42")
WA = ConvKey("whatsapp", "573001112233")
MENU = (Option("client", "Soy cliente"), Option("plans", "Planes y precios"))


def test_a_turns_texts_merge_with_the_options_of_its_last_reply() -> None:
    replies = [Outbound(KEY, "¡Hola!"), Outbound(KEY, "Elige una opción:", MENU)]
    assert bubbles(replies) == [Outbound(KEY, "¡Hola!\n\nElige una opción:", MENU)]


def test_a_reply_with_options_ends_its_bubble() -> None:
    """A reply left in the outbox by an earlier turn keeps its own options."""
    left = Outbound(KEY, "Elige una opción:", MENU)
    turn = [Outbound(KEY, "Escribe tu documento"), Outbound(KEY, "Solo números")]
    assert bubbles([left, *turn]) == [left, Outbound(KEY, "Escribe tu documento\n\nSolo números")]


def test_media_is_never_merged_and_keeps_its_place() -> None:
    photo = Outbound(KEY, "", media=Media("photo", "7"), source_key=ConvKey("telegram", "-100"))
    replies = [Outbound(KEY, "a"), photo, Outbound(KEY, "b"), Outbound(KEY, "c", MENU)]
    assert bubbles(replies) == [Outbound(KEY, "a"), photo, Outbound(KEY, "b\n\nc", MENU)]


def test_other_conversations_and_blank_texts() -> None:
    other = ConvKey("telegram", "43")
    replies = [Outbound(KEY, "a"), Outbound(other, "b"), Outbound(KEY, " "), Outbound(KEY, "c")]
    assert bubbles(replies) == [Outbound(KEY, "a"), Outbound(other, "b"), Outbound(KEY, "c")]
    assert bubbles([]) == []


def test_a_long_turn_on_telegram_is_split_with_the_keyboard_left_for_the_last_part() -> None:
    [merged] = bubbles([Outbound(KEY, "x " * 2500), Outbound(KEY, "Elige:", MENU)])
    parts = text_parts(merged.text)
    assert len(parts) == 2
    assert all(len(p) <= MAX_TEXT for p in parts)
    assert parts[-1].endswith("Elige:")  # the channel hangs the keyboard on the last part


def test_on_whatsapp_a_turn_is_one_interactive_message_up_to_the_body_limit() -> None:
    renderer = Renderer()
    [short] = bubbles([Outbound(WA, "¡Hola!"), Outbound(WA, "Elige una opción:", MENU)])
    [message] = renderer.render(short).messages
    assert message["interactive"]["body"]["text"] == "¡Hola!\n\nElige una opción:"
    [long] = bubbles([Outbound(WA, "palabra " * 200), Outbound(WA, "Elige una opción:", MENU)])
    *head, last = renderer.render(long).messages
    assert [m["type"] for m in head] == ["text"]
    assert last["type"] == "interactive"
    assert len(last["interactive"]["body"]["text"]) <= BODY_LIMIT
    assert last["interactive"]["body"]["text"].endswith("Elige una opción:")
