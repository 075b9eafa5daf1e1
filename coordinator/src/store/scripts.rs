//! The Lua scripts: one per task transition, each atomic over one task's hash
//! (and its resume record, which shares the hash tag).
//!
//! A transition made by a command writes the command's mark (its message id
//! or body digest) into the task's `cmd` field in the same script: applying a
//! command to a task and recording that it was applied are one step, so a
//! redelivery after a coordinator died half-way never applies it twice
//! (docs/contract.md#idempotency).

use redis::Script;
use std::sync::LazyLock;

macro_rules! script {
    ($name:ident, $src:expr) => {
        pub(super) static $name: LazyLock<Script> = LazyLock::new(|| Script::new($src));
    };
}

script!(
    START,
    r#"
-- KEYS[1] task. ARGV: spec, callback, now, ttl, start_ms, end_ms, scheduled, position, command mark
local old_state = redis.call('HGET', KEYS[1], 'state') or ''
local old_worker = redis.call('HGET', KEYS[1], 'worker') or ''
local old_epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local e = old_epoch + 1
local state, lease = 'leased', tonumber(ARGV[3]) + tonumber(ARGV[4])
if ARGV[7] == '1' then state, lease = 'scheduled', 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'callback', ARGV[2], 'state', state, 'epoch', e,
  'worker', '', 'lease_until', lease, 'position', ARGV[8], 'destinations', '[]', 'start_ms', ARGV[5],
  'end_ms', ARGV[6], 'updated_ms', ARGV[3], 'beat_ms', 0, 'error', '', 'cmd', ARGV[9])
redis.call('PERSIST', KEYS[1])
if old_state ~= 'leased' and old_state ~= 'running' then old_worker = '' end
return {old_worker, old_epoch, e}
"#
);

script!(
    ISSUE,
    r#"
-- KEYS[1] task. ARGV: now, ttl, mode ('due' | 'expired' | 'reoffer'), epoch (reoffer)
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return false end
local now = tonumber(ARGV[1])
local unheld = st == 'leased' and (redis.call('HGET', KEYS[1], 'worker') or '') == ''
if ARGV[3] == 'due' then
  if st ~= 'scheduled' or tonumber(redis.call('HGET', KEYS[1], 'start_ms') or '0') > now then return false end
elseif ARGV[3] == 'expired' then
  if (st ~= 'leased' and st ~= 'running') or tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') > now then return false end
elseif ARGV[3] == 'reoffer' then
  -- An order that could not be published (the broker was down): offered again,
  -- with a fresh lease, while no worker holds its epoch.
  if not unheld or tonumber(redis.call('HGET', KEYS[1], 'epoch')) ~= tonumber(ARGV[4]) then return false end
else
  return false
end
-- An order no worker took (leased, no holder) is offered again under the same
-- epoch: the old message has expired from the queue, and if a worker took it
-- after all, the first to report the epoch holds it (RENEW). Epochs only grow
-- when a run may have existed, so a fleet that is full does not climb them.
local e
if ARGV[3] == 'reoffer' then
  e = tonumber(ARGV[4])
  st = 'reoffered'
elseif ARGV[3] == 'expired' and unheld then
  e = tonumber(redis.call('HGET', KEYS[1], 'epoch'))
  st = 'unclaimed'
else
  e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
redis.call('HSET', KEYS[1], 'state', 'leased', 'worker', '', 'lease_until', now + tonumber(ARGV[2]), 'updated_ms', now)
return {e, redis.call('HGET', KEYS[1], 'spec'), redis.call('HGET', KEYS[1], 'position') or '',
  redis.call('HGET', KEYS[1], 'callback') or '', st}
"#
);

