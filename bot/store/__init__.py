"""The store: sessions, the turn gate (locks, lines, journal, inbox), counters, the topic map and
the payment promises, in Redis or in memory. It imports only from flows (its vocabulary), nothing from the rest of bot.

Every key is built by ``redis_key`` (``wispbot:{kind}:{parts...}``)::

    wispbot:conv:{channel}:{chat_id}     the session JSON, idle TTL (SESSION_TTL)
    wispbot:lock:{channel}:{chat_id}     per-conversation lock: its owner's token, a short PX lease
                                         renewed while its holder works
    wispbot:lock:{channel}:{chat_id}:queue  the conversation's line of turns, oldest (the owner)
                                         first; a TTL of the journal's, renewed by each arrival
    wispbot:alive:{process}              a process's key, renewed while it runs (tells a dead
                                         process's turns from live ones)
    wispbot:seen:{channel}:{event_id}    dedupe of channel events, SET NX EX
    wispbot:topic:{thread_id}            agents' forum topic -> conversation key, an idle TTL
                                         (the store's ``topic_ttl``: SESSION_TTL) renewed on use
    wispbot:lockout:{scope}              failed verifications in a window (per document, per chat)
    wispbot:rate:{scope}                 fixed-window flood counter
    wispbot:turns:inflight               the journal of turns in flight (a hash); its TTL is
                                         renewed by each write and the sweep drops entries older
                                         than ``JOURNAL_MAX_AGE``
    wispbot:promise:{service_id}         a payment promise the bot registered (its date, its
                                         invoices), expiring at the end of the promised day
    wispbot:inbox:pending                events a stopping process kept (a list), TTL renewed by
                                         each push
    wispbot:relay:...                    the agents' outboxes (``bot.store.outbox``)
    wispbot:sub:..., wispbot:optout:..., wispbot:notice:..., wispbot:notify:...
                                         the notices' registry, dedupe marks and tick claims
                                         (``bot.store.subscriptions``)

Every key expires: none is written without a TTL, so nothing grows with the customers served.

The modules::

    session.py      the session codec (``Session``: one JSON value per conversation)
    keys.py         the key builder and the journal entries' codec
    interfaces.py   the narrow interfaces (``Sessions``, ``TurnGate``, ``Counters``, ``TopicMap``)
                    and ``SessionStore``, all of them at once
    lease.py        the lease keeper: the locks a store holds, renewed while their turns run
    scripts.py      the Lua scripts: each step of the turn gate, atomic in Redis
    connection.py   connecting: options, Sentinel URLs, hiredis command packing
    autopipe.py     commands of one event-loop tick leave together in one pipeline
    redis_core.py   the Redis store's client, pipeline and process key (``RedisCore``)
    redis_turns.py  ... the turn gate: load, fenced saves, the lock and its line (``RedisTurns``)
    redis_store.py  ... orphans, dedupe, inbox, counters, topics, scan (``RedisStore``)
    memory.py       the same behaviour in one process's memory (``MemoryStore``)
    outbox.py       the agents' relay outboxes (Redis and memory)
    subscriptions.py  the notices' registry: subscriptions, opt-outs, dedupe marks (issue 15)
    factory.py      ``make_store``: Redis for a URL, else memory

Two implementations pass one contract suite: ``RedisStore`` (the service) and ``MemoryStore``
(demo, console, scenarios, unit tests; TTLs follow an injected clock).

A customer's turn costs the Redis store three round trips: ``open_turn`` (dedupe claim, rate
count, lock, session read: one script), the save of the session with its outbox, and
``save_and_release`` (the final save and the unlock: one script). Commands that different
conversations issue in the same event-loop tick leave together in one pipeline
(``bot.store.autopipe``), so under load a trip carries many turns' commands. Errors::

    StoreError
     ├── StoreUnavailable   the backend did not answer (Redis down, timeout, connection lost)
     ├── LockTimeout        the conversation lock stayed busy for longer than ``wait``
     ├── LockLost           the turn's place was taken over (its process was taken for dead)
     └── SessionCorrupt     a stored session is not a readable session JSON
"""

from bot.store.connection import parse_sentinel_url
from bot.store.errors import LockLost, LockTimeout, SessionCorrupt, StoreError, StoreUnavailable
from bot.store.factory import make_store
from bot.store.interfaces import (
    Counters,
    Orphan,
    Promises,
    Sessions,
    SessionStore,
    TopicMap,
    TurnGate,
    TurnStart,
)
from bot.store.keys import (
    DEFAULT_TOPIC_TTL,
    INBOX_KEY,
    JOURNAL_KEY,
    JOURNAL_MAX_AGE,
    PREFIX,
    Clock,
    conv_key,
    promise_key,
    redis_key,
)
from bot.store.memory import MemoryStore
from bot.store.redis_store import RedisStore
from bot.store.session import Session

__all__ = [
    "DEFAULT_TOPIC_TTL",
    "INBOX_KEY",
    "JOURNAL_KEY",
    "JOURNAL_MAX_AGE",
    "PREFIX",
    "Clock",
    "Counters",
    "LockLost",
    "LockTimeout",
    "MemoryStore",
    "Orphan",
    "Promises",
    "RedisStore",
    "Session",
    "SessionCorrupt",
    "SessionStore",
    "Sessions",
    "StoreError",
    "StoreUnavailable",
    "TopicMap",
    "TurnGate",
    "TurnStart",
    "conv_key",
    "make_store",
    "parse_sentinel_url",
    "promise_key",
    "redis_key",
]
