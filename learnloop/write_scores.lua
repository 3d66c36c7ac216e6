-- Store one batch of scores and the partition's scored watermark, atomically.
--
-- KEYS[1]  scored watermark key of the source partition
-- ARGV[1]  JSON: [ttl, top_k, last_offset, ["pend:{objective}:", ...], scores] where a
--          score is an array [offset, key, top (or ""), item, score, model, version, ts,
--          event_id, source, scored_at, explain] (arrays: nothing to decode but values)
--
-- An exposure scored now that no objective still waits on (resolved, or never pending)
-- needs its snapshot no more: it is dropped (see apply_batch.lua).

local batch = cjson.decode(ARGV[1])
-- numbers given to redis.call are formatted with %.17g each time: TTL and rank as text once
local ttl, top_k, last_offset, pending, scores = tostring(batch[1]), batch[2], batch[3],
                                                 batch[4], batch[5]
local beyond_top = tostring(-(top_k + 1))
-- a score at or below the watermark was written before (a redelivery, or two members
-- racing for a partition after a rebalance): writing it again could regress a newer one
local done = tonumber(redis.call('GET', KEYS[1]) or '-1')
local written = 0

local function still_pending(id)
  for _, prefix in ipairs(pending) do
    if redis.call('EXISTS', prefix .. id) == 1 then return true end
  end
  return false
end

for _, s in ipairs(scores) do
  if s[1] > done then
    written = written + 1
    local key, top, id = s[2], s[3], s[9]
    redis.call('HSET', key, 'score', s[5], 'model', s[6], 'version', s[7], 'ts', s[8],
               'event_id', id, 'source', s[10], 'scored_at', s[11], 'explain', s[12])
    redis.call('EXPIRE', key, ttl)
    if not still_pending(id) then redis.call('DEL', 'snap:' .. id) end
    if top ~= '' then
      redis.call('ZADD', top, s[5], s[4])
      redis.call('ZREMRANGEBYRANK', top, '0', beyond_top)
      redis.call('EXPIRE', top, ttl)
    end
  end
end
if last_offset > done then
  redis.call('SET', KEYS[1], last_offset)
end
return written
