"""The media bridge: an agent's attachment (a message in the agents' Telegram group) to the
customer, on whichever channel the customer writes from.

To a Telegram customer it goes as a copy of the group's message; a copy cannot reach WhatsApp,
so for a WhatsApp customer the file is downloaded from Telegram, uploaded to Graph and sent
with its caption.
"""

from __future__ import annotations

import dataclasses
import mimetypes

from bot.channels.base import WindowClosed
from bot.channels.telegram.channel import TelegramChannel
from bot.channels.whatsapp.channel import WhatsAppChannel
from bot.channels.whatsapp.render import takes_caption
from flows.types import ConvKey, Outbound

# What Telegram stores each kind of attachment as: (MIME family, MIME to use when the file path
# does not tell), for the upload to WhatsApp.
_TELEGRAM_FORMATS = {
    "photo": ("image/", "image/jpeg"),
    "sticker": ("image/webp", "image/webp"),
    "voice": ("audio/", "audio/ogg"),
    "audio": ("audio/", "audio/mpeg"),
    "video": ("video/", "video/mp4"),
    "video_note": ("video/", "video/mp4"),
    "animation": ("video/", "video/mp4"),
}


def from_topic(reply: Outbound, agents_chat_id: int | None) -> Outbound:
    """An agent's attachment is a message of the agents' group: name it as the copy's source.

    The engine relays it without a source (it knows no channel), and a copy without one
    is refused, so agents' photos and files never reached Telegram customers.
    """
    if reply.media is None or reply.source_key is not None or agents_chat_id is None:
        return reply
    return dataclasses.replace(reply, source_key=ConvKey("telegram", str(agents_chat_id)))


class MediaBridge:
    """Agents' attachments from Telegram to WhatsApp customers."""

    def __init__(self, telegram: TelegramChannel, whatsapp: WhatsAppChannel) -> None:
        self.telegram = telegram
        self.whatsapp = whatsapp

    @staticmethod
    def carries(reply: Outbound) -> bool:
        """Whether the reply is an agent's attachment (with a file to fetch) for WhatsApp."""
        return (
            reply.key.channel == "whatsapp"
            and reply.media is not None
            and bool(reply.media.file_id)
            and reply.source_key is not None
            and reply.source_key.channel == "telegram"
        )

    async def send(self, reply: Outbound) -> None:
        """Download the file from Telegram, upload it to Graph, send it and the text."""
        assert reply.media is not None
        media, chat = reply.media, reply.key.chat_id
        if await self.whatsapp.window_known_closed(chat):  # no download for a doomed send
            msg = f"{reply.key}: the customer has not written for 24 hours"
            raise WindowClosed(msg)
        data, mime = await self.telegram.download_file(media.file_id)
        family, usual = _TELEGRAM_FORMATS.get(media.type, ("", mime))
        if not mime.startswith(family):
            mime = usual  # the file path did not tell: the format Telegram stores it in
        extension = mimetypes.guess_extension(mime) or ""
        media_id = await self.whatsapp.upload_media(data, mime, f"{media.type}{extension}")
        await self.whatsapp.send_media(chat, media_id, media.type, media.caption)
        # The engine relays the caption as the text too: send only what the caption lacks (all
        # of it for a voice note or a sticker, which show no caption on WhatsApp).
        same = takes_caption(media.type) and reply.text.strip() == media.caption.strip()
        text = "" if same else reply.text
        if text.strip() or reply.options:
            await self.whatsapp.send(Outbound(reply.key, text, reply.options))
