"""Lua scripts of the Redis ClusterState: each join, leave and share removal is one atomic script.

Layout they rely on (``{p}`` = prefix, ``{a}`` = app id, ``{n}`` = node id; see ``hub.state.redis``):

- totals, cluster-wide: ``{p}:{a}:conns`` (string), ``{p}:{a}:channels`` (hash channel -> sockets),
  ``{p}:{a}:presence:{channel}`` (hash user -> sockets), ``{p}:{a}:members:{channel}`` (hash user -> info
  JSON), ``{p}:{a}:users`` (hash user -> signed-in sockets);
- each node's share of those totals: ``{p}:#node:{n}:conns`` (app -> n), ``…:channels`` ("app\\nchannel"
  -> n), ``…:presence`` ("app\\nchannel\\nuser" -> n), ``…:users`` ("app\\nuser" -> n). A total is always
  the sum of the shares, so removing a node means subtracting its share: no SCAN, no per-node fields
  to hunt for. User ids may contain anything, so they come last in a share field.
- ``{p}:#nodes`` (zset node -> last heartbeat, Redis time in ms) and ``{p}:#reaping`` (zset node -> claim
  time) for nodes whose share is being removed.

Scripts that build keys themselves (draining and resync) take the prefix as ARGV[1]; this is fine on a
single Redis or Sentinel setup, not on Redis Cluster.
"""

from __future__ import annotations

# Shared helpers, prepended to the scripts that need them.
_HELPERS = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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

local function split2(f)
  local i = string.find(f, '\n', 1, true)
  return string.sub(f, 1, i - 1), string.sub(f, i + 1)
end

local function split3(f)
  local a, rest = split2(f)
  local b, c = split2(rest)
  return a, b, c
end
"""

# Key builders for the scripts that derive keys from share fields; must match hub.state.redis.
_KEYS = r"""
local P = ARGV[1]
local function k_conns(app) return P .. ':' .. app .. ':conns' end
local function k_channels(app) return P .. ':' .. app .. ':channels' end
local function k_presence(app, ch) return P .. ':' .. app .. ':presence:' .. ch end
local function k_members(app, ch) return P .. ':' .. app .. ':members:' .. ch end
local function k_users(app) return P .. ':' .. app .. ':users' end
"""

# KEYS: app conns total, node conns share. ARGV: app id, limit (-1 = none). Returns 1 if counted, 0 if full.
ADD_CONNECTION = r"""
local limit = tonumber(ARGV[2])
if limit >= 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= limit then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""

# KEYS: app conns total, node conns share. ARGV: app id.
REMOVE_CONNECTION = (
    _HELPERS
    + r"""
counter_add(KEYS[1], share_add(KEYS[2], ARGV[1], -1))
return 0
"""
)

# KEYS: app channels total, node channels share. ARGV: channel, share field. Returns the total after.
JOIN_CHANNEL = r"""
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""

# Same keys and args; a node that holds no socket of the channel changes nothing. Returns the total after.
LEAVE_CHANNEL = (
    _HELPERS
    + r"""
return total_add(KEYS[1], ARGV[1], share_add(KEYS[2], ARGV[2], -1))
"""
)

# KEYS: presence counts, members info, node presence share. ARGV: user, info JSON, max members, share field.
# Returns {accepted, first, members as a flat user/info list}.
JOIN_PRESENCE = r"""
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

# Same keys; ARGV: user, share field. Returns 1 when the user's last socket in the cluster left.
LEAVE_PRESENCE = (
    _HELPERS
    + r"""
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

# KEYS: app users total, node users share. ARGV: user, share field. Returns 1 when it is the user's first socket.
USER_SIGNED_IN = r"""
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1) == 1 and 1 or 0
"""

# Same keys and args. Returns 1 when it was the user's last signed-in socket in the cluster.
USER_SIGNED_OUT = (
    _HELPERS
    + r"""
local delta = share_add(KEYS[2], ARGV[2], -1)
if delta == 0 then
  return 0
end
return total_add(KEYS[1], ARGV[1], delta) == 0 and 1 or 0
"""
)

# KEYS: nodes zset, reaping zset. ARGV: node. Returns 1 if the node was registered, 0 if it had been reaped.
HEARTBEAT = (
    _HELPERS
    + r"""
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
return known and 1 or 0
"""
)

# KEYS: nodes zset, reaping zset. ARGV: silence ms, own node id, stale claim ms.
# Moves nodes silent for longer than silence into reaping and returns them, plus nodes whose earlier reaping
# was abandoned (a reaper that died midway) so their leftovers are finished.
CLAIM_DEAD = (
    _HELPERS
    + r"""
local now = now_ms()
local claimed = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))) do
  if node ~= ARGV[2] then
    redis.call('ZREM', KEYS[1], node)
    redis.call('ZADD', KEYS[2], now, node)
    table.insert(claimed, node)
  end
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[3])))) do
  if node ~= ARGV[2] then
    redis.call('ZADD', KEYS[2], now, node)
    table.insert(claimed, node)
  end
