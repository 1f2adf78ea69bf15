"""The Telegram channel: parse, render, the Bot API sender, pacing, ingress (webhook, polling),
the agents' forum topics and the media bridge. It imports no engine, store or service module.
"""

from bot.channels.telegram.channel import MAX_UPLOAD_BYTES, TelegramChannel, make_bot
from bot.channels.telegram.ingress import TelegramPolling, TelegramWebhook
from bot.channels.telegram.parse import BadUpdate, parse_update
from bot.channels.telegram.render import MAX_TEXT
from bot.channels.telegram.topics import TelegramAgents

__all__ = [
    "MAX_TEXT",
    "MAX_UPLOAD_BYTES",
    "BadUpdate",
    "TelegramAgents",
    "TelegramChannel",
    "TelegramPolling",
    "TelegramWebhook",
    "make_bot",
    "parse_update",
]
