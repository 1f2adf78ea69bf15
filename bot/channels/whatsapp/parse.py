"""WhatsApp webhook payloads into Inbound events, and the reasons a message is not handled.

Who the sender is: ``from`` (a phone number) when Meta gives it; a customer who hides the
number behind a username comes as ``from_user_id`` only, a business-scoped user id (BSUID,
``"US.13491208655302741918"``), with ``contacts[].user_id`` and ``contacts[].profile.username``.
A message with both is keyed by the phone, as before; one with the BSUID only is keyed by it
and carries no phone (nothing to look up in WispHub, replies go to ``recipient``).

What is not a customer's turn: reactions and edits become ``Kind.NOTE`` (never answered; a line
in the agents' topic during a handoff), a number change (``system`` ``user_changed_number``)
becomes ``Kind.MOVED`` (the conversation follows the new number). Revokes, identity changes,
group messages, messages for another phone number id of the same Meta app and messages with no
usable sender are dropped, each with one log line saying why (never who).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from flows.types import ConvKey, Inbound, Kind, Media

log = logging.getLogger("bot.channels.whatsapp")

# WhatsApp message types that carry media, and our channel-neutral names for them.
MEDIA_TYPES = {
    "image": "photo",
    "audio": "audio",
    "video": "video",
    "document": "document",
    "sticker": "sticker",
}
# "user_changed_number" today; "customer_changed_number" in older webhook versions.
NUMBER_CHANGED = frozenset({"user_changed_number", "customer_changed_number"})
NOTE_REACTION = "reaction"
NOTE_EDIT = "edit"


def as_dict(value: object) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def dicts(value: object) -> Iterator[dict[str, Any]]:
    """The JSON objects of a list (anything else yields nothing)."""
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def as_str(value: object) -> str:
    """``value`` when it is a string, else ``""``."""
    return value if isinstance(value, str) else ""


def is_phone_id(chat_id: str) -> bool:
    """Whether a WhatsApp chat id is a phone number (``wa_id``) rather than a BSUID."""
    return chat_id.isdigit()


IGNORED = "whatsapp message ignored: %s"


def refuse(reason: str) -> None:
    """One log line for a message that is not handled: why, never who."""
    log.warning(IGNORED, reason, extra={"reason": reason})


def _phone(raw: str) -> str | None:
    """A shared phone number, digits only with "+" when it was international."""
    digits = re.sub(r"\D", "", raw)
    if not digits:
        return None
    return "+" + digits if raw.strip().startswith("+") else digits


def _card_numbers(msg: dict[str, Any]) -> list[str]:
    """Every number on a message's shared contact cards."""
    numbers = []
    for contact in dicts(msg.get("contacts")):
        for phone in dicts(contact.get("phones")):
            shared = as_str(phone.get("wa_id"))
            number = "+" + shared if shared.isdigit() else _phone(as_str(phone.get("phone")))
            if number:
                numbers.append(number)
    return numbers


def _sender(msg: dict[str, Any]) -> str:
    """The conversation's chat id: the phone (``from``) when given, else the BSUID."""
    phone = as_str(msg.get("from"))
    if phone.isdigit():
        return phone
    return as_str(msg.get("from_user_id")).strip()


def _edited_text(msg: dict[str, Any]) -> str:
    """The new text of an edit: a text body or a media caption."""
    edited = as_dict(as_dict(msg.get("edit")).get("message"))
    kind = as_str(edited.get("type"))
    content = as_dict(edited.get(kind))
    return as_str(content.get("body")) or as_str(content.get("caption"))


def _not_a_turn(msg: dict[str, Any], base: dict[str, Any]) -> Inbound | None:
    """Reactions, edits, revokes and system messages: a note, a move, or nothing."""
    kind = as_str(msg.get("type"))
    if kind == "reaction":
        emoji = as_str(as_dict(msg.get("reaction")).get("emoji"))
        if not emoji:
            refuse("reaction removed")
            return None
        return Inbound(kind=Kind.NOTE, payload=NOTE_REACTION, text=emoji, **base)
    if kind == "edit":
        return Inbound(kind=Kind.NOTE, payload=NOTE_EDIT, text=_edited_text(msg), **base)
    if kind == "revoke":
        refuse("revoked message")
        return None
    system = as_dict(msg.get("system"))
    if as_str(system.get("type")) in NUMBER_CHANGED:
        chat = base["key"].chat_id
        # A phone-keyed conversation follows the new number; a BSUID-keyed one its new BSUID.
        phone = as_str(system.get("wa_id")) or as_str(system.get("new_wa_id"))
        new = phone if is_phone_id(chat) else as_str(system.get("user_id"))
        if new and new != chat:
            return Inbound(kind=Kind.MOVED, payload=new, **{**base, "phone": None})
    kind = as_str(system.get("type")) or "?"
    log.warning(IGNORED, "system message", extra={"reason": "system message", "system_type": kind})
    return None


