"""Telegram replies out: text cut to Telegram's size, options as an inline keyboard.

Messages are plain text (parse mode None), so customer or WispHub text is never parsed as HTML.
Button callback data is ``<token>.<option id>``: a 4-character token per message, then the
option id; it is checked to fit Telegram's 64 bytes and to carry no long digit run (a document
or phone number must never travel in callback data).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.channels.base import DeliveryError, split_text
from bot.channels.telegram.parse import LONG_DIGITS, MAX_CALLBACK_DATA, SEP
from flows.types import Option

MAX_TEXT = 4096
_SHORT_LABEL = 16  # labels up to this long sit two to a row


def text_parts(text: str) -> list[str]:
    """A text as the messages it takes (none when blank)."""
    return split_text(text, MAX_TEXT)


def encode_callback_data(token: str, option_id: str) -> str:
    """``token.option_id``, refused (DeliveryError) when too long or carrying a number."""
    data = f"{token}{SEP}{option_id}"
    if not option_id or len(data.encode()) > MAX_CALLBACK_DATA:
        msg = f"option id {option_id[:20]!r}… does not fit Telegram's 64-byte callback data"
        raise DeliveryError(msg)
    if LONG_DIGITS.search(option_id):
        # The check exists to keep personal numbers out of Telegram; so never echo the id.
        msg = "option id carries a run of 7+ digits (personal data must not be callback data)"
        raise DeliveryError(msg)
    return data


def build_keyboard(options: Iterable[Option], token: str) -> dict[str, Any]:
    """An ``InlineKeyboardMarkup`` as the Bot API's JSON: one button a row, two when every
    label is short; callback data is ``token.option_id``."""
    opts = list(options)
    for opt in opts:
        if not opt.label.strip():
            msg = f"option {opt.id!r} has an empty label"
            raise DeliveryError(msg)
    buttons = [{"text": o.label, "callback_data": encode_callback_data(token, o.id)} for o in opts]
    width = 2 if all(len(o.label) <= _SHORT_LABEL for o in opts) else 1
    rows = [buttons[i : i + width] for i in range(0, len(buttons), width)]
    return {"inline_keyboard": rows}
