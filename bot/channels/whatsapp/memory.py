"""What the WhatsApp channel remembers per customer: when they last wrote (the 24-hour customer
service window) and the pages of a long option list ("más opciones") until they answer.

Two stores behind one small interface: ``LocalMemory`` (this process, bounded: the least
recently seen customers are forgotten) and ``RedisMemory`` (shared by every process, so any
process serves "más opciones" and knows the window). Redis keys, a kind of their own::

    wispbot:wa:window:{chat_id}   when the customer last wrote (epoch seconds; 0 = known closed),
                                  kept two windows long, then unknown (Graph decides)
    wispbot:wa:pages:{chat_id}    the paged list (JSON), kept a day at most
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Protocol, TypeVar

import orjson
from cachetools import LRUCache
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.channels.whatsapp.render import Pages
from flows.types import Option

WINDOW_SECONDS = 24 * 3600
# Per-customer memory of one process, bounded: the least recently seen customers are forgotten
# (their window is then unknown, and Graph decides; a forgotten paged list is re-prompted).
WINDOWS_KEPT = 50_000
PAGED_KEPT = 5_000
WINDOW_KEY_SECONDS = 2 * WINDOW_SECONDS
PAGES_KEY_SECONDS = 24 * 3600
Paged = tuple[str, Pages]  # a list's body and its pages
_T = TypeVar("_T")

log = logging.getLogger("bot.channels.whatsapp")


class ChatMemory(Protocol):
    """Per-customer memory of the WhatsApp channel."""

    async def wrote(self, chat: str, at: float) -> None:
        """The customer wrote at ``at`` (epoch seconds; an older time never replaces a newer)."""
        ...

    async def closed(self, chat: str) -> None:
        """Graph refused: the window is known closed until the customer writes again."""
        ...

    async def last_wrote(self, chat: str) -> float | None:
        """When the customer last wrote (0 when known closed), None when not known."""
        ...

    async def keep_pages(self, chat: str, paged: Paged | None) -> None:
        """Keep a list's pages for the "more" rows (None: forget them)."""
        ...

    async def pages(self, chat: str) -> Paged | None:
        """The pages kept for a chat, if any."""
        ...


class LocalMemory:
    """This process's memory (the demo, a single process, tests)."""

    def __init__(self, windows_kept: int = WINDOWS_KEPT, paged_kept: int = PAGED_KEPT) -> None:
        self.windows: LRUCache[str, float] = LRUCache(maxsize=windows_kept)
        self.paged: LRUCache[str, Paged] = LRUCache(maxsize=paged_kept)

    async def wrote(self, chat: str, at: float) -> None:
        """See ``ChatMemory``."""
        self.windows[chat] = max(at, self.windows.get(chat, at))

    async def closed(self, chat: str) -> None:
        """See ``ChatMemory``."""
        self.windows[chat] = 0.0

    async def last_wrote(self, chat: str) -> float | None:
        """See ``ChatMemory``."""
        return self.windows.get(chat)

    async def keep_pages(self, chat: str, paged: Paged | None) -> None:
        """See ``ChatMemory``."""
        if paged is None:
            self.paged.pop(chat, None)
        else:
            self.paged[chat] = paged

    async def pages(self, chat: str) -> Paged | None:
        """See ``ChatMemory``."""
        return self.paged.get(chat)


# Keeps the later of two times in one step (two processes may note one customer at once).
_WROTE = """
local old = tonumber(redis.call('get', KEYS[1]))
local at = tonumber(ARGV[1])
if old == nil or old < at then
  redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('expire', KEYS[1], ARGV[2])
end
return 1
"""


def window_key(chat: str) -> str:
    """``wispbot:wa:window:{chat_id}``."""
    return f"wispbot:wa:window:{chat}"


def pages_key(chat: str) -> str:
    """``wispbot:wa:pages:{chat_id}``."""
    return f"wispbot:wa:pages:{chat}"


async def _or(default: _T, call: Awaitable[_T], what: str) -> _T:
    """The call's result; ``default`` when Redis fails (a window unknown, pages not kept: the
    reply still goes out, Graph decides, a stray "more" press is re-prompted)."""
    try:
        return await call
    except RedisError as err:
        log.warning(
            "whatsapp memory unavailable", extra={"what": what, "error": type(err).__name__}
        )
        return default


class RedisMemory:
    """The memory in Redis, shared by every process of the service."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._wrote = redis.register_script(_WROTE)

    async def wrote(self, chat: str, at: float) -> None:
        """See ``ChatMemory``."""
        call = self._wrote(keys=[window_key(chat)], args=[repr(at), WINDOW_KEY_SECONDS])
        await _or(None, call, "wrote")

    async def closed(self, chat: str) -> None:
        """See ``ChatMemory``."""
        await _or(None, self.redis.set(window_key(chat), "0", ex=WINDOW_KEY_SECONDS), "closed")

    async def last_wrote(self, chat: str) -> float | None:
        """See ``ChatMemory``."""
        raw = await _or(None, self.redis.get(window_key(chat)), "window")
        return None if raw is None else float(raw)

    async def keep_pages(self, chat: str, paged: Paged | None) -> None:
        """See ``ChatMemory``."""
        if paged is None:
            await _or(0, self.redis.delete(pages_key(chat)), "pages")
            return
        body, pages = paged
        data = {"body": body, "pages": [[[o.id, o.label] for o in page] for page in pages]}
        call = self.redis.set(pages_key(chat), orjson.dumps(data), ex=PAGES_KEY_SECONDS)
        await _or(None, call, "pages")

    async def pages(self, chat: str) -> Paged | None:
        """See ``ChatMemory``."""
        raw = await _or(None, self.redis.get(pages_key(chat)), "pages")
        if raw is None:
            return None
        data = orjson.loads(raw)
        pages = [tuple(Option(str(i), str(label)) for i, label in page) for page in data["pages"]]
        return str(data["body"]), pages
