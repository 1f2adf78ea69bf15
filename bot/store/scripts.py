"""The Lua scripts of the Redis store: each one step of the turn gate, run atomically."""

# The conversation's line (``wispbot:lock:{conv}:queue``, a list of tokens) holds every turn of
# the conversation from its arrival to its end, in arrival order: its head is the turn whose
# time it is. The lock key holds the head's token with a short lease that its process renews;
# only the head may take a free lock, so a holder that lapsed (its process died, or Redis was
# down) keeps its place: nobody runs a later message first. A token names its process
# (``{process}.{random}.j{event}``, or ``.n`` for a turn no journal keeps), and each
# process keeps ``wispbot:alive:{process}`` alive while it runs: a token whose process key lapsed
# while Redis was up belongs to a dead process. Its journalled turns are taken over in their
# places by another process (``take_orphans``); its other places (an agent's message, a turn
# whose outcome is saved) are passed over. Every write of a turn checks that its token still
# owns the conversation (fencing): a turn whose place was taken over saves nothing.
OWNERSHIP = """
local function alive(token)
    local process = string.match(token, '^([^.]+)%.')
    if not process then
        return true
    end
    return redis.call('exists', 'wispbot:alive:' .. process) == 1
end
local function settled(uptime)
    local up = string.match(redis.call('info', 'server'), 'uptime_in_seconds:(%d+)')
    return tonumber(up) >= tonumber(uptime)
end
local function owns(lock, queue, token)
    if redis.call('lindex', queue, 0) ~= token then
        return false
    end
    local holder = redis.call('get', lock)
    return (not holder) or holder == token
end
local function hand_off(lock, queue, lease)
    local nxt = redis.call('lindex', queue, 0)
    if nxt then
        redis.call('set', lock, nxt, 'PX', lease)
    else
        redis.call('del', lock)
    end
end
local function release(lock, queue, token, lease)
    if owns(lock, queue, token) then
        redis.call('lpop', queue)
        hand_off(lock, queue, lease)
        return 1
    end
    redis.call('lrem', queue, 0, token)
    return 0
end
local function take(lock, conv, token, lease)
    redis.call('set', lock, token, 'PX', lease)
    local session = redis.call('get', conv)
    if session then
        return {1, session}
    end
    return {1}
end
"""

# KEYS: lock, queue; ARGV: token, lease ms for the next holder.
RELEASE = (
    OWNERSHIP
    + """
return release(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
"""
)

# Join the line and, at its head, take the lock and read the session in the same round trip.
# KEYS: lock, session, queue, process key; ARGV: token, lease ms, process key lease ms.
ACQUIRE_LOAD = (
    OWNERSHIP
    + """
redis.call('set', KEYS[4], 1, 'PX', ARGV[3])
redis.call('rpush', KEYS[3], ARGV[1])
redis.call('persist', KEYS[3])  -- (a line of an older version had a TTL)
if owns(KEYS[1], KEYS[3], ARGV[1]) then
    return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
end
return {0}
"""
)

# A waiter's poll. KEYS: lock, session, queue, journal; ARGV: token, lease ms, uptime s, the
# conversation as in journal fields. At the head: take the lock, read the session. A dead
# process's head that no journal entry keeps (an agent's message, a turn whose outcome is saved
# with its outbox), its lock lapsed, is passed over. -1: this place is gone (taken over: this
# process was taken for dead).
WAIT_TURN = (
    OWNERSHIP
    + """
if owns(KEYS[1], KEYS[3], ARGV[1]) then
    return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
end
if not redis.call('lpos', KEYS[3], ARGV[1]) then
    return {-1}
end
local head = redis.call('lindex', KEYS[3], 0)
local event = string.match(head, '^[^.]+%.[^.]+%.j(.*)$')
local kept = event and redis.call('hexists', KEYS[4], ARGV[4] .. '|' .. event) == 1
if redis.call('exists', KEYS[1]) == 0 and not kept and not alive(head) and settled(ARGV[3]) then
    redis.call('lpop', KEYS[3])
    hand_off(KEYS[1], KEYS[3], ARGV[2])
    if owns(KEYS[1], KEYS[3], ARGV[1]) then
        return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
    end
end
return {0}
"""
)

# A waiter leaving for good (cancelled): its place, and the lock if it was handed over.
# KEYS: lock, queue; ARGV: token, lease ms.
LEAVE = RELEASE

# A waiter giving up. KEYS: lock, queue; ARGV: token. 1 when it is at the head after all (it
# takes the lock), else it leaves the line.
ABANDON = (
    OWNERSHIP
    + """
if owns(KEYS[1], KEYS[2], ARGV[1]) then
    return 1
end
redis.call('lrem', KEYS[2], 0, ARGV[1])
return 0
"""
)

