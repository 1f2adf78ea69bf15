"""The dialog's vocabulary, which every channel adapter speaks: conversation key, Inbound, Outbound,
options and the days of the week. It lives with the dialog (``flows``) so that the runtime and
the channels import it from below, never the other way round."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, get_args

import orjson

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The fault report's categories (also how a ticket's WispHub subject is told back).
FAULT_CATEGORIES = ("no_internet", "slow", "intermittent", "other")

Channel = Literal["telegram", "whatsapp", "console"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)


@dataclass(frozen=True, slots=True)
class ConvKey:
    """One customer conversation: a chat on one channel."""

    channel: Channel
    chat_id: str

    def __str__(self) -> str:
        return f"{self.channel}:{self.chat_id}"

    @classmethod
    def parse(cls, text: str) -> ConvKey:
        """Reverse of ``str(key)``."""
        channel, _, chat_id = text.partition(":")
        if channel not in CHANNELS or not chat_id:
            msg = f"not a conversation key: {text!r}"
            raise ValueError(msg)
        return cls(channel, chat_id)


class Kind(StrEnum):
    """What the customer sent."""

    TEXT = "text"
    BUTTON = "button"
    CONTACT = "contact"
    MEDIA = "media"
    OTHER = "other"
    NOTE = "note"  # a reaction or an edit: never answered; a line for the agents in a handoff
    MOVED = "moved"  # the customer's number changed: ``payload`` is the new chat id


@dataclass(frozen=True, slots=True)
class Media:
    """A channel's reference to a media message, enough for its adapter to forward a copy."""

    type: str  # photo, sticker, audio, voice, video, document, location, ...
    ref: str  # Telegram: the message id to copy; WhatsApp: the media id
    caption: str = ""
    file_id: str = ""  # Telegram: the file to download when a copy cannot reach the chat


@dataclass(frozen=True, slots=True)
class Inbound:
    """One event from a customer, already turned into channel-neutral form by its adapter."""

    key: ConvKey
    event_id: str
    kind: Kind = Kind.TEXT
    text: str = ""
    payload: str | None = None  # the option id of a pressed button
    phone: str | None = None  # the sender's own number (WhatsApp ``from``, their own contact)
    user_id: str | None = None
    display_name: str | None = None  # the channel profile name (topic titles), never verified
    media: Media | None = None

    def to_json(self) -> str:
        """JSON form (kept in the inbox when a stopping process could not handle it, and in the
        journal of turns in flight: once per turn, hence built by hand, not by ``asdict``)."""
        media = self.media
        raw = {
            "key": f"{self.key.channel}:{self.key.chat_id}",
            "event_id": self.event_id,
            "kind": self.kind.value,
            "text": self.text,
            "payload": self.payload,
            "phone": self.phone,
            "user_id": self.user_id,
            "display_name": self.display_name,
            "media": None
            if media is None
            else {
                "type": media.type,
                "ref": media.ref,
                "caption": media.caption,
                "file_id": media.file_id,
            },
        }
        return orjson.dumps(raw).decode()

    @classmethod
    def from_json(cls, text: str) -> Inbound:
        """Reverse of ``to_json``."""
        raw = orjson.loads(text)
        media = raw.pop("media", None)
        return cls(
            **{**raw, "key": ConvKey.parse(raw["key"]), "kind": Kind(raw["kind"])},
            media=Media(**media) if media else None,
        )


@dataclass(frozen=True, slots=True)
class Option:
    """A choice offered with a message: the id comes back as a button payload."""

    id: str
    label: str


@dataclass(frozen=True, slots=True)
class Outbound:
    """One reply to a conversation: text, and options that the adapter renders as buttons."""

    key: ConvKey
    text: str
    options: tuple[Option, ...] = field(default=())
    media: Media | None = None  # a copy of a media message (agents' attachments)
    source_key: ConvKey | None = None  # where a copied media message comes from

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, for the outbox kept with the session."""
        out: dict[str, object] = {
            "key": str(self.key),
            "text": self.text,
            "options": [[o.id, o.label] for o in self.options],
        }
        if self.media is not None:
            media = [self.media.type, self.media.ref, self.media.caption]
            if self.media.file_id:  # kept only when set: older outboxes read the same
                media.append(self.media.file_id)
            out["media"] = media
        if self.source_key is not None:
            out["source_key"] = str(self.source_key)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> Outbound:
        """Reverse of ``to_dict``."""
        options = raw.get("options") or []
        media = raw.get("media")
        source = raw.get("source_key")
        return cls(
            key=ConvKey.parse(str(raw["key"])),
            text=str(raw.get("text", "")),
            options=tuple(Option(str(i), str(label)) for i, label in options),  # type: ignore[attr-defined]
            media=Media(*media) if isinstance(media, list) else None,
            source_key=ConvKey.parse(source) if isinstance(source, str) else None,
        )


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """A message written by an agent in a forum topic of the agents' group."""

    thread_id: int
    message_id: int
    text: str
    agent_name: str
    media: Media | None = None  # set when the agent sent an attachment (to be copied)
    user_id: int | None = None  # the writer's Telegram id; None for an admin posting anonymously
    first_name: str = ""  # what the customer sees the agent as; empty: unsigned
