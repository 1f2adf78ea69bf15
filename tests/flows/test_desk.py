"""What an agent's message looks like to the customer (signed with the agent's first name,
captions too) and how a customer's attachment is told to the agents (their language)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from flows.base import Conversation, FlowContext
from flows.desk import agent_reply, media_note
from flows.settings import DialogSettings, TicketMapping
from flows.texts import Texts
from flows.types import AgentMessage, ConvKey, Media

KEY = ConvKey("whatsapp", "573001112233")
MAPPING = TicketMapping(subjects={"other": ("Otro", "2")}, department="Soporte", origin="chat")


def conversation(lang: str = "es", *, shown: bool = True) -> Conversation:
    settings = DialogSettings(tickets=MAPPING, agent_name_shown=shown)
    ctx: FlowContext[Any] = FlowContext(
        wisphub=None,  # type: ignore[arg-type]  # not used by the desk's wording
        store=None,
        settings=settings,
        handoff=None,  # type: ignore[arg-type]
        clock=lambda: 0.0,
    )
    session = SimpleNamespace(state="agent.waiting", data={}, lang=lang, verified_until=None)
    return Conversation(KEY, session, None, ctx)


def message(text: str, first_name: str = "Ana", media: Media | None = None) -> AgentMessage:
    return AgentMessage(9, 1, text, "Ana Ruiz", media=media, first_name=first_name)


@pytest.mark.parametrize(
    ("lang", "signed"),
    [("es", "Ana (asesor/a): Hola, te ayudo"), ("en", "Ana (agent): Hola, te ayudo")],
)
def test_an_agents_text_is_signed_with_the_first_name(lang: str, signed: str) -> None:
    assert agent_reply(conversation(lang), message(" Hola, te ayudo ")).text == signed


def test_the_signature_can_be_turned_off_and_an_unnamed_agent_is_not_signed() -> None:
    assert agent_reply(conversation(shown=False), message("Hola")).text == "Hola"
    assert agent_reply(conversation(), message("Hola", first_name=" ")).text == "Hola"


def test_a_caption_is_signed_on_the_file_and_a_bare_file_carries_the_name() -> None:
    photo = Media("photo", "77", caption="Así se ve el router")
    reply = agent_reply(conversation(), message("Así se ve el router", media=photo))
    assert reply.text == "Ana (asesor/a): Así se ve el router"
    assert reply.media is not None
    assert reply.media.caption == reply.text
    bare = agent_reply(conversation(), message("", media=Media("voice", "78")))
    assert bare.text == "Ana (asesor/a)"
    assert bare.media is not None
    assert (bare.media.type, bare.media.ref) == ("voice", "78")


@pytest.mark.parametrize(
    ("lang", "kind", "note"),
    [
        ("es", "photo", "El cliente envió una foto."),
        ("es", "voice", "El cliente envió una nota de voz."),
        ("en", "sticker", "The customer sent a sticker."),
        (
            "es",
            "hologram",
            "El cliente envió algo que no se puede mostrar aquí.",
        ),  # a kind no catalogue names
    ],
)
def test_a_customers_attachment_is_told_in_the_agents_language(
    lang: str, kind: str, note: str
) -> None:
    assert media_note(Texts(lang), Media(kind, "1")) == note
    assert "[" not in note


def test_an_unreadable_message_without_media_is_told_as_such() -> None:
    assert media_note(Texts("es"), None) == "El cliente envió algo que no se puede mostrar aquí."
