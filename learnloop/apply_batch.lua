-- Apply one batch of interaction events to the Redis features, atomically with the
-- partition's watermark. Idempotent by offset: an event at or below the watermark was
-- applied before, so it changes nothing and its exposure snapshot is returned as stored.
--
-- KEYS[1]  watermark key of the source partition (last applied offset, never expires)
-- KEYS[2]  counters hash (events, exposures, duplicates, rejected:{reason}), exactly once
-- ARGV[1]  JSON: {half_lives, feature_ttl, snapshot_ttl, dedup_ttl, events: [...]}
--          event = {o=offset, id, t=event time, u=user, i=item or "", k=type,
--                   v=value or absent, x=1 if exposure}, or {o=offset, r=reason} for a
--          message that went to the dead-letter topic (it only advances the watermark)
-- Returns  the previous watermark, then a flat array of triples: offset, status,
--          snapshot JSON or "" —
--          "new" for an exposure applied now, "replay" for an exposure applied by an
--          earlier run (its stored snapshot), "dup" for a repeated event_id.
--
-- Decay is by event time and order-independent: every decayed field of a hash is
-- held as of the hash's reference time `t` (the newest event time applied); an
-- older event's increment is scaled down instead of the stored value.

local batch = cjson.decode(ARGV[1])
local half_lives = batch.half_lives
local applied = tonumber(redis.call('GET', KEYS[1]) or '-1')

local function fmt(x) return string.format('%.17g', x) end

local function is_decayed(field)
  return field ~= 't' and string.sub(field, 1, 5) ~= 'last|'
end

local function half_life_of(field)
  return tonumber(string.match(field, '|(%d+)$'))
end

-- Read a feature hash as a Lua table of numbers.
local function load(key)
  local flat = redis.call('HGETALL', key)
  local state = {}
  for n = 1, #flat, 2 do state[flat[n]] = tonumber(flat[n + 1]) end
  return state
end

-- The hash's fields as of time `at` (never earlier than its reference time).
local function as_of(state, at)
  local out = {}
  local ref = state['t']
  for field, value in pairs(state) do
    if ref and at > ref and is_decayed(field) then
      value = value * math.pow(2, -(at - ref) / half_life_of(field))
    end
    out[field] = value
  end
  if ref and at > ref then out['t'] = at end
  return out
end

local function apply(key, ev)
  local state = load(key)
  local ref = state['t'] or ev.t
  if ev.t > ref then
    state = as_of(state, ev.t)
    ref = ev.t
  end
  state['t'] = ref
  for _, hl in ipairs(half_lives) do
    local weight = math.pow(2, -(ref - ev.t) / hl)
    local count = ev.k .. '|' .. hl
    state[count] = (state[count] or 0) + weight
    if ev.v ~= nil then
      local sum = ev.k .. '|sum|' .. hl
      state[sum] = (state[sum] or 0) + weight * ev.v
    end
  end
  local last = 'last|' .. ev.k
  if state[last] == nil or ev.t > state[last] then state[last] = ev.t end
  local flat = {}
  for field, value in pairs(state) do
    flat[#flat + 1] = field
    flat[#flat + 1] = fmt(value)
  end
  redis.call('HSET', key, unpack(flat))
  redis.call('EXPIRE', key, batch.feature_ttl)
end

local function feature_keys(ev)
  local keys = { u = 'fu:' .. ev.u }
  if ev.i ~= '' then
    keys['i'] = 'fi:' .. ev.i
    keys['ui'] = 'fui:' .. ev.u .. ':' .. ev.i
  end
  return keys
end

-- Point-in-time snapshot for an exposure: every feature as of its event time,
-- before the exposure itself is counted.
local function snapshot(ev)
  local snap = {}
  for prefix, key in pairs(feature_keys(ev)) do
    for field, value in pairs(as_of(load(key), ev.t)) do
      snap[prefix .. '.' .. field] = fmt(value)
    end
  end
  return cjson.encode(snap)
end

-- Where an event came from: its partition's watermark key and its offset.
local function origin(ev) return KEYS[1] .. '@' .. ev.o end

local out = { applied }
local highest = applied
for _, ev in ipairs(batch.events) do
  if ev.r ~= nil then
    if ev.o > applied then redis.call('HINCRBY', KEYS[2], 'rejected:' .. ev.r, 1) end
  elseif ev.o <= applied then
    if ev.x == 1 and redis.call('GET', 'seen:' .. ev.id) == origin(ev) then
      local stored = redis.call('GET', 'snap:' .. ev.id)
      out[#out + 1] = ev.o; out[#out + 1] = 'replay'; out[#out + 1] = stored or ''
    end
  elseif not redis.call('SET', 'seen:' .. ev.id, origin(ev), 'NX', 'EX', batch.dedup_ttl) then
    out[#out + 1] = ev.o; out[#out + 1] = 'dup'; out[#out + 1] = ''
    redis.call('HINCRBY', KEYS[2], 'duplicates', 1)
  else
    redis.call('HINCRBY', KEYS[2], 'events', 1)
    if ev.x == 1 then
      redis.call('HINCRBY', KEYS[2], 'exposures', 1)
      local snap = snapshot(ev)
      redis.call('SET', 'snap:' .. ev.id, snap, 'EX', batch.snapshot_ttl)
      out[#out + 1] = ev.o; out[#out + 1] = 'new'; out[#out + 1] = snap
    end
    for _, key in pairs(feature_keys(ev)) do apply(key, ev) end
  end
  if ev.o > highest then highest = ev.o end
end
if highest > applied then redis.call('SET', KEYS[1], highest) end
return out
