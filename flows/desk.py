"""What crosses between the customer and the agents' desk, worded for its reader: an agent's
message signed with the agent's first name for the customer, and a note in the agents'
language for a customer's attachment."""

from __future__ import annotations

import dataclasses

from flows.base import Conversation
from flows.texts import MissingText, Texts
from flows.types import AgentMessage, Media, Outbound


def agent_reply(conv: Conversation, msg: AgentMessage) -> Outbound:
    """The agent's text (or attachment and its caption) for the customer, signed "Ana (asesor/a):"
    unless ``AGENT_NAME_SHOWN`` is off or the agent has no first name."""
    text = msg.text.strip() if msg.media is None else msg.text
    name = msg.first_name.strip()
    if not conv.ctx.settings.agent_name_shown or not name:
        return Outbound(conv.key, text, media=msg.media)
    signature = conv.t("agent_signature", name=name)
    signed = conv.t("agent_says", signature=signature, text=text.strip()) if text.strip() else ""
    if msg.media is None:
        return Outbound(conv.key, signed)
    # The caption carries the signature too: WhatsApp shows it on the file itself.
    caption = signed or signature
    return Outbound(conv.key, caption, media=dataclasses.replace(msg.media, caption=caption))


def media_note(notes: Texts, media: Media | None) -> str:
    """ "El cliente envió una foto": a customer's attachment told in the agents' language."""
    kind = media.type if media is not None else "other"
    try:
        return notes(f"agent_media.{kind}")
    except MissingText:
        return notes("agent_media.other")
