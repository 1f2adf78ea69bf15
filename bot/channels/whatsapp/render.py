"""WhatsApp replies out: an Outbound as Graph API message bodies.

Text is cut to 4,096 characters; up to 3 options are reply buttons; more are a list message, in
pages of 9 rows plus a "more" row (the last page up to 10) when they do not fit one list. Titles
are shortened to WhatsApp's limits and made distinct (it refuses duplicates). Messages go to a
phone number (``to``) or a business-scoped user id (``recipient``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.channels.base import split_text
from bot.channels.whatsapp.parse import is_phone_id
from flows.types import Media, Option, Outbound

TEXT_LIMIT = 4096  # characters of a text message
BODY_LIMIT = 1024  # characters of an interactive message body
BUTTON_TITLE_LIMIT = 20
LIST_BUTTON_LIMIT = 20
ROW_TITLE_LIMIT = 24
ROW_DESCRIPTION_LIMIT = 72
MAX_BUTTONS = 3
MAX_ROWS = 10
MORE_PREFIX = "__more:"

# The WhatsApp message type each channel-neutral media type is sent as.
_SEND_TYPES = {
    "photo": "image",
    "image": "image",
    "audio": "audio",
    "voice": "audio",
    "video": "video",
    "video_note": "video",
    "animation": "video",
    "document": "document",
    "sticker": "sticker",
}
_CAPTIONED = frozenset({"image", "video", "document"})  # WhatsApp's types that take a caption

Pages = list[tuple[Option, ...]]
Message = dict[str, Any]


def send_type(kind: str) -> str:
    """The WhatsApp message type a channel-neutral media type is sent as."""
    return _SEND_TYPES.get(kind, "document")


def takes_caption(kind: str) -> bool:
    """Whether WhatsApp shows a caption on this media type (audio and stickers have none)."""
    return send_type(kind) in _CAPTIONED


def _head_and_body(text: str, limit: int = BODY_LIMIT) -> tuple[list[str], str]:
    """Split a text into leading text messages and a final part short enough for a body."""
    text = text.strip()
    if len(text) <= limit:
        return [], text
    # Break at the last paragraph or word boundary that leaves the tail within the limit.
    start = len(text) - limit
    cut = text.find("\n", start)
    if cut == -1:
        cut = text.find(" ", start)
    if cut == -1:
        cut = start
    return split_text(text[:cut], TEXT_LIMIT), text[cut:].strip()


def _shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending in an ellipsis when cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _unique(titles: list[str], limit: int) -> list[str]:
    """Make titles distinct (WhatsApp rejects duplicates), keeping each within ``limit``."""
    seen: set[str] = set()
    out: list[str] = []
    for title in titles:
        candidate, n = title, 1
        while candidate.casefold() in seen:
            n += 1
            suffix = f" ({n})"
            candidate = title[: limit - len(suffix)].rstrip() + suffix
        seen.add(candidate.casefold())
        out.append(candidate)
    return out


def _row_text(label: str) -> tuple[str, str]:
    """A list row's title (24) and description (72, the rest of a longer label)."""
    label = " ".join(label.split())
    if len(label) <= ROW_TITLE_LIMIT:
        return label, ""
    cut = label.rfind(" ", 0, ROW_TITLE_LIMIT + 1)
    if cut < ROW_TITLE_LIMIT // 2:
        cut = ROW_TITLE_LIMIT
    title, rest = label[:cut].rstrip(), label[cut:].strip()
    return title, _shorten(rest, ROW_DESCRIPTION_LIMIT)


def _pages(options: tuple[Option, ...]) -> list[tuple[Option, ...]]:
    """Options in list pages: 9 per page plus a "more" row, the last page up to 10."""
    pages: list[tuple[Option, ...]] = []
    rest = options
    while len(rest) > MAX_ROWS:
        pages.append(rest[: MAX_ROWS - 1])
        rest = rest[MAX_ROWS - 1 :]
    pages.append(rest)
    return pages


