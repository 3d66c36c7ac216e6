-- Store one batch of scores and the partition's scored watermark, atomically.
--
-- KEYS[1]  scored watermark key of the source partition
-- ARGV[1]  JSON: {ttl, top_k, last_offset, pending: ["pend:{objective}:", ...],
--          scores: [{offset, id (the exposure's event_id), key, top (or ""), item,
--          score, fields: [name, value, ...]}]}
--
-- An exposure scored now that no objective still waits on (resolved, or never pending)
-- needs its snapshot no more: it is dropped (see apply_batch.lua).

local batch = cjson.decode(ARGV[1])
-- a score at or below the watermark was written before (a redelivery, or two members
-- racing for a partition after a rebalance): writing it again could regress a newer one
local done = tonumber(redis.call('GET', KEYS[1]) or '-1')
local written = 0
-- numbers given to redis.call are formatted with %.17g each time: these once, as text
local ttl = tostring(batch.ttl)
local beyond_top = tostring(-(batch.top_k + 1))

local function still_pending(id)
  for _, prefix in ipairs(batch.pending) do
    if redis.call('EXISTS', prefix .. id) == 1 then return true end
  end
  return false
end

for _, s in ipairs(batch.scores) do
  if s.offset > done then
    written = written + 1
    redis.call('HSET', s.key, unpack(s.fields))
    redis.call('EXPIRE', s.key, ttl)
    if not still_pending(s.id) then redis.call('DEL', 'snap:' .. s.id) end
    if s.top ~= '' then
      redis.call('ZADD', s.top, s.score, s.item)
      redis.call('ZREMRANGEBYRANK', s.top, '0', beyond_top)
      redis.call('EXPIRE', s.top, ttl)
    end
  end
end
if batch.last_offset > done then
  redis.call('SET', KEYS[1], batch.last_offset)
end
return written
