"""Handoff on Telegram: one forum topic per customer conversation in the agents' supergroup."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Awaitable, Callable

from bot.channels.base import AgentMessage, DeliveryError
from bot.channels.telegram.channel import MAX_UPLOAD_BYTES, TelegramChannel
from flows.ports import AgentRequest, HandoffError
from flows.texts import Texts
from flows.types import Inbound, Media

log = logging.getLogger(__name__)

# Downloads a customer's media by its channel's id: (bytes, MIME type); DeliveryError on failure.
MediaSource = Callable[[str], Awaitable[tuple[bytes, str]]]

CHANNEL_NAMES = {"telegram": "Telegram", "whatsapp": "WhatsApp", "console": "Console"}


def card_text(request: AgentRequest, t: Texts) -> str:
    """The card posted when a customer asks for a human: verified details only when verified."""
    channel = CHANNEL_NAMES.get(request.key.channel, request.key.channel)
    if request.verified_name and request.service_id is not None:
        who = t("agents.verified", name=request.verified_name, service_id=request.service_id)
        details = t(
            "agents.details",
            plan=request.plan or "-",
            balance=request.balance or "-",
            tickets="; ".join(request.open_tickets) or "0",
        )
    else:
        who = t("agents.unverified", display=request.display_name)
        details = t("agents.no_details")
    if request.key.channel == "whatsapp" and not request.key.chat_id.isdigit():
        # A username user: Meta gives a business-scoped id, no phone the agents could call.
        who = f"{who} · {t('agents.no_phone')}"
    lines = [
        t("agents.history_customer" if who_ == "c" else "agents.history_bot", text=text)
        for who_, text in request.history
    ]
    history = "\n".join(lines) or t("agents.no_history")
    card = t("agents.card", channel=channel, who=who, details=details, history=history)
    if request.request:  # what the customer asked for, first: the agents act on it
        card = t("agents_request_line", request=t(f"opt.{request.request}")) + "\n" + card
    return card


def topic_name(request: AgentRequest, t: Texts) -> str:
    """``Name · Channel``; unverified customers by profile name and a short id."""
    channel = CHANNEL_NAMES.get(request.key.channel, request.key.channel)
    name = request.verified_name or f"{request.display_name} #{request.key.chat_id[-4:]}"
    return t("agents.topic_name", name=name, channel=channel)


def may_act(msg: AgentMessage, agent_ids: frozenset[int]) -> bool:
    """Whether the writer may act in a topic: anyone without a list (``TELEGRAM_AGENT_IDS``),
    else a listed user. An admin posting anonymously (as the group) cannot be told apart from
    any other admin, so is not on any list."""
    return not agent_ids or msg.user_id in agent_ids


def location_text(media: Media, label: str) -> str:
    """A shared location as the text posted in the topic: the label, caption and a map link."""
    where = f"https://www.google.com/maps?q={media.ref}"
    return " ".join(p for p in (label, media.caption, where) if p)


class TelegramAgents:
    """HandoffPort on a Telegram forum supergroup."""

    configured = True

    def __init__(
        self,
        channel: TelegramChannel,
        lang: str,
        media_sources: dict[str, MediaSource] | None = None,
        agent_ids: frozenset[int] = frozenset(),
    ) -> None:
        self.channel = channel
        self.t = Texts(lang)
        # Per customer channel: how to download a media id (e.g. WhatsAppChannel.fetch_media).
        self.media_sources: dict[str, MediaSource] = dict(media_sources or {})
        self.agent_ids = agent_ids

    async def admit(self, msg: AgentMessage) -> bool:
        """Whether a topic message may act (relay, /cerrar, /ticket); when not, the writer is
        told so in the topic, in one line, and the message goes no further."""
        if may_act(msg, self.agent_ids):
            return True
        # The id is what the operator adds to TELEGRAM_AGENT_IDS, should this be an agent.
        log.warning(
            "topic message from a member not on the agent list",
            extra={"thread_id": msg.thread_id, "user_id": msg.user_id},
        )
        try:
            await self.notify(msg.thread_id, self.t("agents.not_an_agent", name=msg.agent_name))
        except HandoffError:
            log.warning("note not posted in the topic", extra={"thread_id": msg.thread_id})
        return False

    async def open(self, request: AgentRequest, thread_id: int | None) -> int:
        """Reopen the customer's topic when there is one, else create it; post the card."""
        thread_id = await self.open_topic(request, thread_id)
        await self.notify(thread_id, card_text(request, self.t))
        return thread_id

    async def open_topic(self, request: AgentRequest, thread_id: int | None) -> int:
        """Reopen the customer's topic when there is one, else create it (no card)."""
        try:
            if thread_id is not None:
                try:
                    await self.channel.reopen_topic(thread_id)
                except DeliveryError:
                    log.info("topic could not be reopened, creating a new one")
                    thread_id = None
            if thread_id is None:
                thread_id = await self.channel.create_topic(topic_name(request, self.t))
        except DeliveryError as err:
            raise HandoffError(str(err)) from err
        return thread_id

    async def forward(self, thread_id: int, inbound: Inbound, label: str) -> None:
        """Customer text as a post; Telegram media copied; other channels' media re-uploaded
        when their channel can download it (``media_sources``), else described."""
        media = inbound.media
        try:
            if media is not None and inbound.key.channel == "telegram":
                await self.channel.copy_to_topic(thread_id, inbound.key.chat_id, int(media.ref))
            elif media is not None and media.type == "location":
                await self.channel.post_to_topic(thread_id, location_text(media, label))
            elif media is not None and inbound.key.channel in self.media_sources:
                await self._relay_file(thread_id, inbound, media, label)
            else:
                await self.channel.post_to_topic(thread_id, label)
        except DeliveryError as err:
            raise HandoffError(str(err)) from err

    async def _relay_file(self, thread_id: int, inbound: Inbound, media: Media, label: str) -> None:
        fetch = self.media_sources[inbound.key.channel]
        try:
            data, mime = await fetch(media.ref)
        except DeliveryError:
            # The agents still learn that something was sent; the customer can send it again.
            log.warning("customer media could not be downloaded", extra={"conv": str(inbound.key)})
            await self.channel.post_to_topic(thread_id, label)
            return
        if len(data) > MAX_UPLOAD_BYTES:
            await self.channel.post_to_topic(thread_id, label)
            return
        extension = mimetypes.guess_extension(mime) or ""
        await self.channel.send_file_to_topic(
            thread_id, data, mime, f"{media.type}{extension}", media.caption or label
        )

    async def notify(self, thread_id: int, text: str) -> None:
        """A note of the bot's in the topic."""
        try:
            await self.channel.post_to_topic(thread_id, text)
        except DeliveryError as err:
            raise HandoffError(str(err)) from err

    async def close(self, thread_id: int) -> None:
        """Close the topic; a failure is logged (the conversation already went back to the bot)."""
        try:
            await self.channel.close_topic(thread_id)
        except DeliveryError:
            log.warning("topic could not be closed", extra={"thread_id": thread_id})
