"""Lua scripts of the Redis ClusterState: each join, leave and share change is one atomic script on one slot.

Every key a script touches is passed in KEYS, and all keys of one call are in one slot (see the layout in
``hub.state.redis``): an app's scripts touch only keys tagged ``{p:a}``, the liveness scripts only keys
tagged ``{p:#nodes}``. Scripts that work on several share fields at once (drain, resync) are told the
fields by the client, which read them first; for each presence field the client passes the channel's
presence and members keys and the field names the index of its presence key in KEYS (members follows).
The scripts are run through ``hub.state.redis_scripts``, whose shebang lets Redis 7 refuse any key of
another slot.

Epochs: a node's epoch (Redis ms clock, strictly increasing per node) is recorded in ``{p:#nodes}:epochs``
when it resyncs, and in ``{p:a}:node:<n>:epoch`` before it first writes a share of app ``a`` in that epoch.
A reaper drains app ``a`` of node ``n`` only while that app epoch is not newer than the epoch it read when
it claimed ``n``: a node that came back and resynced has a newer one, and its rebuilt share is left alone.
"""

from __future__ import annotations

# Shared helpers, prepended to the scripts that need them.
_HELPERS = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Epochs are ms timestamps: print them as integers, never as 1.7e+12.
local function int(n)
  return string.format('%d', n)
end

-- Add delta to a node's share field without going below zero; return the delta actually applied.
local function share_add(share, field, delta)
  local n = tonumber(redis.call('HGET', share, field) or '0')
  local new = n + delta
  if new < 0 then
    delta = -n
    new = 0
  end
  if new == 0 then
    redis.call('HDEL', share, field)
  elseif delta ~= 0 then
    redis.call('HSET', share, field, new)
  end
  return delta
end

-- Add delta to a total kept in a hash field, removing the field at zero; return the new total.
local function total_add(key, field, delta)
  if delta == 0 then
    return tonumber(redis.call('HGET', key, field) or '0')
  end
  local t = redis.call('HINCRBY', key, field, delta)
  if t <= 0 then
    redis.call('HDEL', key, field)
    return 0
  end
  return t
end

-- Same for a total kept in a plain string key.
local function counter_add(key, delta)
  if delta == 0 then
    return tonumber(redis.call('GET', key) or '0')
  end
  local t = redis.call('INCRBY', key, delta)
  if t <= 0 then
    redis.call('DEL', key)
    return 0
  end
  return t
end

-- A presence share field is "channel\nuser" (channel names have no newline; user ids may have anything).
local function user_of(field)
  local i = string.find(field, '\n', 1, true)
  return string.sub(field, i + 1)
end

-- A write issued before the node's share was last rewritten (a resync raises the app epoch) is already
-- part of that rewrite, or was dropped from it with its socket: applying it now would count it twice.
local function stale(epoch_key, epoch)
  return tonumber(redis.call('GET', epoch_key) or '0') > tonumber(epoch)
end

-- Raise the app epoch of a node's share to at least e (never lower it: a late call of an older epoch
-- must not reopen a rebuilt share to a reaper).
local function raise_epoch(key, e)
  if tonumber(redis.call('GET', key) or '0') < tonumber(e) then
    redis.call('SET', key, e)
  end
end
"""

# Every share write below also gets the node's app epoch key as its last KEYS entry and the epoch the
# node issued it in as its last ARGV entry; a stale write (see ``stale``) changes nothing and answers as if
# it had been applied before the rewrite.

# KEYS: app conns total, node conns share (string). ARGV: limit (-1 = none). Returns 1 if counted, 0 if full.
ADD_CONNECTION = (
    _HELPERS
    + r"""
if stale(KEYS[3], ARGV[2]) then
  return 1
end
local limit = tonumber(ARGV[1])
if limit >= 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= limit then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('INCR', KEYS[2])
return 1
"""
)

# Same keys; a node holding no socket of the app changes nothing.
REMOVE_CONNECTION = (
    _HELPERS
    + r"""
if stale(KEYS[3], ARGV[1]) then
  return 0
end
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
if n <= 0 then
  return 0
end
if n == 1 then
  redis.call('DEL', KEYS[2])
else
  redis.call('DECR', KEYS[2])
end
counter_add(KEYS[1], -1)
return 1
"""
)

# KEYS: app channels total, node channels share. ARGV: channel. Returns the total after.
JOIN_CHANNEL = (
    _HELPERS
    + r"""
if stale(KEYS[3], ARGV[2]) then
  return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""
)

# Same keys and args; a node that holds no socket of the channel changes nothing. Returns the total after.
LEAVE_CHANNEL = (
    _HELPERS
    + r"""
if stale(KEYS[3], ARGV[2]) then
  return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
end
return total_add(KEYS[1], ARGV[1], share_add(KEYS[2], ARGV[1], -1))
"""
)