def more_page(payload: str | None) -> int | None:
    """The page asked for by a "more" row's reply id, else None."""
    if payload is None or not payload.startswith(MORE_PREFIX):
        return None
    number = payload.removeprefix(MORE_PREFIX)
    return int(number) if number.isdigit() else None


def envelope(chat: str, kind: str, content: dict[str, Any]) -> Message:
    """A Graph message of type ``kind`` to ``chat``."""
    # Graph takes a phone number in ``to``, a business-scoped user id (BSUID) in ``recipient``.
    field = "to" if is_phone_id(chat) else "recipient"
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        field: chat,
        "type": kind,
        kind: content,
    }


def text_message(chat: str, text: str) -> Message:
    """A plain text message (no link preview)."""
    return envelope(chat, "text", {"body": text, "preview_url": False})


def buttons_message(chat: str, body: str, options: tuple[Option, ...]) -> Message:
    """Up to three reply buttons under ``body``."""
    titles = _unique([_shorten(o.label, BUTTON_TITLE_LIMIT) for o in options], BUTTON_TITLE_LIMIT)
    buttons = [
        {"type": "reply", "reply": {"id": o.id, "title": t}}
        for o, t in zip(options, titles, strict=True)
    ]
    return envelope(
        chat,
        "interactive",
        {"type": "button", "body": {"text": body}, "action": {"buttons": buttons}},
    )


def media_message(chat: str, media: Media) -> Message:
    """A media message: by link, or by an uploaded media id; with its caption where shown."""
    kind = send_type(media.type)
    content: dict[str, Any] = (
        {"link": media.ref} if media.ref.startswith(("https://", "http://")) else {"id": media.ref}
    )
    if media.caption and kind in _CAPTIONED:
        content["caption"] = _shorten(media.caption, BODY_LIMIT)
    return envelope(chat, kind, content)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A reply's messages, and its list's pages with their body when it has more than one."""

    messages: list[Message]
    paged: tuple[str, Pages] | None = None


class Renderer:
    """Renders replies with the list button's and the "more" row's texts (from the catalogue;
    the defaults are neutral placeholders)."""

    def __init__(self, list_button: str = "Options", more_label: str = "More") -> None:
        self.list_button = _shorten(list_button, LIST_BUTTON_LIMIT)
        self.more_label = _shorten(more_label, ROW_TITLE_LIMIT)

    def render(self, out: Outbound) -> Rendered:
        """The messages of one reply, in order."""
        chat = out.key.chat_id
        messages: list[Message] = []
        if out.media is not None:
            messages.append(media_message(chat, out.media))
        if not out.options:
            messages += [text_message(chat, part) for part in split_text(out.text, TEXT_LIMIT)]
            return Rendered(messages)
        head, body = _head_and_body(out.text)
        body = body or self.list_button  # an interactive message needs a non-empty body
        messages += [text_message(chat, part) for part in head]
        if len(out.options) <= MAX_BUTTONS:
            messages.append(buttons_message(chat, body, out.options))
            return Rendered(messages)
        pages = _pages(out.options)
        messages.append(self.list_message(chat, body, pages, 0))
        return Rendered(messages, (body, pages) if len(pages) > 1 else None)

    def list_message(self, chat: str, body: str, pages: Pages, page: int) -> Message:
        """Page ``page`` of a list, with a "more" row when another page follows."""
        options = pages[page]
        texts = [_row_text(o.label) for o in options]
        titles = _unique([t for t, _ in texts], ROW_TITLE_LIMIT)
        rows: list[dict[str, str]] = []
        for option, title, (_, description) in zip(options, titles, texts, strict=True):
            row = {"id": option.id, "title": title}
            if description:
                row["description"] = description
            rows.append(row)
        if page + 1 < len(pages):
            rows.append({"id": f"{MORE_PREFIX}{page + 1}", "title": self.more_label})
        action = {"button": self.list_button, "sections": [{"rows": rows}]}
        return envelope(
            chat, "interactive", {"type": "list", "body": {"text": body}, "action": action}
        )
