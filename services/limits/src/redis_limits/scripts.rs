//! The Lua scripts behind the Redis limits. Each touches exactly one key, so it runs on a
//! Redis Cluster whatever the key's slot.
//!
//! Time is Redis's own (`TIME`), never the caller's, so pods with skewed clocks agree on
//! when a slot lapses. (Redis 7 replicates a script's effects, not the script, so reading
//! the clock before writing is allowed.) Scores and expiries are Unix milliseconds; a
//! double holds them exactly, and `%.0f` writes them back without an exponent.

/// Opens a slot in the sorted set `KEYS[1]` (member = token, score = expiry in ms) unless
/// `ARGV[1]` (max) live members exist. Lapsed members are pruned first, so a dead pod's
/// slots stop counting at their expiry. The key itself expires with its latest member, so
/// a set nobody touches again disappears.
///
/// `ARGV`: max, ttl in ms, token. Returns 1 if opened, 0 at the cap.
pub(super) const OPEN_SLOT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[3])
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], latest[2])
return 1
";

/// Moves a live slot's expiry to `ttl` from now; a lapsed or closed slot is not brought
/// back.
///
/// `ARGV`: ttl in ms, token. Returns 1 if refreshed, 0 if the slot was gone.
pub(super) const REFRESH_SLOT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + tonumber(ARGV[1])), ARGV[2])
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], latest[2])
return 1
";

/// Asks the attempts hash `KEYS[1]` (`count`, `next_ms`: the earliest turn of the next
/// attempt, Unix ms) for a turn, as `InProcessLimits` does (see `crate::throttle`). A quiet
/// window (the key expired) starts afresh. A turn further out than max wait is refused and
/// nothing changes; otherwise the attempt is counted, the next turn moves `spacing` past this
/// one (`base × 2^(k-1)` for the k-th attempt at or beyond the free ones, capped at max, computed
/// step by step exactly like `ThrottlePolicy::spacing_after`), and the hash expires a window
/// after this turn.
///
/// `ARGV`: free attempts, base ms, max ms, window ms, max wait ms. Returns `{1, wait_ms}`
/// when admitted, `{0, retry_after_ms}` when refused.
pub(super) const ADMIT_ATTEMPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
local turn = math.max(now, tonumber(redis.call('HGET', KEYS[1], 'next_ms') or '0'))
local wait = turn - now
if wait > tonumber(ARGV[5]) then
    return {0, wait}
end
count = count + 1
local beyond = count - math.max(tonumber(ARGV[1]), 1) + 1
local max = tonumber(ARGV[3])
local spacing = 0
if beyond > 0 then
    spacing = math.min(tonumber(ARGV[2]), max)
    local step = 1
    while step < beyond and spacing > 0 and spacing < max do
        spacing = math.min(spacing * 2, max)
        step = step + 1
    end
end
redis.call('HSET', KEYS[1], 'count', count, 'next_ms', string.format('%.0f', turn + spacing))
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', turn + tonumber(ARGV[4])))
return {1, wait}
";

/// Takes back one counted attempt of the attempts hash `KEYS[1]`, if it exists; its expiry
/// and next turn stay.
///
/// Returns the count left.
pub(super) const REFUND_ATTEMPT: &str = r"
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
if count > 0 then
    count = count - 1
    redis.call('HSET', KEYS[1], 'count', count)
end
return count
";
