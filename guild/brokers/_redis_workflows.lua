-- guild's workflow store on Redis (see _redis_workflows.py): each write is one script.
--
-- Layout (names built from ARGV[1], the key prefix, which holds the hash tag on a
-- cluster, so every key below lives in the queue keys' slot; see _redis_keys.py):
--   P:wf:<id>              hash: id, name, status, spec, state, version, created_at, updated_at
--   P:wf-index             zset: id -> created_at, every workflow
--   P:wf-status:<status>   zset: id -> created_at, the workflows with that status
--
-- A list is ordered by (created_at, id): the zset order within one index, and the
-- same order (bytes, not the locale's collation) when several indexes are merged.
-- Each section below is one script; the @common section is prepended to each.

-- @common
local P = ARGV[1]
local ALL = P .. ':wf-index'
local function k_wf(id) return P .. ':wf:' .. id end
local function k_status(status) return P .. ':wf-status:' .. status end

-- @create
-- ARGV: P, id, name, status, spec, state, version, created_at, updated_at
local id, status, created_at = ARGV[2], ARGV[4], ARGV[8]
local key = k_wf(id)
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'id', id, 'name', ARGV[3], 'status', status, 'spec', ARGV[5],
  'state', ARGV[6], 'version', ARGV[7], 'created_at', created_at, 'updated_at', ARGV[9])
redis.call('ZADD', ALL, created_at, id)
redis.call('ZADD', k_status(status), created_at, id)
return 1

-- @update
-- ARGV: P, id, expected version, new version, status, state, updated_at
-- Compare-and-set: the stored version must be the expected one, byte for byte
-- (a damaged version matches nothing, so the record is left as it is).
local id, status = ARGV[2], ARGV[5]
local key = k_wf(id)
local found = redis.call('HMGET', key, 'version', 'status')
if found[1] ~= ARGV[3] then return 0 end
redis.call('HSET', key, 'version', ARGV[4], 'status', status, 'state', ARGV[6],
  'updated_at', ARGV[7])
if found[2] ~= status then
  if found[2] then redis.call('ZREM', k_status(found[2]), id) end
  local score = redis.call('ZSCORE', ALL, id) or tonumber(redis.call('HGET', key, 'created_at')) or 0
  redis.call('ZADD', k_status(status), score, id)
end
return 1

-- @delete
-- ARGV: P, id, ...   Returns how many records there were.
local count = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = k_wf(id)
  local status = redis.call('HGET', key, 'status')
  count = count + redis.call('DEL', key)
  redis.call('ZREM', ALL, id)
  if status then redis.call('ZREM', k_status(status), id) end
end
return count

-- @list
-- ARGV: P, offset, count, 'all' | 'some', status, ...
-- Returns, for each of the records at [offset, offset + count) of the merged
-- order: id, then its 8 fields (nil where the hash lacks one; all nil when an
-- index names an id whose hash is gone, which only a hand edit can do).
local offset, count = tonumber(ARGV[2]), tonumber(ARGV[3])
local indexes = {}
if ARGV[4] == 'all' then
  indexes[1] = ALL
else
  for i = 5, #ARGV do indexes[#indexes + 1] = k_status(ARGV[i]) end
end
local entries = {}
for _, index in ipairs(indexes) do
  local flat = redis.call('ZRANGE', index, 0, offset + count - 1, 'WITHSCORES')
  for j = 1, #flat, 2 do entries[#entries + 1] = {tonumber(flat[j + 1]), flat[j]} end
end
local function before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  local x, y = a[2], b[2]
  for i = 1, math.min(#x, #y) do
    local p, q = string.byte(x, i), string.byte(y, i)
    if p ~= q then return p < q end
  end
  return #x < #y
end
table.sort(entries, before)
local out = {}
for i = offset + 1, math.min(#entries, offset + count) do
  local id = entries[i][2]
  local f = redis.call('HMGET', k_wf(id), 'id', 'name', 'status', 'spec', 'state', 'version',
    'created_at', 'updated_at')
  out[#out + 1] = id
  for j = 1, 8 do out[#out + 1] = f[j] end
end
return out