def _message(msg: dict[str, Any], names: dict[str, str]) -> Inbound | None:
    chat, wamid = _sender(msg), as_str(msg.get("id"))
    if not chat or not wamid:
        refuse("no sender or message id")
        return None
    if msg.get("group_id"):
        refuse("group message")
        return None
    phone = "+" + chat if is_phone_id(chat) else None
    base: dict[str, Any] = {
        "key": ConvKey("whatsapp", chat),
        "event_id": wamid,
        "phone": phone,
        "user_id": chat,
        "display_name": names.get(chat) or names.get(as_str(msg.get("from_user_id"))) or None,
    }
    kind = as_str(msg.get("type"))
    if kind in ("reaction", "edit", "revoke", "system"):
        return _not_a_turn(msg, base)
    if kind == "text":
        return Inbound(kind=Kind.TEXT, text=as_str(as_dict(msg.get("text")).get("body")), **base)
    if kind == "interactive":
        interactive = as_dict(msg.get("interactive"))
        reply = as_dict(interactive.get(as_str(interactive.get("type"))))
        reply_id = as_str(reply.get("id"))
        if interactive.get("type") in ("button_reply", "list_reply") and reply_id:
            return Inbound(
                kind=Kind.BUTTON, payload=reply_id, text=as_str(reply.get("title")), **base
            )
        return Inbound(kind=Kind.OTHER, **base)
    if kind == "button":  # a template's quick-reply button
        button = as_dict(msg.get("button"))
        payload = as_str(button.get("payload")) or as_str(button.get("text"))
        return Inbound(kind=Kind.BUTTON, payload=payload, text=as_str(button.get("text")), **base)
    if kind == "contacts":
        # Anyone can share anyone's card: only the sender's own number (``from``) may identify.
        # A card of another number is a contact without a phone (the document is asked).
        numbers = _card_numbers(msg)
        if not numbers:
            return Inbound(kind=Kind.OTHER, **base)
        own = phone if phone in numbers else None
        return Inbound(kind=Kind.CONTACT, **{**base, "phone": own})
    if kind in MEDIA_TYPES:
        body = as_dict(msg.get(kind))
        media_id = as_str(body.get("id"))
        if not media_id:
            return Inbound(kind=Kind.OTHER, **base)
        name = "voice" if kind == "audio" and body.get("voice") is True else MEDIA_TYPES[kind]
        caption = as_str(body.get("caption"))
        return Inbound(kind=Kind.MEDIA, media=Media(name, media_id, caption), **base)
    if kind == "location":
        where = as_dict(msg.get("location"))
        lat, lon = where.get("latitude"), where.get("longitude")
        if isinstance(lat, int | float) and isinstance(lon, int | float):
            label = as_str(where.get("name")) or as_str(where.get("address"))
            return Inbound(kind=Kind.MEDIA, media=Media("location", f"{lat},{lon}", label), **base)
    return Inbound(kind=Kind.OTHER, **base)


def _names(value: dict[str, Any]) -> dict[str, str]:
    """Profile names by phone and by BSUID (the username when there is no name)."""
    names: dict[str, str] = {}
    for contact in dicts(value.get("contacts")):
        profile = as_dict(contact.get("profile"))
        name = as_str(profile.get("name")) or as_str(profile.get("username"))
        for who in (as_str(contact.get("wa_id")), as_str(contact.get("user_id"))):
            if who:
                names[who] = name
    return names


def _changes(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for entry in dicts(as_dict(payload).get("entry")):
        for change in dicts(entry.get("changes")):
            yield as_dict(change.get("value"))


def parse_webhook(payload: dict[str, Any], phone_number_id: str | None = None) -> list[Inbound]:
    """Customer messages of one webhook call as Inbound events; statuses and junk are skipped.

    With ``phone_number_id``, messages sent to another number of the same Meta app are
    dropped (one warning naming that number's id: it is the business's, not a customer's).
    """
    out: list[Inbound] = []
    for value in _changes(payload):
        messages = list(dicts(value.get("messages")))
        if not messages:
            continue  # statuses, or nothing
        addressed = as_str(as_dict(value.get("metadata")).get("phone_number_id"))
        if phone_number_id and addressed != phone_number_id:
            # A number (the business's Graph id, not a customer's): logged whole, unmasked.
            named = int(addressed) if addressed.isdigit() else "?"
            reason = "another phone number id"
            log.warning(IGNORED, reason, extra={"reason": reason, "phone_number_id": named})
            continue
        names = _names(value)
        for msg in messages:
            inbound = _message(msg, names)
            if inbound is not None:
                out.append(inbound)
    return out


def timestamps(payload: dict[str, Any]) -> dict[str, float]:
    """When each message was written (wamid -> epoch seconds), for the 24-hour window."""
    stamps: dict[str, float] = {}
    for value in _changes(payload):
        for msg in dicts(value.get("messages")):
            raw = as_str(msg.get("timestamp"))
            if raw.isdigit():
                stamps[as_str(msg.get("id"))] = float(raw)
    return stamps
