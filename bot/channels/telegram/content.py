"""Which Telegram messages carry something the customer said that the bot cannot read.

Telegram keeps adding content types (stories, checklists, ...). Anything a customer sends that
is neither text nor one of the attachments the parser names is still something they said: it
must get the "I can only read text" answer (or, during a handoff, a copy in the agents' topic),
never silence. Only service messages (pins, write access, ...) are events, not messages, and
need no answer.
"""

from __future__ import annotations

from aiogram.enums import ContentType
from aiogram.types import Message

from flows.types import Media

__all__ = ["SERVICE_TYPES", "unreadable_media"]

SERVICE_TYPES = frozenset(
    {
        ContentType.NEW_CHAT_MEMBERS,
        ContentType.LEFT_CHAT_MEMBER,
        ContentType.NEW_CHAT_TITLE,
        ContentType.NEW_CHAT_PHOTO,
        ContentType.DELETE_CHAT_PHOTO,
        ContentType.GROUP_CHAT_CREATED,
        ContentType.SUPERGROUP_CHAT_CREATED,
        ContentType.CHANNEL_CHAT_CREATED,
        ContentType.MESSAGE_AUTO_DELETE_TIMER_CHANGED,
        ContentType.MIGRATE_TO_CHAT_ID,
        ContentType.MIGRATE_FROM_CHAT_ID,
        ContentType.PINNED_MESSAGE,
        ContentType.SUCCESSFUL_PAYMENT,
        ContentType.REFUNDED_PAYMENT,
        ContentType.CONNECTED_WEBSITE,
        ContentType.WRITE_ACCESS_ALLOWED,
        ContentType.PROXIMITY_ALERT_TRIGGERED,
        ContentType.BOOST_ADDED,
        ContentType.CHAT_BACKGROUND_SET,
        ContentType.CHECKLIST_TASKS_DONE,
        ContentType.CHECKLIST_TASKS_ADDED,
        ContentType.DIRECT_MESSAGE_PRICE_CHANGED,
        ContentType.PAID_MESSAGE_PRICE_CHANGED,
        ContentType.FORUM_TOPIC_CREATED,
        ContentType.FORUM_TOPIC_EDITED,
        ContentType.FORUM_TOPIC_CLOSED,
        ContentType.FORUM_TOPIC_REOPENED,
        ContentType.GENERAL_FORUM_TOPIC_HIDDEN,
        ContentType.GENERAL_FORUM_TOPIC_UNHIDDEN,
        ContentType.GIVEAWAY_CREATED,
        ContentType.GIVEAWAY_COMPLETED,
        ContentType.VIDEO_CHAT_SCHEDULED,
        ContentType.VIDEO_CHAT_STARTED,
        ContentType.VIDEO_CHAT_ENDED,
        ContentType.VIDEO_CHAT_PARTICIPANTS_INVITED,
        ContentType.GIFT_UPGRADE_SENT,
    }
)


def unreadable_media(message: Message) -> Media | None:
    """The message as an unreadable attachment (a story, a checklist, a type newer than this
    aiogram), referenced by its id so it can be copied to the agents; None for a service
    message."""
    kind = ContentType(message.content_type)
    if kind in SERVICE_TYPES:
        return None
    if kind == ContentType.UNKNOWN:
        # A field this aiogram does not know yet: name it after the field Telegram sent.
        extra = [k for k, v in (message.model_extra or {}).items() if v is not None]
        name = extra[0] if extra else "unknown"
    else:
        name = kind.value
    return Media(type=name, ref=str(message.message_id), caption=message.caption or "")