# Open a customer's turn in one round trip: claim the event (its mark holds the turn's token; a
# repeat stops here), count it in the conversation's rate window, and within the limit write
# the event in the journal of turns in flight, take a place in the line and, at its head, the
# lock, reading the session. The same call again (its answer was lost: Redis went down) finds
# its own mark and answers where the turn stands.
# KEYS: seen mark, rate counter, lock, session, queue, journal, process key; ARGV: seen TTL,
# window, limit, token, lease ms, process key lease ms, journal field, journal entry ('' none).
OPEN_TURN = (
    OWNERSHIP
    + """
local function placed(hits)
    if owns(KEYS[3], KEYS[5], ARGV[4]) then
        local taken = take(KEYS[3], KEYS[4], ARGV[4], ARGV[5])
        return {1, hits, 1, taken[2]}
    end
    if redis.call('lpos', KEYS[5], ARGV[4]) then
        return {1, hits, 0, false, 1}
    end
    return {1, math.max(hits, tonumber(ARGV[3]) + 2), 0}
end
local seen = redis.call('get', KEYS[1])
if seen then
    if seen ~= ARGV[4] then
        return {0, 0, 0}
    end
    return placed(tonumber(redis.call('get', KEYS[2]) or '1'))
end
redis.call('set', KEYS[1], ARGV[4], 'EX', ARGV[1])
redis.call('set', KEYS[2], 0, 'EX', ARGV[2], 'NX')
local hits = redis.call('incr', KEYS[2])
if hits > tonumber(ARGV[3]) then
    return {1, hits, 0}
end
if ARGV[8] ~= '' then
    redis.call('hset', KEYS[6], ARGV[7], ARGV[8])
    redis.call('expire', KEYS[6], ARGV[9])
end
redis.call('set', KEYS[7], 1, 'PX', ARGV[6])
redis.call('rpush', KEYS[5], ARGV[4])
-- A backstop, not a timer: a line lives as long as its turns (seconds); the TTL (renewed by
-- each arrival) only clears a line a crash left with nobody to pass its dead head over.
redis.call('expire', KEYS[5], ARGV[9])
return placed(hits)
"""
)

# A save of a turn (fenced): only while its token owns the conversation; the lease is renewed
# (taken again after a Redis restart). With a journal field, the save makes the turn's outcome
# durable: it leaves the journal. KEYS: session, lock, queue, journal; ARGV: session, TTL,
# token, lease ms, journal field ('' none). 0: not the owner, nothing saved.
SAVE_DONE = (
    OWNERSHIP
    + """
if not owns(KEYS[2], KEYS[3], ARGV[3]) then
    return 0
end
redis.call('set', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[5] ~= '' then
    redis.call('hdel', KEYS[4], ARGV[5])
end
return 1
"""
)

# Close a turn in one round trip (fenced): the final save, the turn out of the journal, then the
# release to the next in line. Same KEYS and ARGV as SAVE_DONE. 0: not the owner.
SAVE_RELEASE = (
    OWNERSHIP
    + """
if not owns(KEYS[2], KEYS[3], ARGV[3]) then
    return 0
end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[5] ~= '' then
    redis.call('hdel', KEYS[4], ARGV[5])
end
return release(KEYS[2], KEYS[3], ARGV[3], ARGV[4])
"""
)

# Take over a dead process's place in a line, once Redis has been up long enough for every live
# process to have renewed its key. With its journal entry (unchanged since it was read): the
# place gets the new token, the entry the new one (2 when at the head: the lock is taken too;
# 1 waiting). Without one, or with an empty new entry (tried twice already), the place is
# removed and the lock passed on (3). 0: nothing done (alive after all, or taken by another).
# KEYS: queue, lock, journal; ARGV: old token, new token, journal field ('' none), entry read,
# new entry ('' drop), lease ms, uptime s.
ADOPT = (
    OWNERSHIP
    + """
if not settled(ARGV[7]) or alive(ARGV[1]) then
    return 0
end
local pos = redis.call('lpos', KEYS[1], ARGV[1])
if not pos then
    return 0
end
if ARGV[3] ~= '' and ARGV[5] ~= '' and redis.call('hget', KEYS[3], ARGV[3]) == ARGV[4] then
    redis.call('lset', KEYS[1], pos, ARGV[2])
    redis.call('hset', KEYS[3], ARGV[3], ARGV[5])
    if pos == 0 then
        redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[6])
        return 2
    end
    return 1
end
if ARGV[3] ~= '' and ARGV[5] == '' then
    redis.call('hdel', KEYS[3], ARGV[3])
end
redis.call('lrem', KEYS[1], 1, ARGV[1])
if pos == 0 then
    hand_off(KEYS[2], KEYS[1], ARGV[6])
end
return 3
"""
)

# A session to a new key (the customer's number changed), unless the new key has one already.
# KEYS: old session, new session. 1 when moved.
MOVE = """
if redis.call('exists', KEYS[1]) == 0 then
    return 0
end
return redis.call('renamenx', KEYS[1], KEYS[2])
"""

# Take a journal entry that has no place in its line (its turn ended without saving, e.g. the
# store stayed down past the engine's retries): it is handled again as a new event, so its
# dedupe mark goes. KEYS: journal, queue, seen mark; ARGV: journal field, entry read, ticket.
TAKE_ORPHAN = """
if redis.call('lpos', KEYS[2], ARGV[3]) or redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then
    return 0
end
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('del', KEYS[3])
return 1
"""

# Renew the lease of every lock whose token still owns its conversation (KEYS: lock, queue,
# lock, queue, ...; ARGV: token, lease ms, token, ...).
RENEW = (
    OWNERSHIP
    + """
local kept = {}
for i = 1, #KEYS / 2 do
    if owns(KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 * i - 1]) then
        redis.call('set', KEYS[2 * i - 1], ARGV[2 * i - 1], 'PX', ARGV[2 * i])
        kept[i] = 1
    else
        kept[i] = 0
    end
end
return kept
"""
)

# Keep an event for the next process. KEYS: inbox; ARGV: the event, the inbox's TTL.
PUSH_INBOX = """
redis.call('rpush', KEYS[1], ARGV[1])
redis.call('expire', KEYS[1], ARGV[2])
"""

# One round trip: start the window (SET NX EX keeps an existing window's end), then count.
WINDOW_INCR = """
redis.call('set', KEYS[1], 0, 'EX', ARGV[1], 'NX')
return redis.call('incr', KEYS[1])
"""
