"""The WhatsApp channel (a ChannelAdapter): replies rendered (``render.py``) and sent through
Graph (``graph.py``) in order per chat, the 24-hour customer service window, and the pages of
long option lists ("más opciones")."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiohttp

from bot.channels.base import SEND_LANE, DeliveryError, TokenBucket, WindowClosed
from bot.channels.whatsapp.graph import GRAPH_TIMEOUT, MEDIA_TIMEOUT, GraphClient
from bot.channels.whatsapp.memory import WINDOW_SECONDS, ChatMemory, LocalMemory
from bot.channels.whatsapp.render import Message, Renderer, envelope, media_message, more_page
from bot.channels.whatsapp.settings import WhatsAppSettings
from bot.concurrency import KeyedLock, on_wire
from flows.types import Channel, Inbound, Kind, Media, Outbound

log = logging.getLogger("bot.channels.whatsapp")

# Notices (issue 15) leave the business number at most this many a second, behind the answers
# (Cloud API numbers take 80 a second; the rest is the answers' headroom). A pair-rate error
# (131056: too many messages to one customer) is retried after its wait by ``GraphClient``.
NOTICE_RATE = 40.0

__all__ = ["WINDOW_SECONDS", "WhatsAppChannel", "window_open_at"]


def window_open_at(last_inbound: float | None, now: float) -> bool:
    """Whether free-form messages may be sent: less than 24 h since the customer last wrote."""
    if last_inbound is None:
        return False
    return now - last_inbound < WINDOW_SECONDS


def _sendable(out: Outbound) -> bool:
    """Whether the reply's media can be sent on WhatsApp: a link, or a WhatsApp media id.

    An agent's attachment is a Telegram message id (to copy), which Graph cannot resolve.
    """
    media = out.media
    if media is None or media.ref.startswith(("https://", "http://")):
        return True
    return out.source_key is not None and out.source_key.channel == "whatsapp"


class WhatsAppChannel:
    """The ChannelAdapter for WhatsApp: renders Outbound replies and sends them through Graph."""

    name: Channel = "whatsapp"

    def __init__(
        self,
        settings: WhatsAppSettings,
        http: aiohttp.ClientSession | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        list_button: str = "Options",
        more_label: str = "More",
        on_outcome: Callable[[bool], None] | None = None,
        message_timeout: aiohttp.ClientTimeout = GRAPH_TIMEOUT,
        media_timeout: aiohttp.ClientTimeout = MEDIA_TIMEOUT,
        memory: ChatMemory | None = None,
    ) -> None:
        # ``memory``: the window and the paged lists; this process's own unless given (the
        # service gives the Redis one, shared by its processes).
        self.graph = GraphClient(
            settings,
            http,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            on_outcome=on_outcome,
            message_timeout=message_timeout,
            media_timeout=media_timeout,
        )
        self.renderer = Renderer(list_button, more_label)
        self._clock = clock
        self.memory: ChatMemory = memory or LocalMemory()
        self._locks: KeyedLock[str] = KeyedLock()
        self._notice_pace = TokenBucket(NOTICE_RATE, NOTICE_RATE / 4)

    # -- the 24-hour customer service window
    #
    # Kept in ``memory`` (Redis when the service runs on it): a customer whose window is not
    # known (never seen, or forgotten) is left to the Graph API (131047 -> WindowClosed, which
    # the service reports in the agents' topic). Once known closed, later sends fail fast
    # without a doomed API call, until the customer writes again.

    async def note_inbound(self, wa_id: str, at: float) -> None:
        """Remember that the customer wrote at ``at`` (epoch seconds)."""
        await self.memory.wrote(wa_id, at)

    async def heard(self, events: list[Inbound], stamps: dict[str, float], now: float) -> None:
        """Customers' events came in: each opens its customer's window (at its timestamp, else
        ``now``), and any answer but a "more" press ends its chat's paged list."""
        for inbound in events:
            chat = inbound.key.chat_id
            if inbound.kind is not Kind.MOVED:  # Meta's notice, not the customer's message
                await self.note_inbound(chat, stamps.get(inbound.event_id, now))
            if not (inbound.kind is Kind.BUTTON and more_page(inbound.payload) is not None):
                await self.memory.keep_pages(chat, None)

    async def window_open(self, wa_id: str) -> bool:
        """Whether the customer wrote within the last 24 hours (as far as is known)."""
        return window_open_at(await self.memory.last_wrote(wa_id), self._clock())

    async def window_known_closed(self, wa_id: str) -> bool:
        """True only when the window is known closed (not when it is not known)."""
        last = await self.memory.last_wrote(wa_id)
        return last is not None and not window_open_at(last, self._clock())

    async def _refuse_closed(self, wa_id: str) -> None:
        if await self.window_known_closed(wa_id):
            msg = f"whatsapp:{wa_id}: the customer has not written for 24 hours"
            raise WindowClosed(msg)

    # -- sending

    async def send(self, out: Outbound) -> None:
        """Deliver one reply (several messages when long or paged) in order for its chat."""
        chat = out.key.chat_id
        await self._refuse_closed(chat)
        if out.media is not None and not _sendable(out):
            # Checked before anything is sent, so a reply is delivered whole or not at all.
            msg = f"{out.key}: a {out.media.type} from another channel cannot be sent on WhatsApp"
            log.warning("whatsapp reply refused: foreign media", extra={"conv": str(out.key)})
            raise DeliveryError(msg)
        async with self._locks.hold(chat):
            rendered = self.renderer.render(out)
            await self.memory.keep_pages(chat, rendered.paged)
            await self._send_all(chat, rendered.messages, str(out.key))

    async def send_media(self, wa_id: str, media_id: str, kind: str, caption: str = "") -> None:
        """Send an uploaded file (an agent's photo or document) with its caption.

        ``kind`` is a channel-neutral media type (photo, document, ...); the 24-hour window
        rules are those of ``send``.
        """
        await self._refuse_closed(wa_id)
        message = media_message(wa_id, Media(kind, media_id, caption))
        async with self._locks.hold(wa_id):
            await self._send_all(wa_id, [message], f"whatsapp:{wa_id}")

    async def send_template(self, wa_id: str, name: str, language: str, params: list[str]) -> None:
        """Send an approved template (allowed outside the 24-hour window): a notice there."""
        body = [{"type": "text", "text": value} for value in params]
        content: dict[str, object] = {"name": name, "language": {"code": language}}
        if body:
            content["components"] = [{"type": "body", "parameters": body}]
        async with self._locks.hold(wa_id):
            await self._send_all(wa_id, [envelope(wa_id, "template", content)], f"whatsapp:{wa_id}")

    async def _send_all(self, chat: str, messages: list[Message], conv: str) -> None:
        try:
            for message in messages:
                if SEND_LANE.get() == "notice":
                    await self._notice_pace.take(low=True)
                await on_wire()
                await self.graph.send_message(message, conv)
        except WindowClosed:
            await self.memory.closed(chat)  # known closed until the customer writes again
            raise

    async def serve_more(self, inbound: Inbound) -> bool:
        """Answer a press on a "more" row with the next page; False for any other event."""
        chat = inbound.key.chat_id
        page = more_page(inbound.payload) if inbound.kind is Kind.BUTTON else None
        if page is None:
            return False  # any other answer ended the paging (``heard``)
        paged = await self.memory.pages(chat)
        if paged is None or page >= len(paged[1]):
            return False  # e.g. the pages expired: the engine re-prompts as for any stray press
        body, pages = paged
        async with self._locks.hold(chat):
            message = self.renderer.list_message(chat, body, pages, page)
            await self.graph.send_message(message, str(inbound.key))
        return True

    # -- other Graph calls

    async def mark_read(self, wamid: str) -> None:
        """Show the customer's message as read (blue ticks); a failure is logged, not raised."""
        await self.graph.mark_read(wamid)

    async def fetch_media(self, media_id: str) -> tuple[bytes, str]:
        """Download a customer's media (to forward it to agents): its bytes and MIME type."""
        return await self.graph.fetch_media(media_id)

    async def upload_media(self, data: bytes, mime: str, filename: str = "file") -> str:
        """Upload a file (an agent's attachment) and return the media id to send it with."""
        return await self.graph.upload_media(data, mime, filename)

    async def aclose(self) -> None:
        """Close the HTTP client when this channel created it."""
        await self.graph.aclose()
