"""The store for the service's settings: Redis for a URL, else memory."""

from __future__ import annotations

import logging
import time

from bot.store.interfaces import SessionStore
from bot.store.keys import DEFAULT_TOPIC_TTL, Clock
from bot.store.memory import MemoryStore
from bot.store.redis_store import RedisStore

log = logging.getLogger(__name__)


def make_store(
    redis_url: str | None, *, clock: Clock = time.time, topic_ttl: int = DEFAULT_TOPIC_TTL
) -> SessionStore:
    """The Redis store for a URL, or the in-memory store (with a warning) when there is none."""
    if not redis_url:
        log.warning(
            "REDIS_URL is not set: sessions live in memory, are lost on restart "
            "and are not shared between processes"
        )
        return MemoryStore(clock=clock, topic_ttl=topic_ttl)
    return RedisStore.from_url(redis_url, clock=clock, topic_ttl=topic_ttl)
