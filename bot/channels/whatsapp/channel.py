"""The WhatsApp channel (a ChannelAdapter): replies rendered (``render.py``) and sent through
Graph (``graph.py``) in order per chat, the 24-hour customer service window, and the pages of
long option lists ("más opciones")."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiohttp
from cachetools import LRUCache

from bot.channels.base import DeliveryError, KeyedLock, WindowClosed
from bot.channels.whatsapp.graph import GRAPH_TIMEOUT, MEDIA_TIMEOUT, GraphClient
from bot.channels.whatsapp.render import Pages, Renderer, media_message, more_page
from bot.settings import WhatsAppSettings
from flows.types import Channel, Inbound, Kind, Media, Outbound

log = logging.getLogger("bot.channels.whatsapp")

WINDOW_SECONDS = 24 * 3600
# Per-customer memory of one process, bounded: the least recently seen customers are forgotten
# (their window is then unknown, and Graph decides; a forgotten paged list is re-prompted).
WINDOWS_KEPT = 50_000
PAGED_KEPT = 5_000


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
    ) -> None:
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
        self._last_inbound: LRUCache[str, float] = LRUCache(maxsize=WINDOWS_KEPT)
        self._locks: KeyedLock[str] = KeyedLock()
        # Paged option lists, per chat, until the customer answers (in-process only).
        self._paged: LRUCache[str, tuple[str, Pages]] = LRUCache(PAGED_KEPT)

    # -- the 24-hour customer service window
    #
    # Kept in this process's memory only: after a restart the window of a customer who has not
    # written since is unknown, and the Graph API decides (131047 -> WindowClosed, which the
    # service reports in the agents' topic). Once known closed, later sends fail fast without
    # a doomed API call, until the customer writes again.

    def note_inbound(self, wa_id: str, at: float) -> None:
        """Remember that the customer wrote at ``at`` (epoch seconds)."""
        self._last_inbound[wa_id] = max(at, self._last_inbound.get(wa_id, at))

    def window_open(self, wa_id: str) -> bool:
        """Whether the customer wrote within the last 24 hours (as far as this process knows)."""
        return window_open_at(self._last_inbound.get(wa_id), self._clock())

    def window_known_closed(self, wa_id: str) -> bool:
        """True only when this process knows the window is closed (not when it does not know)."""
        return wa_id in self._last_inbound and not self.window_open(wa_id)

    # -- sending

    async def send(self, out: Outbound) -> None:
        """Deliver one reply (several messages when long or paged) in order for its chat."""
        chat = out.key.chat_id
        if self.window_known_closed(chat):
            msg = f"{out.key}: the customer has not written for 24 hours"
            raise WindowClosed(msg)
        if out.media is not None and not _sendable(out):
            # Checked before anything is sent, so a reply is delivered whole or not at all.
            msg = f"{out.key}: a {out.media.type} from another channel cannot be sent on WhatsApp"
            log.warning("whatsapp reply refused: foreign media", extra={"conv": str(out.key)})
            raise DeliveryError(msg)
        async with self._locks.hold(chat):
            try:
                for message in self._render(out):
                    await self.graph.send_message(message, str(out.key))
            except WindowClosed:
                self._last_inbound[chat] = 0.0  # known closed until the customer writes again
                raise

    async def send_media(self, wa_id: str, media_id: str, kind: str, caption: str = "") -> None:
        """Send an uploaded file (an agent's photo or document) with its caption.

        ``kind`` is a channel-neutral media type (photo, document, ...); the 24-hour window
        rules are those of ``send``.
        """
        if self.window_known_closed(wa_id):
            msg = f"whatsapp:{wa_id}: the customer has not written for 24 hours"
            raise WindowClosed(msg)
        message = media_message(wa_id, Media(kind, media_id, caption))
        async with self._locks.hold(wa_id):
            try:
                await self.graph.send_message(message, f"whatsapp:{wa_id}")
            except WindowClosed:
                self._last_inbound[wa_id] = 0.0  # known closed until the customer writes again
                raise

    async def serve_more(self, inbound: Inbound) -> bool:
        """Answer a press on a "more" row with the next page; False for any other event."""
        page = more_page(inbound.payload) if inbound.kind is Kind.BUTTON else None
        if page is None:
            self._paged.pop(inbound.key.chat_id, None)  # any other answer ends the paging
            return False
        chat = inbound.key.chat_id
        paged = self._paged.get(chat)
        if paged is None or page >= len(paged[1]):
            return False  # e.g. after a restart: the engine re-prompts as for any stray press
        body, pages = paged
        async with self._locks.hold(chat):
            message = self.renderer.list_message(chat, body, pages, page)
            await self.graph.send_message(message, str(inbound.key))
        return True

    def _render(self, out: Outbound) -> list[dict[str, object]]:
        rendered = self.renderer.render(out)
        if rendered.paged is None:
            self._paged.pop(out.key.chat_id, None)
        else:
            self._paged[out.key.chat_id] = rendered.paged
        return rendered.messages

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
