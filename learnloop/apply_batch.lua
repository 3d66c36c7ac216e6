-- Apply one batch of interaction events to the Redis features, atomically with the
-- partition's watermark. Idempotent by offset: an event at or below the watermark was
-- applied before, so it changes nothing and its exposure snapshot is returned as stored.
--
-- KEYS[1]  watermark key of the source partition (last applied offset, never expires)
-- KEYS[2]  counters hash (events, exposures, duplicates, rejected:{reason}, examples:…)
-- KEYS[3]  the partition's newest event time (drives the event-time watermark)
-- KEYS[4]  the partition's example outbox (a list the consumer drains to Kafka)
-- KEYS[5]  the partition's scored watermark (last offset whose scores are written)
-- ARGV[1]  JSON: {half_lives, feature_ttl, snapshot_ttl, dedup_ttl, lateness, partition, suffix, known,
--          objectives: [{name, exposures, feedback: {type: [label, window_s]}, negative,
--          lateness, window}], events: [...]}
--          event = {o=offset, id, t=event time, s=t as text, u=user, i=item or "", k=type,
--                   v=value or absent, x=1 if exposure, c=context, e=exposure_id or absent},
--          or {o=offset, r=reason} for a message that went to the dead-letter topic
--          (it only advances the watermark)
-- Returns  JSON text: [previous watermark, [[offset, status, payload], ...]] — the
--          payload is the snapshot (a JSON object) or null, or for "late" a number;
--          one string, so the caller parses it in one go:
--          "new" for an exposure applied now, "replay" for an exposure applied by an
--          earlier run (its stored snapshot), "dup" for a repeated event_id,
--          "unattributed:{objective}:{reason}" for feedback that joined no exposure,
--          "late" (with the partition's newest event time) for an event too late to apply.
--
-- Too late: an event older than the partition's newest event time minus `lateness` (the
-- most lenient objective's allowed lateness) is not applied; the consumer dead-letters
-- it. Its de-duplication marker says so, and a replay of its offset reports it again.
--
-- The join (per objective): an exposure is pending (pend:{o}:{id}, indexed per user in
-- pendu:{o}:{user} and by window end in due:{o}:{topic}:{partition}) until its first
-- feedback inside that type's window makes a labeled example, or until the event-time
-- watermark (newest event time - lateness) passes its window end: a negative example.
-- Examples go to the outbox in the same atomic step, so none is lost or made twice.
--
-- An exposure's snapshot (snap:{id}) is kept while it may still be needed: for an
-- example (pending in some objective) or to score it again after a crash (not yet
-- scored). Whichever comes last drops it: the resolution here if the scored watermark
-- has passed the exposure's offset, else write_scores.lua when it finds it resolved.
--
-- Decay is by event time and order-independent (forward decay): every decayed field of
-- a hash is held as of the hash's base time `b`, so an event at time t adds
-- weight * 2^((t - b) / half_life) and writes only the fields it changes. `t` is the
-- newest event time applied; readers decay the fields from `b` to the time they want
-- (never earlier than `t`). A hash is rebased to a newer `b` (every field rewritten once)
-- when its factors would grow past 2^REBASE_HALF_LIVES. A hash without `b` (written
-- before forward decay) is held as of its `t`.

local batch = cjson.decode(ARGV[1])
local half_lives = batch.half_lives
local applied = tonumber(redis.call('GET', KEYS[1]) or '-1')
local scored = tonumber(redis.call('GET', KEYS[5]) or '-1')

local function fmt(x) return string.format('%.17g', x) end

-- Numbers given to redis.call are formatted with %.17g, which costs more than the
-- command itself: the TTLs are made text once, event times come as text (`s`).
local feature_ttl = tostring(batch.feature_ttl)
local snapshot_ttl = tostring(batch.snapshot_ttl)
local dedup_ttl = tostring(batch.dedup_ttl)

local REBASE_HALF_LIVES = 60
local shortest = math.huge
for _, hl in ipairs(half_lives) do if hl < shortest then shortest = hl end end

-- Half-life of a decayed field ('click|3600' → 3600), false for 't', 'b' and 'last|…';
-- memoized: the same few field names recur for every event.
local half_life_memo = {}
local function half_life_of(field)
  local hl = half_life_memo[field]
  if hl == nil then
    hl = field ~= 't' and field ~= 'b' and string.sub(field, 1, 5) ~= 'last|'
         and tonumber(string.match(field, '|(%d+)$')) or false
    half_life_memo[field] = hl
  end
  return hl
end

-- Counters of this call, added to KEYS[2] once at the end.
local counters = {}
local function count(field)
  counters[field] = (counters[field] or 0) + 1
end

-- Feature hashes read in this call (key → fields as numbers) and the fields each call
-- changed (key → set of field names, each true or, for an event time, its text): a
-- hash is read once and written once per call, however many of the call's events touch it.
local states, dirty = {}, {}

-- A feature hash as a Lua table of numbers.
local function load(key)
  local state = states[key]
  if state then return state end
  local flat = redis.call('HGETALL', key)
  state = {}
  for n = 1, #flat, 2 do state[flat[n]] = tonumber(flat[n + 1]) end
  states[key] = state
  return state
end

-- Write every changed field of every hash (numbers: redis.call formats them with
-- %.17g, exact), and refresh each hash's TTL once.
local function write_features()
  for key, fields in pairs(dirty) do
    local state, flat = states[key], {}
    for field, text in pairs(fields) do
      flat[#flat + 1] = field
      flat[#flat + 1] = text == true and state[field] or text
    end
    redis.call('HSET', key, unpack(flat))
    redis.call('EXPIRE', key, feature_ttl)
  end
end

-- The decayed fields an event type counts into: {hl, count = 'click|3600', sum = …}, and
-- (field `last`) the name of its newest time, 'last|click'.
local type_fields = {}
local function fields_of(kind)
  local fields = type_fields[kind]
  if not fields then
    fields = { last = 'last|' .. kind }
    for _, hl in ipairs(half_lives) do
      fields[#fields + 1] = { hl = hl, count = kind .. '|' .. hl, sum = kind .. '|sum|' .. hl }
    end
    type_fields[kind] = fields
  end
  return fields
end

-- Count ``ev`` into the feature hash ``key`` whose current fields are ``state``;
-- only the fields it changes are marked for writing.
local function apply(key, state, ev)
  local changed = dirty[key]
  if not changed then
    changed = {}
    dirty[key] = changed
  end
  local ref = state['t']
  local base = state['b'] or ref or ev.t
  if (ev.t - base) / shortest > REBASE_HALF_LIVES then
    for field, value in pairs(state) do
      local hl = half_life_of(field)
      if hl then
        state[field] = value * 2 ^ (-(ev.t - base) / hl)
        changed[field] = true
      end
    end
    base = ev.t
  end
  if state['b'] ~= base then
    state['b'] = base
    changed['b'] = true
  end
  local fields = fields_of(ev.k)
  for _, field in ipairs(fields) do
    local weight = 2 ^ ((ev.t - base) / field.hl)
    local count = field.count
    state[count] = (state[count] or 0) + weight
    changed[count] = true
    if ev.v ~= nil then
      local sum = field.sum
      state[sum] = (state[sum] or 0) + weight * ev.v
      changed[sum] = true
    end
  end
  if not ref or ev.t > ref then
    state['t'] = ev.t
    changed['t'] = ev.s
  end
  local last = fields.last
  if state[last] == nil or ev.t > state[last] then
    state[last] = ev.t
    changed[last] = ev.s
  end
end

local function feature_keys(ev)
  local keys = { u = 'fu:' .. ev.u }
  if ev.i ~= '' then
    keys['i'] = 'fi:' .. ev.i
    keys['ui'] = 'fui:' .. ev.u .. ':' .. ev.i
  end
  return keys
end

local PREFIXES = { 'u', 'i', 'ui' }
-- 'u' .. '.' .. field, memoized per prefix.
local snapshot_names = { u = {}, i = {}, ui = {} }

-- Point-in-time snapshot for an exposure: every feature as of its event time `at` (a
-- hash's as of its newest event `t` if that is later), before the exposure itself is
-- counted (numbers, 14 significant digits). Each decayed field is scaled from the hash's
-- base time `b` (left out), one pow per half-life; a hash without `t` (written before
-- event time was kept) is given as stored. Names go in sorted: cjson writes a table in
-- its iteration order, which depends on how the table was filled — a snapshot must be
-- the same bytes however the batches were cut.
local function snapshot(current, at)
  local snap, empty = {}, true
  for p = 1, #PREFIXES do
    local prefix = PREFIXES[p]
    local state = current[prefix]
    if state then
      local names, ref = snapshot_names[prefix], state['t']
      local when, base = at, nil
      if ref then
        if when < ref then when = ref end
        base = state['b'] or ref
      end
      local sorted, count = {}, 0
      for field in pairs(state) do
        if field ~= 'b' or not ref then
          count = count + 1
          sorted[count] = field
        end
      end
      table.sort(sorted)
      local factors = {}
      for n = 1, count do
        local field = sorted[n]
        local value = state[field]
        if ref then
          local hl = half_life_of(field)
          if hl then
            local factor = factors[hl]
            if not factor then
              factor = 2 ^ (-(when - base) / hl)
              factors[hl] = factor
            end
            value = value * factor
          elseif field == 't' then
            value = when
          end
        end
        local name = names[field]
        if not name then
          name = prefix .. '.' .. field
          names[field] = name
        end
        snap[name] = value
        empty = false
      end
    end
  end
  if empty then return '{}' end
  return cjson.encode(snap)
end

local objectives = batch.objectives
local suffix = batch.suffix
local newest = tonumber(redis.call('GET', KEYS[3]) or '-1e308')

local function contains(list, value)
  for _, v in ipairs(list) do if v == value then return true end end
  return false
end

-- A pending record, decoded: its exposure time as a number (t) and as text (s). Records
-- written before the text was kept hold only t.
local function decode_pending(raw)
  local pending = cjson.decode(raw)
  pending.t = pending.t or tonumber(pending.s)
  pending.s = pending.s or fmt(pending.t)
  return pending
end

-- ``label_ts`` is text: the feedback's own time, or the window's end formatted once.
local function emit(pending, id, label, label_ts, feedback, objective, source)
  local snap = redis.call('GET', 'snap:' .. id) or '{}'
  local head = cjson.encode({
    objective = objective, exposure_id = id, user_id = pending.u, item_id = pending.i,
    exposure_ts = pending.s, label_ts = label_ts,
    feedback = feedback or '', context = pending.c, source = source,
  })
  -- the label first (the consumer counts positives by that prefix); the stored snapshot
  -- is JSON already: spliced in rather than decoded and encoded again
  redis.call('RPUSH', KEYS[4], '{"label":' .. label .. ',' .. string.sub(head, 2, -2)
             .. ',"features":' .. snap .. '}')
  local kind = label == 1 and 'positive' or 'negative'
  count('examples:' .. objective .. ':' .. kind)
end

-- Whether exposure `id` still waits for a label in any objective.
local function still_pending(id)
  for _, objective in ipairs(objectives) do
    if redis.call('EXISTS', 'pend:' .. objective.name .. ':' .. id) == 1 then return true end
  end
  return false
end

local function resolve(name, id, pending)
  redis.call('DEL', 'pend:' .. name .. ':' .. id)
  redis.call('ZREM', 'pendu:' .. name .. ':' .. pending.u, pending.i .. '\t' .. id)
  redis.call('ZREM', 'due:' .. name .. ':' .. suffix, id)
  -- scored already (this partition's exposure, at or below its scored watermark)?
  if pending.p == batch.partition and pending.o ~= nil and pending.o <= scored
     and not still_pending(id) then
    redis.call('DEL', 'snap:' .. id)
  end
end

-- Per-user pending indexes touched in this call (a set), their TTLs refreshed once.
local pending_indexes = {}

-- The pending record of exposure ``ev``: the same JSON for every objective, made once.
local pending_for, pending_json
local function pending_record(ev)
  if pending_for ~= ev then
    pending_for = ev
    pending_json = cjson.encode({ u = ev.u, i = ev.i, s = ev.s, c = ev.c, o = ev.o,
                                  p = batch.partition })
  end
  return pending_json
end

-- The earliest window end in each objective's due index (math.huge: none), read when
-- first needed and again after windows closed: most events close none, and then cost
-- no ZRANGEBYSCORE.
local earliest_due = {}
local function earliest(name, due)
  local at = earliest_due[name]
  if at == nil then
    local first = redis.call('ZRANGEBYSCORE', due, '-inf', '+inf', 'WITHSCORES', 'LIMIT', '0', '1')
    at = first[2] and tonumber(first[2]) or math.huge
    earliest_due[name] = at
  end
  return at
end

local function expose(name, objective, ev)
  redis.call('SET', 'pend:' .. name .. ':' .. ev.id, pending_record(ev), 'EX', snapshot_ttl)
  local index = 'pendu:' .. name .. ':' .. ev.u
  redis.call('ZADD', index, ev.s, ev.i .. '\t' .. ev.id)
  pending_indexes[index] = true
  local window_end = ev.t + objective.window
  redis.call('ZADD', 'due:' .. name .. ':' .. suffix, window_end, ev.id)
  if window_end < (earliest_due[name] or -math.huge) then earliest_due[name] = window_end end
end

-- The pending exposure a feedback event answers, or nil and why not. Without an
-- exposure_id: the latest pending exposure of the same user and item in the window.
local function find_exposure(name, objective, ev, window)
  if ev.e ~= nil then
    local raw = redis.call('GET', 'pend:' .. name .. ':' .. ev.e)
    if not raw then return nil, nil, 'no_pending_exposure' end
    local pending = decode_pending(raw)
    if ev.t < pending.t or ev.t - pending.t > window then return nil, nil, 'outside_window' end
    return ev.e, pending
  end
  if ev.i == '' then return nil, nil, 'no_item' end
  local candidates = redis.call('ZREVRANGEBYSCORE', 'pendu:' .. name .. ':' .. ev.u,
                                ev.t, ev.t - objective.window, 'WITHSCORES')
  local prefix = ev.i .. '\t'
  local why = 'no_pending_exposure'
  for n = 1, #candidates, 2 do
    local member = candidates[n]
    if string.sub(member, 1, #prefix) == prefix then
      if ev.t - tonumber(candidates[n + 1]) > window then
        why = 'outside_window'
      else
        local id = string.sub(member, #prefix + 1)
        local raw = redis.call('GET', 'pend:' .. name .. ':' .. id)
        if raw then return id, decode_pending(raw) end
      end
    end
  end
  return nil, nil, why
end

-- What the caller hears about the events that need a follow-up: JSON array texts
-- [offset, status, payload]; status is JSON text, payload JSON text or absent (null).
local outcomes = {}
local function report(offset, status, payload)
  outcomes[#outcomes + 1] = '[' .. offset .. ',' .. status .. ',' .. (payload or 'null') .. ']'
end

-- Examples made by one event are numbered: source = {partition, offset, seq}.
local seq = 0

-- An exposure older than the newest event already in its user-item features cannot get
-- a point-in-time snapshot (its own feedback may be in there): it is scored, not learned.
local function late(ev, states)
  local ui = states['ui']
  return ui ~= nil and ui['t'] ~= nil and ev.t < ui['t']
end

local function join(ev, is_late)
  for _, objective in ipairs(objectives) do
    local name = objective.name
    if ev.x == 1 and contains(objective.exposures, ev.k) then
      if is_late then
        count('late_exposures:' .. name)
      else
        expose(name, objective, ev)
      end
    elseif objective.feedback[ev.k] ~= nil then
      local rule = objective.feedback[ev.k]
      local id, pending, why = find_exposure(name, objective, ev, rule[2])
      if id then
        emit(pending, id, rule[1], ev.s, ev.k, name, { batch.partition, ev.o, seq })
        seq = seq + 1
        resolve(name, id, pending)
      else
        count('unattributed:' .. name .. ':' .. why)
        report(ev.o, cjson.encode('unattributed:' .. name .. ':' .. why))
      end
    end
  end
end

-- Negative examples for every exposure whose window closed before the watermark.
local function close_windows(ev)
  for _, objective in ipairs(objectives) do
    local name = objective.name
    local due = 'due:' .. name .. ':' .. suffix
    local bound = newest - objective.lateness
    local closed = {}
    if earliest(name, due) <= bound then
      closed = redis.call('ZRANGEBYSCORE', due, '-inf', bound)
      earliest_due[name] = nil
    end
    for _, id in ipairs(closed) do
      local raw = redis.call('GET', 'pend:' .. name .. ':' .. id)
      if raw then
        local pending = decode_pending(raw)
        emit(pending, id, objective.negative, fmt(pending.t + objective.window), nil, name,
             { batch.partition, ev.o, seq })
        seq = seq + 1
        resolve(name, id, pending)
      else
        redis.call('ZREM', due, id)
      end
    end
  end
end

-- Where an event came from: its partition and offset.
local function origin(ev) return batch.partition .. '@' .. ev.o end

local function too_late(ev) return ev.t < newest - batch.lateness end

-- De-duplication. dedup:{user} is a hash of the user's recent event ids, each marked
-- "{second}|{origin}" (plus '<' and the newest event time if too late to apply), the
-- second being the partition's newest event time when it came; the key's TTL (dedup_ttl
-- of wall time, refreshed on write) drops the hash of a user gone quiet. On every
-- PRUNE_EVERY-th offset written (deterministic, so a replay prunes alike), if due, the
-- user's markers older than dedup_ttl of event time are dropped — but not one of this
-- partition above its scored watermark: a restart replays those offsets, and their
-- verdicts must come back the same. Markers written before this layout (seen:{event_id}:
-- the watermark key, '@' and the offset) are still read for events no newer than the
-- partition's newest event time when this layout first ran on it (wm:dedup:{topic}:{partition}).
local PRUNE_EVERY = 16
local legacy_key = 'wm:dedup:' .. suffix
local legacy_until = tonumber(redis.call('GET', legacy_key) or '')
if not legacy_until then
  legacy_until = applied >= 0 and newest or -1e308
  redis.call('SET', legacy_key, fmt(legacy_until))
end
local dedup_touched = {}

local function dedup_key(ev) return 'dedup:' .. ev.u end

-- Drop the user's markers older than the window (see above) if a prune is due: the hash's
-- field '' (never an event id) holds when the next one is, an eighth of the window
-- after the last, so a busy user's hash is read whole a few times per window, not per event.
local function prune(key)
  local due = tonumber(redis.call('HGET', key, '') or '-1e308')
  if newest < due then return end
  local horizon = newest - batch.dedup_ttl
  local flat, old = redis.call('HGETALL', key), {}
  for n = 1, #flat, 2 do
    local second, p, o = string.match(flat[n + 1], '^(%-?%d+)|(%d+)@(%d+)')
    if second and tonumber(second) < horizon
        and (tonumber(p) ~= batch.partition or tonumber(o) <= scored) then
      old[#old + 1] = flat[n]
    end
  end
  for n = 1, #old, 1000 do
    redis.call('HDEL', key, unpack(old, n, math.min(n + 999, #old)))
  end
  redis.call('HSET', key, '', fmt(newest + batch.dedup_ttl / 8))
end

-- Remember a new event's id: false if it was seen before.
local function remember(ev)
  if ev.t <= legacy_until and redis.call('EXISTS', 'seen:' .. ev.id) == 1 then return false end
  local key = dedup_key(ev)
  local marker = string.format('%d', math.floor(math.max(newest, ev.t))) .. '|' .. origin(ev)
  if too_late(ev) then marker = marker .. '<' .. fmt(newest) end
  if redis.call('HSETNX', key, ev.id, marker) == 0 then return false end
  if ev.o % PRUNE_EVERY == 0 then prune(key) end
  dedup_touched[key] = true
  return true
end

-- The marker of an event at or below the watermark, without its second (nil if none).
local function stored_marker(ev)
  local marker = redis.call('HGET', dedup_key(ev), ev.id)
  if marker then return string.match(marker, '|(.*)$') end
  if ev.t <= legacy_until then
    marker = redis.call('GET', 'seen:' .. ev.id)
    local prefix = KEYS[1] .. '@'
    if marker and string.sub(marker, 1, #prefix) == prefix then
      return batch.partition .. '@' .. string.sub(marker, #prefix + 1)
    end
    return marker
  end
end

-- For an event at or below the watermark: the newest event time it was too late for, if any.
local function was_late(ev, seen)
  local late_prefix = origin(ev) .. '<'
  if seen and string.sub(seen, 1, #late_prefix) == late_prefix then
    return string.sub(seen, #late_prefix + 1)
  end
end

-- A batch that does not continue from the watermark means Redis lost writes (restarted
-- without them): refuse it, so the consumer seeks back instead of leaving a hole. With
-- no watermark at all, only the caller knows whether there was one (batch.known).
local first = batch.events[1]
if first and (applied >= 0 or batch.known >= 0) and first.o > applied + 1 then
  return redis.error_reply('GAP ' .. applied)
end

local highest = applied
for _, ev in ipairs(batch.events) do
  if ev.r ~= nil then
    if ev.o > applied then count('rejected:' .. ev.r) end
  elseif ev.o <= applied then
    local seen = stored_marker(ev)
    local late_for = was_late(ev, seen)
    if late_for then
      report(ev.o, '"late"', late_for)
    elseif ev.x == 1 and seen == origin(ev) then
      local stored = redis.call('GET', 'snap:' .. ev.id)
      report(ev.o, '"replay"', stored)
    end
  elseif not remember(ev) then
    report(ev.o, '"dup"')
    count('duplicates')
  elseif too_late(ev) then
    report(ev.o, '"late"', fmt(newest))
    count('rejected:too_late')
  else
    seq = 0
    local keys = feature_keys(ev)
    local current = {}
    for prefix, key in pairs(keys) do current[prefix] = load(key) end
    local is_late = ev.x == 1 and late(ev, current)
    count('events')
    if ev.x == 1 then
      count('exposures')
      local snap = snapshot(current, ev.t)
      redis.call('SET', 'snap:' .. ev.id, snap, 'EX', snapshot_ttl)
      report(ev.o, '"new"', snap)
    end
    for prefix, key in pairs(keys) do apply(key, current[prefix], ev) end
    join(ev, is_late)
    if ev.t > newest then
      newest = ev.t
      close_windows(ev)
    end
  end
  if ev.o > highest then highest = ev.o end
end
write_features()
for key in pairs(dedup_touched) do redis.call('EXPIRE', key, dedup_ttl) end
for key in pairs(pending_indexes) do redis.call('EXPIRE', key, snapshot_ttl) end
for field, n in pairs(counters) do redis.call('HINCRBY', KEYS[2], field, n) end
if highest > applied then
  redis.call('SET', KEYS[1], highest)
  redis.call('SET', KEYS[3], fmt(newest))
end
return '[' .. applied .. ',[' .. table.concat(outcomes, ',') .. ']]'
