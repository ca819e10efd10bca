-- guild's Redis scripts: every state change of a job is one atomic script.
--
-- Layout (names built from ARGV[1], the key prefix; see _redis_keys.py):
--   P:job:<id>              hash: the job's fields + status, entry, receipt, error, ...
--   P:q:<queue>:ready       stream of {j=<id>} entries; consumer group "guild": the
--                           ready jobs of normal priority (every job before priorities)
--   P:q:<queue>:ready:1     zset: id -> ready time, the ready jobs of high priority
--   P:q:<queue>:ready:-1    zset: the same, of low priority ('priority' in their hash)
--   P:q:<queue>:wake        stream (1 entry kept) added to when a high or low job gets
--                           ready, for idle claimers of older guilds (XREAD on it and the stream)
--   P:q:<queue>:idlers      zset: idle consumer -> until (Redis' clock, ms); see dispatch
--   P:q:<queue>:idle:<c>    hash: an idle consumer's room, start, lease, clock offset
--   P:q:<queue>:inbox:<c>   list: jobs claimed for an idle consumer, which BLPOPs it
--   P:q:<queue>:delayed     zset: id -> ready_at (delayed jobs and retries)
--   P:q:<queue>:leases      zset: id -> lease_expires rounded up to a second (claimed
--                           jobs; the exact one is the hash's: see lease_score)
--   P:q:<queue>:dead        zset: id -> died_at
--   P:q:<queue>:cursor      XAUTOCLAIM cursor for orphaned deliveries
--   P:queues  P:done        set of queue names; hash queue -> jobs done
--   P:key:<queue>:<key>     idempotency key -> id (SET NX EX)
--   P:result:<id>           the result as JSON, with a TTL
--   P:waiting:<id> P:notify:<id>   how many wait for a result; the list that hands it to them
--   P:cancels  P:cancelled  set of ids with a cancel request ('cancel' = '1' in the job's
--                           hash says it is live); hash queue -> jobs cancelled
--
-- Attempts: a job's 'attempt' counts started runs. 'started' ('1'/'0') says whether
-- the holder's run is counted: a claim starts the first N jobs it takes, the rest
-- are prefetched and started by @start. A job with no 'started' field was claimed
-- by an older guild, which counted at claim: it reads as started. An empty
-- 'max_attempts' means the worker's, which each claim passes in.
--
-- Statuses: ready | delayed | in_flight | done | dead | cancelled. A job's stream entry is
-- XACKed and XDELed whenever it leaves "ready/in_flight", so streams stay bounded.
-- Each section below is one script; the @common section is prepended to each.

-- @common
local P = ARGV[1]
local GROUP = 'guild'
local function k_job(id) return P .. ':job:' .. id end
local function k_q(queue, part) return P .. ':q:' .. queue .. ':' .. part end

-- A job's key may hold another type than a hash (a set, a string: written over
-- behind guild's back), on which every hash command fails with WRONGTYPE. The
-- fields named, or nil when the key holds no hash: each caller then skips the
-- job, and a claim (or the lease sweep) that meets it dead-letters it (bury_damaged),
-- so one such job never fails a whole script. pcall: no extra command per job.
local function job_hmget(id, ...)
  local f = redis.pcall('HMGET', k_job(id), ...)
  if f.err then return nil end
  return f
end

-- Another program's key under guild's prefix (a SET over a queue's stream)
-- fails each command on it with WRONGTYPE, which names no key. A script that
-- failed so asks this which key it was: the first of the shared keys, then of
-- queue's (nil: none), holding another type than guild keeps there. Returns
-- key, type found, type expected; or nil. The tables are built only when called.
local function wrong_key(queue)
  local named = {{P .. ':queues', 'set'}, {P .. ':done', 'hash'},
    {P .. ':cancelled', 'hash'}, {P .. ':cancels', 'set'}}
  if queue then
    for _, part in ipairs({{'ready', 'stream'}, {'ready:1', 'zset'}, {'ready:-1', 'zset'},
      {'wake', 'stream'}, {'delayed', 'zset'}, {'leases', 'zset'}, {'dead', 'zset'},
      {'idlers', 'zset'}}) do
      named[#named + 1] = {k_q(queue, part[1]), part[2]}
    end
  end
  for _, pair in ipairs(named) do
    local found = redis.call('TYPE', pair[1])['ok']
    if found ~= 'none' and found ~= pair[2] then return pair[1], found, pair[2] end
  end
  return nil
end

-- A script that writes several keys of a job's queue is never rolled back: one
-- of them of another type, met half-way, would leave the job half moved (out
-- of its leases, in no ready set: held by nobody, found by no sweep). The
-- scripts that end a run another way than done (retry, dead, release) look at
-- every key first, with the same WRONGTYPE error, so that they write all or
-- nothing; they run once a failed or handed-back job, not once a done one.
-- The helpers below need no such look: each moves a job with the one write
-- that can fail first (the add to where the job goes), and its removals of
-- the job from where it was are pcalls (an entry cannot be in a key of
-- another type), so a damaged key fails a move before it writes, at no cost.
local function refuse_damaged(queue)
  if wrong_key(queue) then
    error({err = 'WRONGTYPE Operation against a key holding the wrong kind of value'})
  end
end

-- Wake each waiter of a job with the result itself: one list element per
-- waiter, so a BLPOP returns the result and needs no GET after it.
-- `stored`: the job's P:waiting:<id> as read (nil or false: none).
local function notify_waiters(id, result, stored)
  local waiters = tonumber(stored or '0')
  if waiters > 0 then
    local list = P .. ':notify:' .. id
    for _ = 1, waiters do redis.call('RPUSH', list, result) end
    redis.call('PEXPIRE', list, 60000)
    redis.call('DEL', P .. ':waiting:' .. id)
  end
end
local function notify(id, result)
  notify_waiters(id, result, redis.call('GET', P .. ':waiting:' .. id))
end

-- One command with head's arguments then items (of which there may be none:
-- then no call), in calls of up to 1000 items: unpack puts its results on Lua's
-- C stack, which holds about 8000. A multiple of 2, so pairs stay together.
local function call_many(head, items)
  for i = 1, #items, 1000 do
    local args = {}
    for k = 1, #head do args[k] = head[k] end
    for k = i, math.min(#items, i + 999) do args[#args + 1] = items[k] end
    redis.call(unpack(args))
  end
end

-- A lease's score in P:q:<queue>:leases is its expiry rounded up to a whole
-- second; the exact expiry is the job hash's 'lease_expires'. Redis keeps a
-- small sorted set as a listpack, where an insert parses the score of every
-- member before its place: strtod for a fraction, none for a whole number (on
-- Redis 7.0 that parse was a quarter of Redis' CPU per job in a drain). So a
-- score only bounds a lease from above (guilds before this one scored the exact
-- expiry, a bound too), and a lease is live by lease_until, never by its score
-- alone. Older guilds reading these scores see leases end up to a second late.
local function lease_score(lease_expires) return math.ceil(tonumber(lease_expires)) end
-- The exact expiry of a lease scored `score` whose hash holds `stored`.
local function lease_until(stored, score)
  local exact, bound = tonumber(stored), tonumber(score)
  if exact and exact < bound then return exact end
  return bound
end

local function drop_entry(queue, entry)
  if entry and entry ~= '' then
    local stream = k_q(queue, 'ready')
    redis.pcall('XACK', stream, GROUP, entry)
    redis.pcall('XDEL', stream, entry)
  end
end

-- Ready to claim: a normal job as a stream entry, a high or low one in its level's
-- zset scored by `at`, its ready time (the server's clock when not given), so a
-- claim takes each level in order of ready time, ties by id. `priority` is the
-- job's, read from its hash when not given ('' or missing: normal).
local promote_due -- below: it makes ready through make_ready
-- Queues where a job got ready during this script: @after hands their ready
-- jobs to idle workers (dispatch) once the script's own work is done.
local readied = {}
-- Queues where a job was delayed during this script, each with the fewest
-- milliseconds until one of them is due: @after wakes the idle workers that
-- would sleep past that (wake_idlers).
local delayed_in = {}
local function note_delayed(queue, at, now)
  local ms = math.max(0, math.floor((tonumber(at) - tonumber(now)) * 1000))
  if delayed_in[queue] == nil or ms < delayed_in[queue] then delayed_in[queue] = ms end
end
-- A normal job joins the ready stream at its tail, so the delayed jobs of its
-- queue that came due by its ready time go in first (`promoted`: the caller did
-- that already): otherwise a job that came due earlier would be claimed after it.
local function make_ready(id, queue, at, priority, promoted)
  -- A damaged key (job_hmget) reads as normal and keeps no status: the id still
  -- goes where claim looks, and the claim that takes it dead-letters it.
  if priority == nil then
    priority = redis.pcall('HGET', k_job(id), 'priority')
    if type(priority) == 'table' then priority = false end
  end
  if priority == '1' or priority == '-1' then
    if at == nil then
      local t = redis.call('TIME')
      at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
    end
    -- The wake first: a damaged wake stream then fails the move before the job
    -- is in its ready set, where a claim could take it while its caller keeps it.
    redis.call('XADD', k_q(queue, 'wake'), 'MAXLEN', 1, '*', 'w', '1')
    redis.call('ZADD', k_q(queue, 'ready:' .. priority), tonumber(at), id)
    redis.pcall('HSET', k_job(id), 'status', 'ready', 'entry', '', 'receipt', '')
    readied[queue] = true
    return
  end
  if not promoted then
    if at == nil then
      local t = redis.call('TIME')
      at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
    end
    promote_due(queue, tonumber(at))
  end
  local entry = redis.call('XADD', k_q(queue, 'ready'), '*', 'j', id)
  redis.pcall('HSET', k_job(id), 'status', 'ready', 'entry', entry, 'receipt', '')
  readied[queue] = true
end

-- Take a ready job out of its level's zset (a no-op for a normal job).
local function unready(queue, id)
  redis.pcall('ZREM', k_q(queue, 'ready:1'), id)
  redis.pcall('ZREM', k_q(queue, 'ready:-1'), id)
end

local function result_json(id, queue, status, attempts, now, value_json, err)
  local parts = {'{"job_id":', cjson.encode(id), ',"queue":', cjson.encode(queue),
    ',"status":"', status, '","attempts":', tostring(tonumber(attempts) or 0), ',"finished_at":', now}
  if value_json then parts[#parts + 1] = ',"value":' .. value_json end
  if err then parts[#parts + 1] = ',"error":' .. cjson.encode(err) end
  parts[#parts + 1] = '}'
  return table.concat(parts)
end

local function bury(id, queue, attempts, err, trace, now, result_ttl_ms)
  redis.call('ZADD', k_q(queue, 'dead'), tonumber(now), id)
  redis.call('HSET', k_job(id), 'status', 'dead', 'error', err, 'traceback', trace,
    'died_at', now, 'entry', '', 'receipt', '')
  redis.pcall('ZREM', k_q(queue, 'leases'), id)
  redis.pcall('ZREM', k_q(queue, 'delayed'), id)
  local result = result_json(id, queue, 'dead', attempts, now, nil, err)
  redis.call('SET', P .. ':result:' .. id, result, 'PX', result_ttl_ms)
  notify(id, result)
end

-- A job whose key holds no hash (job_hmget), met on queue: its key is replaced
-- by a dead job's hash that says what it held, so that the dead letters, job
-- info and requeue read it like any other (the payload is lost with the hash).
local function bury_damaged(id, queue, now, result_ttl_ms)
  local key = k_job(id)
  local kind = redis.call('TYPE', key)['ok']
  -- Its dead-letter entry before its key goes (bury writes it again).
  redis.call('ZADD', k_q(queue, 'dead'), tonumber(now), id)
  redis.call('DEL', key)
  unready(queue, id)
  redis.pcall('SREM', P .. ':cancels', id)
  redis.call('HSET', key, 'id', id, 'queue', queue, 'payload', 'null', 'attempt', 0,
    'enqueued_at', now, 'trace_id', id)
  bury(id, queue, 0, 'job ' .. id .. ': its key ' .. key .. ' holds a ' .. kind ..
    ', not the job\'s hash: the job cannot be read', '', now, result_ttl_ms)
end

-- A cancelled job: terminal, kept (and its result) for the result TTL. Its stream
-- entry, if any, is the caller's to drop, after: the count comes first, the one
-- write here that can fail (another program's key), so that a failure leaves
-- the job where it was, not counted.
local function end_cancelled(id, queue, attempts, now, result_ttl_ms)
  redis.call('HINCRBY', P .. ':cancelled', queue, 1)
  redis.call('HSET', k_job(id), 'status', 'cancelled', 'error', 'cancelled', 'entry', '',
    'receipt', '')
  redis.pcall('ZREM', k_q(queue, 'leases'), id)
  redis.pcall('ZREM', k_q(queue, 'delayed'), id)
  redis.pcall('SREM', P .. ':cancels', id)
  redis.call('PEXPIRE', k_job(id), result_ttl_ms)
  local result = result_json(id, queue, 'cancelled', attempts, now, nil, 'cancelled')
  redis.call('SET', P .. ':result:' .. id, result, 'PX', result_ttl_ms)
  notify(id, result)
end

-- A delivery is still held when the job is in flight under the same receipt.
-- Returns status, receipt, queue, entry, attempt, started, cancel, lease_expires.
local function held(id, receipt)
  local f = job_hmget(id, 'status', 'receipt', 'queue', 'entry', 'attempt', 'started', 'cancel',
    'lease_expires')
  if not f or f[1] ~= 'in_flight' or f[2] ~= receipt then return nil end
  return f
end

-- Back to ready without counting the holder's run (release, a killed consumer);
-- a job with a cancel request ends cancelled instead.
local function give_back(id, queue, entry, attempt, started, cancel, now, result_ttl_ms)
  if cancel == '1' then
    -- 'attempt' counts started runs only: nothing to take back for an unstarted one.
    end_cancelled(id, queue, tonumber(attempt) or 0, now, result_ttl_ms)
  else
    -- Ready first, its lease dropped after: a damaged key fails it still held.
    make_ready(id, queue, now)
    if started ~= '0' then
      redis.call('HSET', k_job(id), 'attempt', math.max(0, tonumber(attempt) - 1))
    end
    redis.call('HSET', k_job(id), 'started', '0')
  end
  drop_entry(queue, entry)
  redis.pcall('ZREM', k_q(queue, 'leases'), id)
end

-- Move due delayed jobs and expired leases back to the stream (or to the dead
-- letters when a started run was the last attempt; max_default is the worker's
-- max_attempts), re-queue orphaned deliveries.
-- Move the delayed jobs of `queue` that are due by `now` to ready, in the order
-- they came due: run by a claim, and before a normal job is made ready.
promote_due = function(queue, now)
  local due = redis.call('ZRANGEBYSCORE', k_q(queue, 'delayed'), '-inf', now, 'WITHSCORES',
    'LIMIT', 0, 1000)
  for i = 1, #due, 2 do
    -- Ready since it came due, not since this call noticed; taken out of the
    -- delayed set after (the set it was read from: that cannot fail).
    make_ready(due[i], queue, due[i + 1], nil, true)
    redis.call('ZREM', k_q(queue, 'delayed'), due[i])
  end
end

local function prepare_queue(queue, now, result_ttl, orphan_idle, max_default)
  local nnow = tonumber(now)
  -- Scores bound expiries from above by under a second (lease_score): the leases
  -- scored up to the next whole second are the candidates, their hashes decide.
  local candidates = redis.call('ZRANGEBYSCORE', k_q(queue, 'leases'), '-inf', math.ceil(nnow),
    'WITHSCORES', 'LIMIT', 0, 1000)
  for i = 1, #candidates, 2 do
    local id = candidates[i]
    local f = job_hmget(id, 'status', 'entry', 'attempt', 'max_attempts', 'started', 'cancel',
      'lease_expires')
    if f and f[1] == 'in_flight' and lease_until(f[7], candidates[i + 1]) > nnow then
      -- Live for under a second more: kept.
    elseif not f then
      bury_damaged(id, queue, now, result_ttl)  -- (its lease goes in bury)
    elseif f[1] == 'in_flight' and f[6] == '1' then
      end_cancelled(id, queue, tonumber(f[3]) or 0, now, result_ttl)
      drop_entry(queue, f[2])
    elseif f[1] == 'in_flight' then
      -- The job moved first, its lease and entry dropped after: a damaged key
      -- fails the claim with the job still under its lease, for the next sweep.
      local attempt = tonumber(f[3])
      local max_attempts = tonumber(f[4] or '') or tonumber(max_default)
      -- A stored attempt that is no number goes back to the stream: the claim
      -- that takes it dead-letters it, naming the field (_codec.job_from_row).
      if f[5] ~= '0' and attempt and attempt >= max_attempts then
        bury(id, queue, attempt, 'lease expired on attempt ' .. attempt .. ' of ' .. max_attempts,
          '', now, result_ttl)
      else
        -- A started run that never finished: the next one runs alone.
        if f[5] ~= '0' then redis.call('HSET', k_job(id), 'interrupted', '1') end
        make_ready(id, queue, now)
      end
      drop_entry(queue, f[2])
      redis.call('ZREM', k_q(queue, 'leases'), id)
    else
      -- The job moved on (done, dead, cancelled, ready again): a stale lease.
      redis.call('ZREM', k_q(queue, 'leases'), id)
    end
  end
  promote_due(queue, nnow)
  -- Entries delivered to a consumer that never marked them (it was cancelled or
  -- killed between the read and the mark) sit in the PEL with the job still "ready".
  -- Walk the PEL with a persistent XAUTOCLAIM cursor and give them back.
  local cursor_key = k_q(queue, 'cursor')
  local cursor = redis.call('GET', cursor_key) or '0-0'
  local ok, claimed = pcall(redis.call, 'XAUTOCLAIM', k_q(queue, 'ready'), GROUP, 'guild-reaper',
    orphan_idle, cursor, 'COUNT', 100, 'JUSTID')
  if ok then
    redis.call('SET', cursor_key, claimed[1])
    for _, entry in ipairs(claimed[2]) do
      local fields = redis.call('XRANGE', k_q(queue, 'ready'), entry, entry)
      local id = fields[1] and fields[1][2][2]
      if id then
        local f = job_hmget(id, 'status', 'entry')
        if not f then
          bury_damaged(id, queue, now, result_ttl)
        elseif f[1] == 'ready' and f[2] == entry then
          make_ready(id, queue)
        end
        drop_entry(queue, entry)
      else
        drop_entry(queue, entry)
      end
    end
  end
end

-- The next time something of `queue` falls due (a delayed job, a lease's
-- exact expiry), or -1, as a string. Only a claim that leaves the queue dry
-- needs it (to bound its idle registration): a claim that fills its limit skips
-- it, and its walk of the soonest second's leases (a read per lease).
local function next_due_of(queue)
  local next_due = -1
  local d = redis.call('ZRANGE', k_q(queue, 'delayed'), 0, 0, 'WITHSCORES')
  if d[2] then next_due = tonumber(d[2]) end
  local l = redis.call('ZRANGE', k_q(queue, 'leases'), 0, 0, 'WITHSCORES')
  if l[2] then
    -- The soonest expiry is under the lowest score, and no more than a second
    -- below it (lease_score): among the leases scored up to a second above it.
    local soonest = tonumber(l[2])
    local near = redis.call('ZRANGEBYSCORE', k_q(queue, 'leases'), soonest, soonest + 1,
      'WITHSCORES', 'LIMIT', 0, 200)
    for i = 1, #near, 2 do
      local f = job_hmget(near[i], 'lease_expires')
      local at = lease_until(f and f[1], near[i + 1])
      if at < soonest then soonest = at end
    end
    if next_due < 0 or soonest < next_due then next_due = soonest end
  end
  return tostring(next_due)
end

-- The 14 fields of a claimed job, appended to out.
local function append_row(out, id)
  local j = redis.call('HMGET', k_job(id), 'id', 'queue', 'payload', 'attempt', 'max_attempts',
    'enqueued_at', 'not_before', 'timeout', 'key', 'trace_id', 'receipt', 'started',
    'interrupted', 'priority')
  -- The id the entry names, whatever the hash's own 'id' field holds (or lacks):
  -- a bad entry must be dead-lettered by the id it is stored under.
  j[1] = id
  for _, v in ipairs(j) do out[#out + 1] = v end
end

-- Take the read stream entries (flat: entry id, job id, ...; an entry id '' for a
-- job taken from a level's zset) under a lease; the first `start` of them started
-- (their attempt counted) unless interrupted (its worker runs it alone), the rest
-- prefetched. Returns 14 fields per job taken: id queue payload attempt
-- max_attempts enqueued_at not_before timeout key trace_id receipt started
-- interrupted priority.
local function mark_entries(queue, lease_expires, consumer, taken, start, now, result_ttl_ms)
  local out = {}
  local marked = 0
  -- Per claim, not per job: the stream entries to XACK and XDEL and the leases
  -- to ZADD go in one command each after the loop (each Redis call from Lua
  -- costs more than the work of one more argument). Nothing in the loop reads
  -- the stream or the leases, so deferring them changes no outcome.
  local entries, leases = {}, {}
  for i = 1, #taken, 2 do
    local entry, id = taken[i], taken[i + 1]
    -- One read gives the checks and the row (append_row's fields but id,
    -- receipt and started, which this claim writes).
    local f = job_hmget(id, 'status', 'entry', 'attempt', 'interrupted', 'queue', 'payload',
      'max_attempts', 'enqueued_at', 'not_before', 'timeout', 'key', 'trace_id', 'priority')
    if entry ~= '' then entries[#entries + 1] = entry end
    if not f then
      bury_damaged(id, queue, now, result_ttl_ms)
    elseif f[1] ~= 'ready' or (f[2] or '') ~= entry then
      -- A stale entry (the job moved on, or its hash expired): only dropped.
    else
      local started, attempt = '0', tonumber(f[3])
      if not attempt then
        -- Not a number: kept as stored, for claim to dead-letter (_codec.job_from_row).
        attempt = f[3] or ''
      else
        if marked < start and f[4] ~= '1' then started, attempt = '1', attempt + 1 end
        -- As HSET stores it and HMGET would read it back.
        attempt = tostring(attempt)
      end
      marked = marked + 1
      -- The stream entry id is unique to this claim; a job from a level's zset
      -- has none, and takes the claim's time instead. From here the lease (a
      -- zset score) holds the job, not the stream: the entry goes in this script,
      -- so the PEL only ever holds deliveries nobody marked.
      local receipt = entry .. '/' .. attempt
      if entry == '' then receipt = 'p' .. now .. ':' .. id .. '/' .. attempt end
      if started == '1' then
        redis.call('HSET', k_job(id), 'status', 'in_flight', 'attempt', attempt, 'entry', '',
          'receipt', receipt, 'consumer', consumer, 'lease_expires', lease_expires,
          'started', started, 'started_at', now)
      else
        redis.call('HSET', k_job(id), 'status', 'in_flight', 'attempt', attempt, 'entry', '',
          'receipt', receipt, 'consumer', consumer, 'lease_expires', lease_expires,
          'started', started)
      end
      leases[#leases + 1] = lease_score(lease_expires)
      leases[#leases + 1] = id
      -- The 14 fields of append_row, in its order.
      local row = {id, f[5], f[6], attempt, f[7], f[8], f[9], f[10], f[11], f[12], receipt,
        started, f[4], f[13]}
      for k = 1, 14 do out[#out + 1] = row[k] end
    end
  end
  local stream = k_q(queue, 'ready')
  call_many({'XACK', stream, GROUP}, entries)
  call_many({'XDEL', stream}, entries)
  call_many({'ZADD', k_q(queue, 'leases')}, leases)
  return out
end

-- The ready jobs of queue a claim by consumer takes, up to limit, in claim order:
-- high priority ones from their zset, then a non-blocking XREADGROUP of normal
-- ones, then low ones. Returns them flat (entry id, job id; an entry id '' for a
-- job from a zset), or nil and the error ('NOGROUP …': Redis lost the group).
local function take(queue, consumer, limit)
  local taken = {}
  local function take_level(level)
    local room = limit - #taken / 2
    if room < 1 then return end
    local zset = k_q(queue, 'ready:' .. level)
    for _, id in ipairs(redis.call('ZRANGE', zset, 0, room - 1)) do
      redis.call('ZREM', zset, id)
      taken[#taken + 1] = ''
      taken[#taken + 1] = id
    end
  end
  take_level('1')
  if #taken / 2 < limit then
    local read = redis.pcall('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', limit - #taken / 2,
      'STREAMS', k_q(queue, 'ready'), '>')
    if type(read) == 'table' and read.err then return nil, read.err end
    if read then
      for _, e in ipairs(read[1][2]) do
        local id = ''
        for k = 1, #e[2], 2 do if e[2][k] == 'j' then id = e[2][k + 1] end end
        taken[#taken + 1] = e[1]
        taken[#taken + 1] = id
      end
    end
  end
  take_level('-1')
  return taken
end

-- Idle workers. A claim that leaves the queue empty registers its consumer as
-- idle: P:q:<queue>:idlers (zset consumer -> until, Redis' clock in ms) and
-- P:q:<queue>:idle:<consumer> (hash: room, start, lease, offset = the worker's
-- clock minus Redis'). A script that makes a job ready then claims it for the
-- first idle consumer, in the same atomic step (dispatch: a lease under that
-- consumer, as a claim would), and pushes the claimed rows to the consumer's
-- P:q:<queue>:inbox:<consumer>, which the worker BLPOPs: its wake-up reply is
-- the job. A handed job is held by its lease like any claimed one, so a worker
-- that dies with it (or before it pops it) loses nothing: the lease runs out,
-- or the supervisor hands it back (release_consumers).
local function k_idle(queue, consumer) return k_q(queue, 'idle:' .. consumer) end
local function k_inbox(queue, consumer) return k_q(queue, 'inbox:' .. consumer) end

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An inbox element: each field as <length>:<bytes>, a missing one as '-'
-- (binary-safe; parsed by redis.py's _unpack). First the lease expiry, then
-- mark_entries' 14 fields per job.
local function pack(lease_expires, rows)
  local parts = {#lease_expires .. ':' .. lease_expires}
  for i = 1, #rows do
    local v = rows[i]
    if v then parts[#parts + 1] = #v .. ':' .. v else parts[#parts + 1] = '-' end
  end
  return table.concat(parts)
end

local function unpack_fields(s)
  local out, i = {}, 1
  while i <= #s do
    if string.sub(s, i, i) == '-' then
      out[#out + 1] = false
      i = i + 1
    else
      local colon = string.find(s, ':', i, true)
      local n = tonumber(string.sub(s, i, colon - 1))
      out[#out + 1] = string.sub(s, colon + 1, colon + n)
      i = colon + n + 1
    end
  end
  return out
end

-- Ends consumer's idle registration; returns the job ids and receipts (flat) of
-- what was handed to it and never popped.
local function unregister(queue, consumer)
  redis.call('ZREM', k_q(queue, 'idlers'), consumer)
  redis.call('DEL', k_idle(queue, consumer))
  local inbox = k_inbox(queue, consumer)
  local left = {}
  for _, element in ipairs(redis.call('LRANGE', inbox, 0, -1)) do
    local f = unpack_fields(element)
    for i = 2, #f, 14 do
      if f[i] then  -- (false: struck out by cancel, see strike_handed)
        left[#left + 1] = f[i]
        left[#left + 1] = f[i + 10]
      end
    end
  end
  redis.call('DEL', inbox)
  return left
end

-- Strike a cancelled job out of consumer's inbox (handed, never popped): its row's
-- id becomes missing, a row the worker skips (redis.py, _pop_handed) yet still
-- counts against its room, as dispatch counted it. Returns whether it was there.
local function strike_handed(queue, consumer, id)
  local inbox = k_inbox(queue, consumer)
  for n, element in ipairs(redis.call('LRANGE', inbox, 0, -1)) do
    local f = unpack_fields(element)
    for i = 2, #f, 14 do
      if f[i] == id then
        f[i] = false
        local rows = {}
        for k = 2, #f do rows[k - 1] = f[k] end
        redis.call('LSET', inbox, n - 1, pack(f[1], rows))
        return true
      end
    end
  end
  return false
end

-- Hand the ready jobs of queue to its idle consumers, first registered first.
local function dispatch(queue)
  local idlers = k_q(queue, 'idlers')
  if redis.call('EXISTS', idlers) == 0 then return end
  local now_ms = server_ms()
  redis.call('ZREMRANGEBYSCORE', idlers, '-inf', now_ms)
  while true do
    local consumer = redis.call('ZRANGE', idlers, 0, 0)[1]
    if not consumer then return end
    local idle = k_idle(queue, consumer)
    local f = redis.call('HMGET', idle, 'room', 'start', 'lease', 'offset', 'result_ttl')
    local room, start = tonumber(f[1]) or 0, tonumber(f[2]) or 0
    local lease, offset = tonumber(f[3]), tonumber(f[4])
    -- For a damaged job met here (bury_damaged): the claimer's result TTL; a day
    -- for a registration made before guild stored it.
    local result_ttl = tonumber(f[5]) or 86400000
    if room < 1 or not lease or not offset then
      redis.call('ZREM', idlers, consumer)
      redis.call('DEL', idle)
    else
      local taken = take(queue, consumer, room)
      if not taken or #taken == 0 then return end
      -- In the worker's clock, as its own claims are.
      local now = string.format('%.6f', now_ms / 1000 + offset)
      local lease_expires = string.format('%.6f', now_ms / 1000 + offset + lease)
      local rows = mark_entries(queue, lease_expires, consumer, taken, start, now, result_ttl)
      local n = #rows / 14
      if n > 0 then
        local inbox = k_inbox(queue, consumer)
        redis.call('RPUSH', inbox, pack(lease_expires, rows))
        redis.call('PEXPIRE', inbox, math.ceil(lease * 1000))
        -- As the worker counts it (redis.py, _Idle): each job takes room, and a
        -- start while there are starts left.
        room, start = room - n, math.max(0, start - n)
        if room < 1 then
          redis.call('ZREM', idlers, consumer)
          redis.call('DEL', idle)
        else
          redis.call('HSET', idle, 'room', room, 'start', start)
        end
      end
      -- Fewer than its room: take found the queue dry, as the next consumer's
      -- take would (five commands each enqueue that wakes a worker, for nothing).
      if #taken / 2 < room + n then return end
    end
  end
end

-- An idle worker is registered until its claim's wait ends or the next job of
-- the queue falls due, as the claim saw them. A job delayed since then, due
-- before that registration ends, would wait for it: each such worker gets a
-- wake, an inbox element with no rows, on which it claims again (redis.py,
-- _pop_handed), registering then no later than the new due time.
local function wake(queue, consumer)
  local lease = tonumber(redis.call('HGET', k_idle(queue, consumer), 'lease'))
  if not lease then return 0 end  -- no longer registered: nothing to end
  local inbox = k_inbox(queue, consumer)
  redis.call('RPUSH', inbox, pack('0', {}))
  redis.call('PEXPIRE', inbox, math.ceil(lease * 1000))
  return 1
end
local function wake_idlers(queue, in_ms)
  local idlers = k_q(queue, 'idlers')
  if redis.call('EXISTS', idlers) == 0 then return end
  local due_ms = server_ms() + in_ms
  for _, consumer in ipairs(redis.call('ZRANGEBYSCORE', idlers, '(' .. due_ms, '+inf')) do
    wake(queue, consumer)
  end
end

-- @after
-- Run after each script of this file (see _redis_scripts.load_scripts).
for queue in pairs(readied) do dispatch(queue) end
for queue, in_ms in pairs(delayed_in) do wake_idlers(queue, in_ms) end

-- @enqueue
-- ARGV: P, now, key_ttl_s, then 9 per job: id queue payload max_attempts not_before timeout key
-- trace_id priority ('' for normal: no 'priority' field is stored for it)
local now = ARGV[2]
local key_ttl = ARGV[3]
local out = {}
local promoted = {}
-- One job's writes after its key's: the hash, then where claim looks for it.
local function store(id, queue, payload, max_attempts, not_before, timeout, key, trace, priority)
  if redis.call('SADD', P .. ':queues', queue) == 1 then
    redis.pcall('XGROUP', 'CREATE', k_q(queue, 'ready'), GROUP, '0', 'MKSTREAM')
  end
  redis.call('HSET', k_job(id), 'id', id, 'queue', queue, 'payload', payload,
    'attempt', 0, 'max_attempts', max_attempts, 'enqueued_at', now,
    'not_before', not_before, 'timeout', timeout, 'key', key, 'trace_id', trace)
  if priority ~= '' then redis.call('HSET', k_job(id), 'priority', priority) end
  if not_before ~= '' and tonumber(not_before) > tonumber(now) then
    redis.call('HSET', k_job(id), 'status', 'delayed')
    redis.call('ZADD', k_q(queue, 'delayed'), tonumber(not_before), id)
    note_delayed(queue, not_before, now)
  else
    -- Due delayed jobs go in once per queue and call, not once per job.
    if not promoted[queue] then
      promote_due(queue, tonumber(now))
      promoted[queue] = true
    end
    make_ready(id, queue, now, priority, true)
  end
end
-- A job's writes taken back (its hash, where claim would look for it, its key
-- when it names the job): see the failure below.
local function unstore(id, queue, key)
  local entry = redis.pcall('HGET', k_job(id), 'entry')
  redis.call('DEL', k_job(id))
  for _, level in ipairs({'delayed', 'ready:1', 'ready:-1'}) do
    redis.pcall('ZREM', k_q(queue, level), id)
  end
  if type(entry) == 'string' and entry ~= '' then redis.pcall('XDEL', k_q(queue, 'ready'), entry) end
  if key ~= '' then
    local kk = P .. ':key:' .. queue .. ':' .. key
    if redis.call('GET', kk) == id then redis.call('DEL', kk) end
  end
end
-- The ARGV places of the jobs answered with their key's holder (stored before
-- this call, or earlier in it): not this job's writes, never taken back.
local answered = {}
for i = 4, #ARGV, 9 do
  local id, queue, payload, max_attempts = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local not_before, timeout, key, trace = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local priority = ARGV[i + 8]
  local holder = nil
  local kk = nil
  if key ~= '' then
    kk = P .. ':key:' .. queue .. ':' .. key
    if not redis.call('SET', kk, id, 'NX', 'EX', key_ttl) then
      holder = redis.call('GET', kk)
      if redis.call('EXISTS', k_job(holder)) == 0 then
        redis.call('SET', kk, id, 'EX', key_ttl)
        holder = nil
      end
    end
  end
  if holder then
    out[#out + 1] = holder
    answered[i] = true
  else
    local ok, err = pcall(store, id, queue, payload, max_attempts, not_before, timeout, key,
      trace, priority)
    if not ok then
      -- A key of the queue's holds another type (another program's): a script is
      -- never rolled back, so the job's hash and its key are taken back here. Left,
      -- the hash would be a job nothing claims (which enqueue_and_wait's await
      -- script would wait on for its whole wait), and the key would name it for
      -- every later enqueue with it, as if it were enqueued. So are the jobs
      -- of the call stored before it (on other queues): the caller is told
      -- the enqueue failed, and one that sends it again would store them twice.
      -- (The dispatch after the script finds none of them: none was handed.)
      -- Read back from ARGV, not kept on the way (no table a job).
      unstore(id, queue, key)
      for k = 4, i - 9, 9 do
        if not answered[k] then unstore(ARGV[k], ARGV[k + 1], ARGV[k + 6]) end
      end
      if type(err) == 'table' then err = err.err end
      return redis.error_reply(err)
    end
    out[#out + 1] = id
  end
end
return out

-- @claim
-- ARGV: P, queue, now, result_ttl_ms, orphan_idle_ms, lease_expires, consumer, limit, token,
-- start (how many of the jobs taken to start), max_default (the worker's max_attempts),
-- block_ms (how long to stay registered as idle if the queue runs dry; 0: not at all),
-- lease (seconds, for the jobs handed to it while idle).
-- A busy worker's whole claim in one round trip: end its idle registration (and
-- take what was handed to it and never popped), prepare, take up to limit jobs
-- (see take), mark. If that leaves the queue without ready jobs, register the
-- consumer as idle (see dispatch) for the rest of its capacity. Returns the next
-- due time (next_due_of; '' when it took its whole limit), the milliseconds it
-- is registered for ('0': not registered), then
-- mark_entries' fields; or {'nogroup'} when Redis lost the consumer group.
-- A call whose reply was lost is sent again with the same token: it gets the
-- jobs the first call took (those still held), not a second batch while the
-- first waits out its leases.
local queue, consumer = ARGV[2], ARGV[7]
local token_key = P .. ':claim:' .. ARGV[9]
local replay = redis.call('LRANGE', token_key, 0, -1)
if #replay > 0 then
  local out = {'-1', '0'}
  for _, id in ipairs(replay) do
    local f = job_hmget(id, 'status', 'consumer')
    if f and f[1] == 'in_flight' and f[2] == consumer then append_row(out, id) end
  end
  return out
end
local lease_expires = ARGV[6]
local out = {}
-- Handed while the worker was not listening: claimed already, so taken first,
-- under this claim's lease.
local left = unregister(queue, consumer)
for i = 1, #left, 2 do
  local id = left[i]
  local f = held(id, left[i + 1])
  if f and redis.call('HGET', k_job(id), 'consumer') == consumer then
    redis.call('ZADD', k_q(queue, 'leases'), lease_score(lease_expires), id)
    redis.call('HSET', k_job(id), 'lease_expires', lease_expires)
    append_row(out, id)
  end
end
prepare_queue(queue, ARGV[3], ARGV[4], ARGV[5], ARGV[11])
local limit = tonumber(ARGV[8]) - #out / 14
local start = math.max(0, tonumber(ARGV[10]) - #out / 14)
local taken, err = {}, nil
if limit > 0 then taken, err = take(queue, consumer, limit) end
if not taken then
  if string.find(err, 'NOGROUP', 1, true) then return {'nogroup'} end
  return redis.error_reply(err)
end
-- Before mark_entries, whose leases are not the ones prepare_queue left (take
-- touches neither the leases nor the delayed jobs). '': not asked, the queue
-- had jobs to spare (the worker reads the field only for 'nogroup').
local next_due = ''
if #taken / 2 < limit then next_due = next_due_of(queue) end
local marked = mark_entries(queue, lease_expires, consumer, taken, start, ARGV[3], ARGV[4])
for i = 1, #marked do out[#out + 1] = marked[i] end
local ids = {}
for i = 1, #out, 14 do ids[#ids + 1] = out[i] end
call_many({'RPUSH', token_key}, ids)
if #out > 0 then redis.call('PEXPIRE', token_key, 60000) end
local block = 0
local room = limit - #marked / 14
if room > 0 and #taken / 2 < limit and (tonumber(ARGV[12]) or 0) > 0 then
  -- Dry: idle until block_ms pass or the next delayed job or lease is due.
  block = tonumber(ARGV[12])
  if tonumber(next_due) >= 0 then
    block = math.min(block, math.floor((tonumber(next_due) - tonumber(ARGV[3])) * 1000))
  end
  if block >= 1 then
    local now_ms = server_ms()
    local idle = k_idle(queue, consumer)
    redis.call('HSET', idle, 'room', room, 'start', math.max(0, start - #marked / 14),
      'lease', ARGV[13], 'offset', tonumber(ARGV[3]) - now_ms / 1000, 'result_ttl', ARGV[4])
    redis.call('PEXPIRE', idle, block + 1000)
    redis.call('ZADD', k_q(queue, 'idlers'), now_ms + block, consumer)
  else
    block = 0
  end
end
table.insert(out, 1, tostring(block))
table.insert(out, 1, next_due)
return out

-- @wake
-- ARGV: P, queue, consumer. The worker's own wake for a registration that ends
-- when a job falls due: Redis times a blocked BLPOP out only on its next timer
-- tick (every 1/hz s: up to 100 ms late by default), so the worker wakes itself
-- then (redis.py, _pop_woken). Returns 0 when it was no longer registered.
return wake(ARGV[2], ARGV[3])

-- @unregister
-- ARGV: P, queue, consumer, now, result_ttl_ms. A worker that stops claiming:
-- its idle registration ends, and what was handed to it and never popped goes
-- back to ready, its run not counted.
local queue = ARGV[2]
local left = unregister(queue, ARGV[3])
for i = 1, #left, 2 do
  local f = held(left[i], left[i + 1])
  if f then give_back(left[i], f[3], f[4], f[5], f[6], f[7], ARGV[4], ARGV[5]) end
end
return 1

-- @ack
-- ARGV: P, now, result_ttl_ms, keep_payload ('1'/'0'), then pairs: job id, value JSON.
-- By job id: a job that finished is done, whoever finishes it. Its payload is
-- dropped (kept as JSON null) unless keep_payload: see guild.Retention.
local now, result_ttl, keep_payload = ARGV[2], ARGV[3], ARGV[4]
local ttl_s = math.max(1, math.floor(tonumber(result_ttl) / 1000))
-- Per queue, not per job: the done count (before the writes, see below) and
-- the lease and delayed entries to drop (after them) go in one command each
-- (each Redis call from Lua costs more than one more argument); nothing in the
-- loops reads them.
local finished = {}
-- Every acked job's waiter count in one MGET (per 1000 jobs), not a GET per job:
-- each Redis call from Lua costs more than its work. Nothing in the loop changes
-- a count before its own job's notify (a job acked twice is done the second time).
local waiting_keys, waiting = {}, {}
for i = 5, #ARGV, 2 do waiting_keys[#waiting_keys + 1] = P .. ':waiting:' .. ARGV[i] end
for i = 1, #waiting_keys, 1000 do
  local got = redis.call('MGET', unpack(waiting_keys, i, math.min(#waiting_keys, i + 999)))
  for k = 1, #got do waiting[#waiting + 1] = got[k] end
end
-- The reads first, and the done counts before any job is written: a script is
-- never rolled back, so a P:done of another type (another program's) must fail
-- the call before it changes anything. Then every job stays held, and the
-- worker's ack, tried again, stores them once the key is repaired.
local found, seen = {}, {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local f = job_hmget(id, 'status', 'queue', 'entry', 'attempt')
  -- A job twice in one call (held again under a new claim) is done once, by the first.
  if f and f[1] and f[1] ~= 'done' and f[1] ~= 'dead' and f[1] ~= 'cancelled' and not seen[id] then
    seen[id] = true
    found[i] = f
    local ids = finished[f[2]]
    if not ids then
      ids = {}
      finished[f[2]] = ids
    end
    ids[#ids + 1] = id
  end
end
-- So must the queue keys written before a job is marked done (the stream its
-- entry is dropped from, the ready sets of a job made ready again): one of
-- another type would fail the call after the counts, and each try until the
-- repair would count its jobs again. One TYPE a key a queue, and none for the
-- jobs a claim took (no entry, not ready). The leases and delayed sets are
-- written last: a failure there leaves the jobs done, and a try again finds
-- nothing left to count.
local touched = {}
for i = 5, #ARGV, 2 do
  local f = found[i]
  if f then
    local parts = touched[f[2]]
    if not parts then
      parts = {}
      touched[f[2]] = parts
    end
    if f[3] and f[3] ~= '' then parts.ready = 'stream' end
    if f[1] == 'ready' then parts['ready:1'], parts['ready:-1'] = 'zset', 'zset' end
  end
end
for queue, parts in pairs(touched) do
  for part, wanted in pairs(parts) do
    local held = redis.call('TYPE', k_q(queue, part))['ok']
    if held ~= 'none' and held ~= wanted then
      return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
    end
  end
end
for queue, ids in pairs(finished) do redis.call('HINCRBY', P .. ':done', queue, #ids) end
for i = 5, #ARGV, 2 do
  local f = found[i]
  if f then
    local id, value, queue = ARGV[i], ARGV[i + 1], f[2]
    drop_entry(queue, f[3])
    if f[1] == 'ready' then unready(queue, id) end
    if keep_payload ~= '1' then
      redis.call('HSET', k_job(id), 'status', 'done', 'entry', '', 'receipt', '', 'payload', 'null')
    else
      redis.call('HSET', k_job(id), 'status', 'done', 'entry', '', 'receipt', '')
    end
    redis.call('EXPIRE', k_job(id), ttl_s)
    local result = result_json(id, queue, 'done', f[4], now, value, nil)
    redis.call('SET', P .. ':result:' .. id, result, 'PX', result_ttl)
    notify_waiters(id, result, waiting[(i - 3) / 2])
  end
end
for queue, ids in pairs(finished) do
  call_many({'ZREM', k_q(queue, 'leases')}, ids)
  call_many({'ZREM', k_q(queue, 'delayed')}, ids)
end
return 1

-- @retry
-- ARGV: P, now, id, receipt, at, error, result_ttl_ms, traceback. A job with a
-- cancel request is not run again: it ends cancelled.
local now, id, receipt, at, err = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local f = held(id, receipt)
if not f then return 0 end
local queue = f[3]
refuse_damaged(queue)
drop_entry(queue, f[4])
if f[7] == '1' then
  end_cancelled(id, queue, tonumber(f[5]) or 0, now, ARGV[7])
  return 1
end
redis.call('ZREM', k_q(queue, 'leases'), id)
-- The run finished (it failed, and said so): the job is no longer interrupted.
redis.call('HSET', k_job(id), 'error', err, 'traceback', ARGV[8] or '', 'interrupted', '0')
if tonumber(at) > tonumber(now) then
  redis.call('HSET', k_job(id), 'status', 'delayed', 'entry', '', 'receipt', '')
  redis.call('ZADD', k_q(queue, 'delayed'), tonumber(at), id)
  note_delayed(queue, at, now)
else
  make_ready(id, queue, at)
end
return 1

-- @dead
-- ARGV: P, now, id, receipt, error, traceback, result_ttl_ms
local now, id, receipt, err, trace, result_ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local f = held(id, receipt)
if not f then return 0 end
refuse_damaged(f[3])
drop_entry(f[3], f[4])
bury(id, f[3], f[5], err, trace, now, result_ttl)
return 1

-- @release
-- ARGV: P, now, result_ttl_ms, then pairs: id, receipt. Back to ready without
-- counting the attempt.
local checked = {}
for i = 4, #ARGV, 2 do
  local f = held(ARGV[i], ARGV[i + 1])
  if f and not checked[f[3]] then
    refuse_damaged(f[3])
    checked[f[3]] = true
  end
end
for i = 4, #ARGV, 2 do
  local id, receipt = ARGV[i], ARGV[i + 1]
  local f = held(id, receipt)
  if f then give_back(id, f[3], f[4], f[5], f[6], f[7], ARGV[2], ARGV[3]) end
end
return 1

-- @release_consumers
-- ARGV: P, prefix, now, result_ttl_ms. Every job in flight under a consumer whose
-- name starts with prefix goes back to ready without counting the attempt (what
-- was handed to one while idle included: it is in flight under its lease), and
-- their idle registrations end first, so that nothing is handed to them again.
-- Returns the count.
local prefix = ARGV[2]
local count = 0
for _, queue in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  for _, consumer in ipairs(redis.call('ZRANGE', k_q(queue, 'idlers'), 0, -1)) do
    if string.sub(consumer, 1, #prefix) == prefix then unregister(queue, consumer) end
  end
  for _, id in ipairs(redis.call('ZRANGE', k_q(queue, 'leases'), 0, -1)) do
    local f = job_hmget(id, 'status', 'consumer', 'entry', 'attempt', 'started', 'cancel')
    if f and f[1] == 'in_flight' and f[2] and string.sub(f[2], 1, #prefix) == prefix then
      give_back(id, queue, f[3], f[4], f[5], f[6], ARGV[3], ARGV[4])
      count = count + 1
    end
  end
end
return count

-- @start
-- ARGV: P, now, then pairs: id, receipt. Counts the attempt of each held delivery
-- whose lease is live (once). Returns pairs: id, attempt, for the deliveries started.
local now = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local id, receipt = ARGV[i], ARGV[i + 1]
  local f = held(id, receipt)
  if f then
    -- A held job's lease entry is there (every script that drops it moves the
    -- job on), scored no lower than the hash's exact expiry, which decides
    -- (lease_until): so the score is read only for a lease written without one.
    local live = tonumber(f[8])
    if not live then live = tonumber(redis.call('ZSCORE', k_q(f[3], 'leases'), id) or '') end
    if live and live > now then
      local attempt = tonumber(f[5])
      if f[6] == '0' then
        attempt = attempt + 1
        redis.call('HSET', k_job(id), 'attempt', attempt, 'started', '1', 'started_at', ARGV[2])
      end
      out[#out + 1] = id
      out[#out + 1] = attempt
    end
  end
end
return out

-- @extend
-- ARGV: P, now, lease_expires, then pairs: id, receipt. Returns the ids renewed.
local now, lease_expires = tonumber(ARGV[2]), ARGV[3]
local out = {}
for i = 4, #ARGV, 2 do
  local id, receipt = ARGV[i], ARGV[i + 1]
  local f = held(id, receipt)
  if f then
    local current = redis.call('ZSCORE', k_q(f[3], 'leases'), id)
    if current and lease_until(f[8], current) > now then
      redis.call('ZADD', k_q(f[3], 'leases'), lease_score(lease_expires), id)
      redis.call('HSET', k_job(id), 'lease_expires', lease_expires)
      out[#out + 1] = id
    end
  end
end
return out

-- @await
-- ARGV: P, id, wait_ms. The result if the job has one; else the caller is
-- counted as a waiter (atomically with the check, so no finish is missed) and
-- BLPOPs the job's notify list next.
local id, wait_ms = ARGV[2], tonumber(ARGV[3])
local result = redis.call('GET', P .. ':result:' .. id)
if result then return result end
local waiting = P .. ':waiting:' .. id
redis.call('INCR', waiting)
redis.call('PEXPIRE', waiting, wait_ms + 1000)
return false

-- @stats
-- ARGV: P, now, queues... (none: every queue). Returns 7 per queue:
-- name ready delayed in_flight done dead cancelled; for a queue whose keys
-- could not be read (wrong_key): name, the key, its type, the type expected, 0 0 0.
-- As _redis_errors.wrong_type_text says it, WRONGTYPE typed.
local function wrong_type_reply(key, found, wanted)
  return redis.error_reply('WRONGTYPE the key ' .. key .. ' holds a ' .. found .. ', not a '
    .. wanted .. " (another program's key under guild's prefix?)")
end
local now = tonumber(ARGV[2])
local queues = {}
if #ARGV > 2 then
  for i = 3, #ARGV do queues[#queues + 1] = ARGV[i] end
else
  queues = redis.pcall('SMEMBERS', P .. ':queues')
  if queues.err then
    local key, found, wanted = wrong_key(nil)
    if key then return wrong_type_reply(key, found, wanted) end
    return queues
  end
end
local function count(queue)
  local stream = k_q(queue, 'ready')
  local length = redis.call('XLEN', stream)
  local pending = 0
  local ok, summary = pcall(redis.call, 'XPENDING', stream, GROUP)
  if ok then pending = tonumber(summary[1]) end
  local expired = redis.call('ZCOUNT', k_q(queue, 'leases'), '-inf', now)
  local live = redis.call('ZCOUNT', k_q(queue, 'leases'), '(' .. now, '+inf')
  -- Scored above now yet expired by their hashes: up to a second's worth (lease_score).
  local edge = redis.call('ZRANGEBYSCORE', k_q(queue, 'leases'), '(' .. now, math.ceil(now),
    'WITHSCORES')
  for i = 1, #edge, 2 do
    local f = job_hmget(edge[i], 'lease_expires')
    if lease_until(f and f[1], edge[i + 1]) <= now then
      expired, live = expired + 1, live - 1
    end
  end
  local due = redis.call('ZCOUNT', k_q(queue, 'delayed'), '-inf', now)
  local later = redis.call('ZCOUNT', k_q(queue, 'delayed'), '(' .. now, '+inf')
  local done = redis.call('HGET', P .. ':done', queue) or '0'
  local dead = redis.call('ZCARD', k_q(queue, 'dead'))
  local levels = redis.call('ZCARD', k_q(queue, 'ready:1')) + redis.call('ZCARD', k_q(queue, 'ready:-1'))
  return length - pending + expired + due + levels, later, live, tonumber(done), dead,
    tonumber(redis.call('HGET', P .. ':cancelled', queue) or '0')
end
local out = {}
for _, queue in ipairs(queues) do
  -- One pcall a queue, no command more: a queue with a key of another type
  -- (another program's) is reported as such, and the others are still counted.
  local ok, ready, delayed, in_flight, done, dead, cancelled = pcall(count, queue)
  if ok then
    out[#out + 1] = queue
    out[#out + 1] = ready
    out[#out + 1] = delayed
    out[#out + 1] = in_flight
    out[#out + 1] = done
    out[#out + 1] = dead
    out[#out + 1] = cancelled
  else
    local key, found, wanted = wrong_key(queue)
    if not key then error(ready) end
    -- A shared key fails every queue: the whole call fails, naming it.
    if key:sub(1, #P + 3) ~= P .. ':q:' then return wrong_type_reply(key, found, wanted) end
    for _, v in ipairs({queue, key, found, wanted, 0, 0, 0}) do out[#out + 1] = v end
  end
end
return out

-- @wrong_key
-- ARGV: P, queues... Returns the first key of another type than guild's, of the
-- shared ones then each queue's (wrong_key): {key, type, type expected, its
-- queue ('' for a shared key)}; or {}.
local key, found, wanted = wrong_key(nil)
if key then return {key, found, wanted, ''} end
for i = 2, #ARGV do
  key, found, wanted = wrong_key(ARGV[i])
  if key then return {key, found, wanted, ARGV[i]} end
end
return {}

-- @requeue
-- ARGV: P, now, queue filter ('' = any), then ids (none: every dead job). Returns the count.
local now, filter = ARGV[2], ARGV[3]
local ids = {}
if #ARGV > 3 then
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  for _, queue in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
    if filter == '' or filter == queue then
      for _, id in ipairs(redis.call('ZRANGE', k_q(queue, 'dead'), 0, -1)) do ids[#ids + 1] = id end
    end
  end
end
local count = 0
for _, id in ipairs(ids) do
  local f = job_hmget(id, 'status', 'queue')
  if f and f[1] == 'dead' and (filter == '' or filter == f[2]) then
    -- Ready first: a damaged key of its queue fails the call before the job
    -- leaves its dead letters (it would be in no set, found by no requeue).
    make_ready(id, f[2], now)
    redis.call('HSET', k_job(id), 'attempt', 0, 'not_before', '', 'error', '', 'traceback', '',
      'interrupted', '0', 'cancel', '0')
    redis.call('DEL', P .. ':result:' .. id)
    redis.pcall('ZREM', k_q(f[2], 'dead'), id)
    count = count + 1
  end
end
return count

-- @dead_many
-- ARGV: P, queue, now, result_ttl_ms, then triples: id, receipt, error. Claim's
-- follow-up for entries that are no valid job (see _codec.job_from_row): each
-- still held goes to the dead letters of queue, where claim found it (its own
-- 'queue' field may be the thing that is wrong).
local queue, now, result_ttl = ARGV[2], ARGV[3], ARGV[4]
for i = 5, #ARGV, 3 do
  local id, receipt, err = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local f = held(id, receipt)
  if f then bury(id, queue, f[5], err, '', now, result_ttl) end
end
return 1

-- @store_raw
-- ARGV: P, queue, then pairs: field, value. The RawStorable test hook: a job hash
-- exactly as given (garbage included), ready on queue.
local queue = ARGV[2]
local id = ''
for i = 3, #ARGV, 2 do
  if ARGV[i] == 'id' then id = ARGV[i + 1] end
end
for i = 3, #ARGV, 2 do redis.call('HSET', k_job(id), ARGV[i], ARGV[i + 1]) end
if redis.call('SADD', P .. ':queues', queue) == 1 then
  redis.pcall('XGROUP', 'CREATE', k_q(queue, 'ready'), GROUP, '0', 'MKSTREAM')
end
make_ready(id, queue)
return 1

-- @cancel
-- ARGV: P, now, result_ttl_ms, then ids. A waiting job, a prefetched one, one
-- handed to an idle worker and still in its inbox, and one whose lease ran out
-- end cancelled at once; a running one gets a request
-- ('cancel' = '1', and its id in P:cancels) for its worker to act on. Returns
-- the ids answered: unknown and finished ones are left out.
local now, result_ttl = ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local f = job_hmget(id, 'status', 'queue', 'entry', 'attempt', 'started', 'consumer',
    'lease_expires') or {}
  local status, queue = f[1], f[2]
  if queue and (status == 'ready' or status == 'delayed' or status == 'in_flight') then
    local running = false
    if status == 'in_flight' and f[5] ~= '0' then
      local lease = redis.call('ZSCORE', k_q(queue, 'leases'), id)
      running = lease and lease_until(f[7], lease) > tonumber(now)
      -- Handed to an idle worker that has not popped it: started on paper only,
      -- so its run is not counted either.
      if running and f[6] and strike_handed(queue, f[6], id) then
        running = false
        f[4] = tostring(math.max(0, (tonumber(f[4]) or 1) - 1))
        redis.call('HSET', k_job(id), 'attempt', f[4], 'started', '0')
      end
    end
    if running then
      -- The set first: a request in the hash alone is one no worker looks for.
      redis.call('SADD', P .. ':cancels', id)
      redis.call('HSET', k_job(id), 'cancel', '1')
    else
      -- Ended first (its count is the write that can fail), then out of the
      -- stream and ready sets: a damaged key fails the cancel with the job still
      -- where a claim finds it.
      end_cancelled(id, queue, tonumber(f[4]) or 0, now, result_ttl)
      drop_entry(queue, f[3])
      if status == 'ready' then unready(queue, id) end
    end
    out[#out + 1] = id
  end
end
return out

-- @cancel_requested
-- ARGV: P, then ids (a worker's jobs in flight). Returns those with a live cancel
-- request; drops stale ones (the job finished first) from P:cancels on the way.
local cancels = P .. ':cancels'
if redis.call('SCARD', cancels) == 0 then return {} end
local asked = {}
for i = 2, #ARGV do asked[ARGV[i]] = true end
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', cancels)) do
  local f = job_hmget(id, 'status', 'cancel')
  if not f or f[1] ~= 'in_flight' or f[2] ~= '1' then
    redis.call('SREM', cancels, id)
  elseif asked[id] then
    out[#out + 1] = id
  end
end
return out

-- @finish_cancelled
-- ARGV: P, now, result_ttl_ms, then pairs: id, receipt. Each still held ends cancelled.
for i = 4, #ARGV, 2 do
  local id, receipt = ARGV[i], ARGV[i + 1]
  local f = held(id, receipt)
  if f then
    -- Ended first: a damaged count fails the call with the job still held.
    end_cancelled(id, f[3], tonumber(f[5]) or 0, ARGV[2], ARGV[3])
    drop_entry(f[3], f[4])
  end
end
return 1

-- @set_progress
-- ARGV: P, then fives: id, receipt, fraction, message, at. Stores the progress
-- of each job still held under that receipt (see Broker.set_progress).
for i = 2, #ARGV, 5 do
  local id, receipt = ARGV[i], ARGV[i + 1]
  if held(id, receipt) then
    redis.call('HSET', k_job(id), 'progress', ARGV[i + 2], 'progress_message', ARGV[i + 3],
      'progress_at', ARGV[i + 4])
  end
end
return 1

-- @prune_dead
-- ARGV: P, queue, cutoff, limit. Deletes up to limit dead jobs of queue that died
-- at cutoff or before (guild.Retention.dead): hash, result, dead-letter entry.
-- Returns how many.
local queue, cutoff, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', k_q(queue, 'dead'), '-inf', cutoff, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('DEL', k_job(id), P .. ':result:' .. id)
  redis.call('ZREM', k_q(queue, 'dead'), id)
end
return #ids

-- @purge
-- ARGV: P, queue, now, cutoff ('' = any age), statuses (comma separated), then ids.
-- Deletes each id that is a job of queue in one of statuses (ready and delayed
-- told apart by now) whose age runs from cutoff or before: enqueued_at for a
-- waiting job, finished_at (from its result) or died_at for a finished one.
-- A job in flight is never touched. Returns how many were deleted.
local queue, now, cutoff = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local wanted = {}
for status in string.gmatch(ARGV[5], '[^,]+') do wanted[status] = true end
local count = 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local f = job_hmget(id, 'status', 'queue', 'entry', 'enqueued_at', 'died_at') or {}
  local status, since = f[1], nil
  if f[2] == queue and status then
    if status == 'ready' or status == 'delayed' then
      -- pcalls here and below: a key of the queue's of another type (another
      -- program's) holds none of its jobs, and a job half deleted would be
      -- in no set a purge walks again.
      local due = redis.pcall('ZSCORE', k_q(queue, 'delayed'), id)
      if type(due) == 'table' then due = nil end
      if due and tonumber(due) > now then status = 'delayed' else status = 'ready' end
      since = tonumber(f[4])
    elseif status == 'dead' then
      since = tonumber(f[5])
    elseif status == 'done' or status == 'cancelled' then
      local result = redis.call('GET', P .. ':result:' .. id)
      if result then since = tonumber(cjson.decode(result)['finished_at']) end
    end
    if wanted[status] and (cutoff == nil or (since ~= nil and since <= cutoff)) then
      drop_entry(queue, f[3])
      unready(queue, id)
      redis.pcall('ZREM', k_q(queue, 'delayed'), id)
      redis.pcall('ZREM', k_q(queue, 'dead'), id)
      redis.pcall('SREM', P .. ':cancels', id)
      redis.call('DEL', k_job(id), P .. ':result:' .. id)
      count = count + 1
    end
  end
end
return count

-- @scan_jobs
-- ARGV: P, cursor, count. One SCAN step over the prefix's job hashes, run here so
-- that on a cluster it runs on the node owning the prefix's slot. Returns the
-- next cursor, then the job ids.
local found = redis.call('SCAN', ARGV[2], 'MATCH', P .. ':job:*', 'COUNT', tonumber(ARGV[3]))
local out = {found[1]}
local start = string.len(P .. ':job:') + 1
for _, name in ipairs(found[2]) do out[#out + 1] = string.sub(name, start) end
return out

-- @canary_put
-- ARGV: P, queue, expected version, record JSON, share. A canary rollout's record
-- (guild.rollout), written only if its version is still the expected one; the
-- share goes where enqueue reads it (P:canary:shares, only while above 0).
-- Returns 1 when written, 0 when another writer got there first.
local queue, expected, record, share = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local current = redis.call('HGET', P .. ':canary:versions', queue) or '0'
if tonumber(current) ~= tonumber(expected) then return 0 end
-- The other two hashes looked at before the version moves on: a version
-- raised for a record never written would refuse every later write of it.
for _, key in ipairs({P .. ':canary', P .. ':canary:shares'}) do
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= 'hash' then
    return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
  end
end
redis.call('HSET', P .. ':canary:versions', queue, tonumber(expected) + 1)
redis.call('HSET', P .. ':canary', queue, record)
if share > 0 then
  redis.call('HSET', P .. ':canary:shares', queue, ARGV[5])
else
  redis.call('HDEL', P .. ':canary:shares', queue)
end
return 1

-- @canary_move
-- ARGV: P, lane, queue. Hands every waiting job of a canary lane back to its
-- queue: delayed ones keep their due time, ready ones their order (after the
-- queue's own). Jobs in flight stay with their holders. Returns how many moved.
local lane, queue = ARGV[2], ARGV[3]
-- Each job leaves the lane's keys for the queue's: one of another type would
-- fail the call between the two. A rollback, not a hot path: both looked at.
refuse_damaged(lane)
refuse_damaged(queue)
if redis.call('SADD', P .. ':queues', queue) == 1 then
  redis.pcall('XGROUP', 'CREATE', k_q(queue, 'ready'), GROUP, '0', 'MKSTREAM')
end
local moved = 0
local delayed = redis.call('ZRANGE', k_q(lane, 'delayed'), 0, -1, 'WITHSCORES')
-- As an enqueue: the queue's idle workers registered past a moved job's due
-- time are woken (@after), or the job would wait for their registrations to end.
local now = server_ms() / 1000
for i = 1, #delayed, 2 do
  local id = delayed[i]
  redis.call('ZREM', k_q(lane, 'delayed'), id)
  redis.call('ZADD', k_q(queue, 'delayed'), delayed[i + 1], id)
  redis.pcall('HSET', k_job(id), 'queue', queue)
  note_delayed(queue, delayed[i + 1], now)
  moved = moved + 1
end
for _, level in ipairs({'1', '-1'}) do
  local ready = redis.call('ZRANGE', k_q(lane, 'ready:' .. level), 0, -1, 'WITHSCORES')
  for i = 1, #ready, 2 do
    local id = ready[i]
    redis.call('ZREM', k_q(lane, 'ready:' .. level), id)
    redis.pcall('HSET', k_job(id), 'queue', queue)
    make_ready(id, queue, ready[i + 1], level)
    moved = moved + 1
  end
end
for _, item in ipairs(redis.call('XRANGE', k_q(lane, 'ready'), '-', '+')) do
  local entry, fields = item[1], item[2]
  local id = fields[2]
  local f = job_hmget(id, 'status', 'entry')
  if f and f[1] == 'ready' and f[2] == entry then
    drop_entry(lane, entry)
    redis.call('HSET', k_job(id), 'queue', queue)
    make_ready(id, queue)
    moved = moved + 1
  end
end
return moved

-- @canary_move_dead
-- ARGV: P, lane, queue. Files the dead letters of a canary lane under its queue
-- (same time of death), for a rollback to requeue them there. Returns their ids.
local lane, queue = ARGV[2], ARGV[3]
local dead = redis.call('ZRANGE', k_q(lane, 'dead'), 0, -1, 'WITHSCORES')
local out = {}
if #dead > 0 and redis.call('SADD', P .. ':queues', queue) == 1 then
  redis.pcall('XGROUP', 'CREATE', k_q(queue, 'ready'), GROUP, '0', 'MKSTREAM')
end
for i = 1, #dead, 2 do
  local id = dead[i]
  -- Filed under queue first (the write that can fail), then out of the lane.
  redis.call('ZADD', k_q(queue, 'dead'), dead[i + 1], id)
  redis.call('ZREM', k_q(lane, 'dead'), id)
  redis.pcall('HSET', k_job(id), 'queue', queue)
  out[#out + 1] = id
end
return out
