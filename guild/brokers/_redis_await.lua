-- The caller's half of get_result(wait=…) on one Redis (see redis.py): this script
-- and a BLPOP of P:notify:<id>, pipelined, so one round trip. Small, and sent
-- whole (EVAL): a script cache flushed since cannot leave the BLPOP waiting on
-- an answer that never comes.

-- @common
local P = ARGV[1]

-- @await
-- ARGV: P, id, wait_ms, enqueued. A result there already is pushed to the job's
-- notify list for the BLPOP behind this script to take at once (and returned);
-- else the caller is counted as a waiter, atomically with the check, so the
-- script that finishes the job pushes the result to it (notify in
-- _redis_functions.lua).
--
-- enqueued = '1': the job is the one an enqueue just before this script in the
-- same pipeline stored (enqueue_and_wait in redis.py). When no job <id> is there
-- (the enqueue failed, or its key matched another job, which is waited on next)
-- an empty element, which no result is, goes to the notify list instead, so the
-- BLPOP behind returns at once rather than at the end of the wait. Its DEL comes
-- first (the list is empty: the id is new): a first write Redis allows at
-- maxmemory, after which it lets the script's other writes through (a script is
-- never stopped half-way), so a Redis that refused the enqueue (OOM) still takes
-- the marker, or a waiter's count. Without it, no DEL: another caller's
-- pushed result may be waiting in the list.
local id, wait_ms = ARGV[2], tonumber(ARGV[3])
local list = P .. ':notify:' .. id
local result
if ARGV[4] == '1' then
  redis.call('DEL', list)
  result = redis.call('GET', P .. ':result:' .. id)
  if not result and redis.call('EXISTS', P .. ':job:' .. id) == 0 then result = '' end
else
  result = redis.call('GET', P .. ':result:' .. id)
end
if result then
  redis.call('RPUSH', list, result)
  redis.call('PEXPIRE', list, 60000)
  return result
end
local waiting = P .. ':waiting:' .. id
redis.call('INCR', waiting)
redis.call('PEXPIRE', waiting, wait_ms + 1000)
return false