end
return claimed
"""
)

# KEYS: nodes zset, reaping zset. ARGV: own node id. Marks this node's share as being withdrawn.
CLAIM_SELF = (
    _HELPERS
    + r"""
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now_ms(), ARGV[1])
return 1
"""
)

# KEYS: reaping zset, the node's share of one kind. ARGV: prefix, node, kind, batch size.
# Removes up to about batch-size fields of the share and subtracts them from the totals. Returns
# {-1} if the claim was cancelled (the node came back and resynced), {0} when the share is empty, else
# {1, ...transitions}: channels: app, channel, total after (per field); presence: app, channel, user (per
# member removed); users: app, user (per user gone offline); conns: nothing.
DRAIN_SHARE = (
    _HELPERS
    + _KEYS
    + r"""
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  return {-1}
end
if redis.call('HLEN', KEYS[2]) == 0 then
  return {0}
end
local kind = ARGV[3]
local cursor = '0'
local fields
repeat
  local scan = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', tonumber(ARGV[4]))
  cursor = scan[1]
  fields = scan[2]
until #fields > 0 or cursor == '0'
local out = {1}
for i = 1, #fields, 2 do
  local field = fields[i]
  local n = tonumber(fields[i + 1])
  redis.call('HDEL', KEYS[2], field)
  if kind == 'conns' then
    counter_add(k_conns(field), -n)
  elseif kind == 'channels' then
    local app, ch = split2(field)
    local t = total_add(k_channels(app), ch, -n)
    table.insert(out, app)
    table.insert(out, ch)
    table.insert(out, t)
  elseif kind == 'presence' then
    local app, ch, user = split3(field)
    if total_add(k_presence(app, ch), user, -n) == 0 then
      redis.call('HDEL', k_members(app, ch), user)
      table.insert(out, app)
      table.insert(out, ch)
      table.insert(out, user)
    end
  elseif kind == 'users' then
    local app, user = split2(field)
    if total_add(k_users(app), user, -n) == 0 then
      table.insert(out, app)
      table.insert(out, user)
    end
  end
end
return out
"""
)

# KEYS: reaping zset, then the node's four share keys. ARGV: node. Ends a reaping or withdrawal once every
# share is empty (a socket may have joined meanwhile); returns 1 when done, 0 if the caller must drain again.
FINISH_DRAIN = r"""
for i = 2, #KEYS do
  if redis.call('HLEN', KEYS[i]) > 0 then
    return 0
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

# KEYS: nodes, reaping, then the node's shares: conns, channels, presence, users.
# ARGV: prefix, node, then per kind (conns, channels, presence, users) a count followed by that many
# entries: field and count (presence: field, count, info JSON).
# Replaces the node's whole share, applying only the differences to the totals, cancels any reaping of
# it and registers it alive. Transitions are not reported: the caller rebuilt the share from its sockets.
RESYNC = (
    _HELPERS
    + _KEYS
    + r"""
local node = ARGV[2]
redis.call('ZREM', KEYS[2], node)
local at = 3
local kinds = {'conns', 'channels', 'presence', 'users'}
for k = 1, 4 do
  local kind = kinds[k]
  local share = KEYS[k + 2]
  local old = {}
  local flat = redis.call('HGETALL', share)
  for i = 1, #flat, 2 do
    old[flat[i]] = tonumber(flat[i + 1])
  end
  local count = tonumber(ARGV[at])
  at = at + 1
  local new = {}
  local order = {}
  local infos = {}
  for _ = 1, count do
    local field = ARGV[at]
    new[field] = tonumber(ARGV[at + 1])
    table.insert(order, field)
    if kind == 'presence' then
      infos[field] = ARGV[at + 2]
      at = at + 3
    else
      at = at + 2
    end
  end
  local function apply(field, delta)
    if kind == 'conns' then
      counter_add(k_conns(field), delta)
    elseif kind == 'channels' then
      local app, ch = split2(field)
      total_add(k_channels(app), ch, delta)
    elseif kind == 'presence' then
      local app, ch, user = split3(field)
      if total_add(k_presence(app, ch), user, delta) == 0 then
        redis.call('HDEL', k_members(app, ch), user)
      elseif infos[field] then
        redis.call('HSETNX', k_members(app, ch), user, infos[field])
      end
    else
      local app, user = split2(field)
      total_add(k_users(app), user, delta)
    end
  end
  for _, field in ipairs(order) do
    apply(field, new[field] - (old[field] or 0))
    old[field] = nil
  end
  for field, n in pairs(old) do
    apply(field, -n)
  end
  redis.call('DEL', share)
  local pairs_out = {}
  for _, field in ipairs(order) do
    if new[field] > 0 then
      table.insert(pairs_out, field)
      table.insert(pairs_out, new[field])
    end
    -- HSET in slices: unpack() of a huge table would overflow Lua's C stack.
    if #pairs_out >= 1000 then
      redis.call('HSET', share, unpack(pairs_out))
      pairs_out = {}
    end
  end
  if #pairs_out > 0 then
    redis.call('HSET', share, unpack(pairs_out))
  end
end
redis.call('ZADD', KEYS[1], now_ms(), node)
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
