"""The WhatsApp channel: parse (webhook payloads), render (Graph messages), the webhook, the
Graph client and the channel adapter. It imports no engine, store or service module.
"""

from bot.channels.whatsapp.channel import WINDOW_SECONDS, WhatsAppChannel, window_open_at
from bot.channels.whatsapp.parse import parse_webhook
from bot.channels.whatsapp.render import takes_caption
from bot.channels.whatsapp.webhook import WhatsAppWebhook, verify_signature

__all__ = [
    "WINDOW_SECONDS",
    "WhatsAppChannel",
    "WhatsAppWebhook",
    "parse_webhook",
    "takes_caption",
    "verify_signature",
    "window_open_at",
]
