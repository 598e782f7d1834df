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

/// Counts one failure in the hash `KEYS[1]` (`failures`, `penalty_ms`) and stores the new
/// penalty, `base × 2^(n-1)` capped at max, computed step by step exactly like
/// `PenaltyPolicy::penalty_after`. The hash expires a window after this failure.
///
/// `ARGV`: base ms, max ms, window ms. Returns the new penalty in ms.
pub(super) const RECORD_FAILURE: &str = r"
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local max = tonumber(ARGV[2])
local penalty = math.min(tonumber(ARGV[1]), max)
local step = 1
while step < failures and penalty > 0 and penalty < max do
    penalty = math.min(penalty * 2, max)
    step = step + 1
end
redis.call('HSET', KEYS[1], 'penalty_ms', string.format('%.0f', penalty))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return penalty
";