script!(
    RENEW,
    r#"
-- KEYS[1] task. ARGV: epoch, worker, now, ttl, position, destinations, aligned
-- Returns 'unknown', 'revoked', or 'renewed:N': N > 0 is the task's next
-- deadline, which the caller writes into the deadline index; N = 0 means the
-- index holds one far enough ahead already (field due_ms), which stays
-- correct because a deadline only moves later. The entry moves on a worker's
-- aligned heartbeats (ARGV[7] = '1') when less than 3/4 ttl ahead, so all its
-- tasks move together; on others only when less than ttl/4 ahead
-- (docs/design/fleet.md "Heartbeat").
local f = redis.call('HMGET', KEYS[1], 'state', 'epoch', 'worker', 'end_ms', 'due_ms')
local st = f[1]
if not st then return 'unknown' end
if tonumber(f[2]) ~= tonumber(ARGV[1]) or (st ~= 'leased' and st ~= 'running') then
  return 'revoked'
end
-- One holder per epoch: the first worker to report it takes the lease; another
-- worker claiming the same epoch (a redelivered order) is turned away.
local holder = f[3] or ''
if holder ~= '' and holder ~= ARGV[2] then return 'revoked' end
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local next_ms = now + ttl
local end_ms = tonumber(f[4] or '0') or 0
if end_ms > 0 and end_ms < next_ms then next_ms = end_ms end
local due = tonumber(f[5] or '0') or 0
local lead = due - now
local tell = 0
if due == 0 or next_ms < due or lead < ttl / 4 or (ARGV[7] == '1' and lead < ttl * 3 / 4) then
  tell = next_ms
  due = next_ms
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[2], 'lease_until', now + ttl,
  'position', ARGV[5], 'destinations', ARGV[6], 'beat_ms', now, 'updated_ms', now, 'due_ms', due)
return 'renewed:' .. tell
"#
);

script!(
    RELEASE,
    r#"
-- KEYS[1] task, KEYS[2] resume. ARGV: epoch, position, now, ttl
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'stale'} end
local e = tonumber(redis.call('HGET', KEYS[1], 'epoch'))
local given = tonumber(ARGV[1])
if (st == 'stopped' or st == 'finished') and e == given + 1 then
  redis.call('HSET', KEYS[1], 'position', ARGV[2])
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'position', ARGV[2]) end
  return {'exact'}
end
if e ~= given or (st ~= 'leased' and st ~= 'running') then return {'stale'} end
local now = tonumber(ARGV[3])
e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'state', 'leased', 'worker', '', 'lease_until', now + tonumber(ARGV[4]),
  'position', ARGV[2], 'updated_ms', now)
return {'reissued', e, redis.call('HGET', KEYS[1], 'spec'), redis.call('HGET', KEYS[1], 'callback') or '', st}
"#
);

script!(
    FINISH,
    r#"
-- KEYS[1] task. ARGV: epoch, state, position, now, error
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'epoch')) ~= tonumber(ARGV[1]) or (st ~= 'leased' and st ~= 'running') then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'worker', '', 'lease_until', 0, 'position', ARGV[3],
  'updated_ms', ARGV[4], 'error', ARGV[5])
redis.call('EXPIRE', KEYS[1], 172800)
return 1
"#
);

script!(
    STOP,
    r#"
-- KEYS[1] task, KEYS[2] resume. ARGV: now, final_state, write_resume, resume_ttl, command mark
local st = redis.call('HGET', KEYS[1], 'state')
if not st or st == 'stopped' or st == 'finished' or st == 'failed' then return false end
local worker = redis.call('HGET', KEYS[1], 'worker') or ''
local e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'worker', '', 'lease_until', 0, 'updated_ms', ARGV[1])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'cmd', ARGV[5]) end
-- Over: the record stays readable for 48 h (like a resume record), then goes.
redis.call('EXPIRE', KEYS[1], 172800)
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'spec', redis.call('HGET', KEYS[1], 'spec'),
    'position', redis.call('HGET', KEYS[1], 'position') or '',
    'callback', redis.call('HGET', KEYS[1], 'callback') or '', 'stopped_ms', ARGV[1])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
end
return {worker, e - 1}
"#
);

script!(
    SET_SPEC,
    r#"
-- KEYS[1] task. ARGV: expected epoch, spec, now, command mark
if tonumber(redis.call('HGET', KEYS[1], 'epoch') or '-1') ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'updated_ms', ARGV[3], 'cmd', ARGV[4])
return 1
"#
);

script!(
    RECLAIM,
    r#"
-- KEYS[1] task. ARGV: epoch, worker, spec, position, callback, now, ttl, end_ms
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'spec', ARGV[3], 'callback', ARGV[5], 'state', 'running', 'epoch', ARGV[1],
  'worker', ARGV[2], 'lease_until', now + tonumber(ARGV[7]), 'position', ARGV[4], 'destinations', '[]',
  'start_ms', 0, 'end_ms', ARGV[8], 'updated_ms', now, 'beat_ms', now, 'error', '')
return 1
"#
);