# KEYS: presence counts, members info, node presence share. ARGV: user, info JSON, max members, share field.
# Returns {accepted, first, members as a flat user/info list}.
JOIN_PRESENCE = (
    _HELPERS
    + r"""
if stale(KEYS[4], ARGV[5]) then
  return {1, 0, redis.call('HGETALL', KEYS[2])}
end
local first = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
if first then
  local max = tonumber(ARGV[3])
  if max >= 0 and redis.call('HLEN', KEYS[1]) >= max then
    return {0, 0, redis.call('HGETALL', KEYS[2])}
  end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
return {1, first and 1 or 0, redis.call('HGETALL', KEYS[2])}
"""
)

# Same keys; ARGV: user, share field. Returns 1 when the user's last socket in the cluster left.
LEAVE_PRESENCE = (
    _HELPERS
    + r"""
if stale(KEYS[4], ARGV[3]) then
  return 0
end
local delta = share_add(KEYS[3], ARGV[2], -1)
if delta == 0 then
  return 0
end
if total_add(KEYS[1], ARGV[1], delta) == 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
)

# KEYS: app users total, node users share. ARGV: user. Returns 1 when it is the user's first socket.
USER_SIGNED_IN = (
    _HELPERS
    + r"""
if stale(KEYS[3], ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1) == 1 and 1 or 0
"""
)

# Same keys and args. Returns 1 when it was the user's last signed-in socket in the cluster.
USER_SIGNED_OUT = (
    _HELPERS
    + r"""
if stale(KEYS[3], ARGV[2]) then
  return 0
end
local delta = share_add(KEYS[2], ARGV[1], -1)
if delta == 0 then
  return 0
end
return total_add(KEYS[1], ARGV[1], delta) == 0 and 1 or 0
"""
)

# KEYS: the node's app epoch key. ARGV: the node's epoch. Run (with SADD of the app to the node's app
# index) before the node's first share write of the app in an epoch.
REGISTER_APP = (
    _HELPERS
    + r"""
raise_epoch(KEYS[1], ARGV[1])
return 1
"""
)

# KEYS: alive zset. ARGV: node. Returns 1 if the node was registered, 0 if it had been reaped (or lost).
HEARTBEAT = (
    _HELPERS
    + r"""
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
return known and 1 or 0
"""
)

# KEYS: alive zset, reaping zset, epochs hash. ARGV: silence ms, own node id, stale claim ms.
# Moves nodes silent for longer than silence into reaping, plus nodes whose earlier reaping was abandoned
# (a reaper that died midway), and returns them with their epochs: {node, epoch, node, epoch, ...}. A node
# without a recorded epoch (lost with a Redis failover) is claimed at the current time, which is older than
# any epoch it can take later.
CLAIM_DEAD = (
    _HELPERS
    + r"""
local now = now_ms()
local claimed = {}
local function claim(node)
  redis.call('ZADD', KEYS[2], now, node)
  table.insert(claimed, node)
  table.insert(claimed, redis.call('HGET', KEYS[3], node) or int(now))
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))) do
  if node ~= ARGV[2] then
    redis.call('ZREM', KEYS[1], node)
    claim(node)
  end
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[3])))) do
  if node ~= ARGV[2] then
    claim(node)
  end
end
return claimed
"""
)

# KEYS: alive zset, reaping zset, epochs hash. ARGV: own node id, own epoch.
# Marks this node's share as being withdrawn; returns the epoch to drain it at.
CLAIM_SELF = (
    _HELPERS
    + r"""
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now_ms(), ARGV[1])
local e = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
return int(math.max(e, tonumber(ARGV[2])))
"""
)

# KEYS: the node's app epoch, app totals (conns, channels, users), the node's shares of the app (conns,
# channels, presence, users), then presence/members key pairs.
# ARGV: claimed epoch, then count + channels, count + (presence field, index of its presence key) pairs,
# count + users: share fields the client read. Each named field is re-read here and removed with its
# count subtracted from the total; the conns share is always drained.
# Returns {-1} if the node resynced this app since the claim (newer app epoch: leave it), else
# {empty, {channel, total after, ...}, {channel, user, ...} members removed, {user, ...} gone offline} where
# empty is 1 once every share of the app is gone (the app epoch key is then removed too).
DRAIN_APP = (
    _HELPERS
    + r"""
if tonumber(redis.call('GET', KEYS[1]) or '0') > tonumber(ARGV[1]) then
  return {-1}
end
local n = tonumber(redis.call('GET', KEYS[5]) or '0')
redis.call('DEL', KEYS[5])
if n > 0 then
  counter_add(KEYS[2], -n)
end
local at = 2
local channels, members, users = {}, {}, {}
for _ = 1, tonumber(ARGV[at]) do
  at = at + 1
  local ch = ARGV[at]
  local c = tonumber(redis.call('HGET', KEYS[6], ch) or '0')
  if c > 0 then
    redis.call('HDEL', KEYS[6], ch)
    table.insert(channels, ch)
    table.insert(channels, total_add(KEYS[3], ch, -c))
  end
end
at = at + 1
for _ = 1, tonumber(ARGV[at]) do
  local field, k = ARGV[at + 1], tonumber(ARGV[at + 2])
  at = at + 2
  local c = tonumber(redis.call('HGET', KEYS[7], field) or '0')
  if c > 0 then
    redis.call('HDEL', KEYS[7], field)
    local user = user_of(field)
    if total_add(KEYS[k], user, -c) == 0 then
      redis.call('HDEL', KEYS[k + 1], user)
      table.insert(members, field)
    end
  end
end
at = at + 1
for _ = 1, tonumber(ARGV[at]) do
  at = at + 1
  local user = ARGV[at]
  local c = tonumber(redis.call('HGET', KEYS[8], user) or '0')
  if c > 0 then
    redis.call('HDEL', KEYS[8], user)
    if total_add(KEYS[4], user, -c) == 0 then
      table.insert(users, user)
    end
  end
end
local empty = redis.call('HLEN', KEYS[6]) + redis.call('HLEN', KEYS[7]) + redis.call('HLEN', KEYS[8]) == 0
if empty then
  redis.call('DEL', KEYS[1])
end
return {empty and 1 or 0, channels, members, users}
"""
)

# KEYS: reaping zset, epochs hash, the node's app index set. ARGV: node, claimed epoch, then the apps drained.
# Ends a reaping or withdrawal: {-1} if the node resynced since the claim (its resync took over), {0, app,
# ...} with apps added to the index meanwhile (drain those, then call again), {1} when done (the node's
# liveness records are removed).
FINISH_DRAIN = (
    _HELPERS
    + r"""
local e = redis.call('HGET', KEYS[2], ARGV[1])
if e and tonumber(e) ~= tonumber(ARGV[2]) then
  return {-1}
end
local drained = {}
for i = 3, #ARGV do
  drained[ARGV[i]] = true
end
local missing = {0}
for _, app in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if not drained[app] then
    table.insert(missing, app)
  end
end
if #missing > 1 then
  return missing
end
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return {1}
"""
)

# KEYS: alive zset, reaping zset, epochs hash, the node's app index set. ARGV: node, then the apps of the
# snapshot. Starts a resync: a new epoch (Redis ms clock, above the node's last), the snapshot's apps in
# the index, any reaping of the node cancelled, the node alive. Returns {epoch, indexed app, ...}.
RESYNC_BEGIN = (
    _HELPERS
    + r"""
local node = ARGV[1]
local now = now_ms()
local e = int(math.max(now, tonumber(redis.call('HGET', KEYS[3], node) or '0') + 1))
redis.call('HSET', KEYS[3], node, e)
-- SADD in slices: unpack() of a huge table would overflow Lua's C stack.
local batch = {}
for i = 2, #ARGV do
  table.insert(batch, ARGV[i])
  if #batch >= 1000 then
    redis.call('SADD', KEYS[4], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then
  redis.call('SADD', KEYS[4], unpack(batch))
end
redis.call('ZREM', KEYS[2], node)
redis.call('ZADD', KEYS[1], now, node)
local out = {e}
for _, app in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  table.insert(out, app)
end
return out
"""
)

# KEYS: as DRAIN_APP (app epoch, totals, shares, presence/members pairs).
# ARGV: epoch, conns (-1 = leave as is), count + (channel, n), count + (presence field, key index, n, info
# JSON), count + (user, n). Sets each named share field to n, applying the difference to its total, and
# raises the app epoch: one batch of a resync, which names every field of the snapshot and every field
# of the old share that the snapshot lacks (n = 0). Transitions are not reported: the caller rebuilt its
# share from its sockets.
RESYNC_APP = (
    _HELPERS
    + r"""
raise_epoch(KEYS[1], ARGV[1])
local conns = tonumber(ARGV[2])
if conns >= 0 then
  local old = tonumber(redis.call('GET', KEYS[5]) or '0')
  if conns == 0 then
    redis.call('DEL', KEYS[5])
  else
    redis.call('SET', KEYS[5], conns)
  end
  counter_add(KEYS[2], conns - old)
end
local function set_field(share, field, n)
  local old = tonumber(redis.call('HGET', share, field) or '0')
  if n == 0 then
    redis.call('HDEL', share, field)
  else
    redis.call('HSET', share, field, n)
  end
  return n - old
end
local at = 3
for _ = 1, tonumber(ARGV[at]) do
  local ch, n = ARGV[at + 1], tonumber(ARGV[at + 2])
  at = at + 2
  total_add(KEYS[3], ch, set_field(KEYS[6], ch, n))
end
at = at + 1
for _ = 1, tonumber(ARGV[at]) do
  local field, k, n, info = ARGV[at + 1], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), ARGV[at + 4]
  at = at + 4
  local user = user_of(field)
  if total_add(KEYS[k], user, set_field(KEYS[7], field, n)) == 0 then
    redis.call('HDEL', KEYS[k + 1], user)
  elseif info ~= '' then
    redis.call('HSETNX', KEYS[k + 1], user, info)
  end
end
at = at + 1
for _ = 1, tonumber(ARGV[at]) do
  local user, n = ARGV[at + 1], tonumber(ARGV[at + 2])
  at = at + 2
  total_add(KEYS[4], user, set_field(KEYS[8], user, n))
end
return 1
"""
)

# KEYS: lock. ARGV: token. Deletes the lock only if we still hold it.
RELEASE_LOCK = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
