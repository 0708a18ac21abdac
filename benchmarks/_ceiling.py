"""``throughput.py --also-ceiling``: what a consumer in each rendering process, with one
Redis round trip per job, would reach. A measurement of a design pdftasks does not have,
not a way to run it.

Each of N spawned processes is its own consumer of the pdftasks queues (no worker main
process, no hand-over through a pipe, no Celery request or trace). Between two renders it
sends one Lua script (``STEP``) that

1. ends the previous job as ``JobStore.finish`` does (COMPLETED transition, the store
   event's ``PUBLISH``, two metrics counters, Celery's SUCCESS result written as the result
   backend does, the changed record returned) and acknowledges its message (kombu's
   unacked record and index entry removed);
2. takes the next message, most urgent queue first (strict priority, one job per process),
   and records it as unacknowledged as kombu does (``HSET unacked`` + ``ZADD
   unacked_index``);
3. begins it as ``JobStore.begin`` does (attempt count, PROCESSING, Celery's STARTED).

When no message waits, the process blocks in ``BRPOP`` and then sends the same script with
the message it got. It renders with the worker's ``PDFService.generate_pdf`` on the key the
task would use. Everything else a worker does is missing: supervision (a hard time limit
that kills a runaway render, a crashed process replaced), retries, revokes, remote control,
task events, hooks and webhooks, the guard's checks on each message, log lines. So the row
is an upper bound for that design on this machine, with the job store's work per job as it
is today.

Functions at module level: spawned children import this file.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time

_MOVE = """
local function move(job, ns, id, to, allowed, fields)
  local cur = redis.call('HGET', job, 'status')
  if not cur then return 0 end
  local ok = false
  for s in string.gmatch(allowed, '[^,]+') do if s == cur then ok = true end end
  if not ok then return 0 end
  local prio = redis.call('HGET', job, 'priority')
  local created = redis.call('HGET', job, 'created_at')
  redis.call('ZREM', ns .. ':idx:' .. cur .. ':' .. prio, id)
  redis.call('ZADD', ns .. ':idx:' .. to .. ':' .. prio, created, id)
  redis.call('HSET', job, 'status', to)
  for i = 1, #fields, 2 do redis.call('HSET', job, fields[i], fields[i + 1]) end
  return 1
end
local function put(key, value, ttl)
  local cur = redis.call('GET', key)
  if cur and string.sub(cur, 1, 20) == '{"status": "SUCCESS"' then return end
  redis.call('SET', key, value, 'EX', ttl)
  redis.call('PUBLISH', key, value)
end
"""

# ARGV: ns, ttl, now, prev id ('' = none), prev delivery tag, prev fields (JSON list),
# prev SUCCESS meta, prev event, begin fields (JSON list), STARTED meta head, given message
# ('' = take one), given queue, then the queues, most urgent first.
STEP = _MOVE + """
local ns, ttl, now = ARGV[1], ARGV[2], ARGV[3]
local record = {}
if ARGV[4] ~= '' then
  local id = ARGV[4]
  local job = ns .. ':job:' .. id
  if move(job, ns, id, 'completed', 'processing', cjson.decode(ARGV[6])) == 1 then
    redis.call('PUBLISH', ns .. ':events', ARGV[8])
    redis.call('HINCRBY', ns .. ':metrics', 'completed', 1)
    redis.call('HINCRBYFLOAT', ns .. ':metrics', 'render_s', 0.05)
    record = redis.call('HGETALL', job)
  end
  put('celery-task-meta-' .. id, ARGV[7], ttl)
  redis.call('HDEL', 'unacked', ARGV[5])
  redis.call('ZREM', 'unacked_index', ARGV[5])
end
local msg, queue = ARGV[11], ARGV[12]
if msg == '' then
  msg = false
  for i = 13, #ARGV do
    msg = redis.call('RPOP', ARGV[i])
    if msg then queue = ARGV[i]; break end
  end
  if not msg then return {record, false} end
end
local m = cjson.decode(msg)
local tag, id = m['properties']['delivery_tag'], m['headers']['id']
redis.call('HSET', 'unacked', tag, '[' .. msg .. ', "", "' .. queue .. '"]')
redis.call('ZADD', 'unacked_index', now, tag)
local job = ns .. ':job:' .. id
local attempts = 0
local moved = 0
if redis.call('EXISTS', job) == 1 then
  attempts = redis.call('HINCRBY', job, 'attempts', 1)
  moved = move(job, ns, id, 'processing', 'pending,retrying', cjson.decode(ARGV[9]))
  if moved == 1 then put('celery-task-meta-' .. id, ARGV[10] .. id .. '"}', ttl) end
end
return {record, msg, attempts, moved}
"""


def consume(url: str, namespace: str, queues: list[str], output_dir: str,
            templates_dir: str) -> None:
    """The loop of one process (until it is terminated)."""
    import redis

    from pdftasks.render import PDFService, PDFServiceConfig
    from pdftasks.storage import storage_key

    service = PDFService(PDFServiceConfig(templates_dir=templates_dir, output_dir=output_dir),
                         cache_stylesheets=True)
    service.warm_up()
    client = redis.Redis.from_url(url, decode_responses=True)
    step = client.register_script(STEP)
    hostname = f"ceiling-{os.getpid()}@localhost"
    started_head = json.dumps({"status": "STARTED",
                               "result": {"pid": os.getpid(), "hostname": hostname},
                               "traceback": None, "children": [], "date_done": None})[:-1]
    started_head += ', "task_id": "'
    prev = ["", "", "[]", "", ""]
    given = ["", ""]
    while True:
        now = time.time()
        begin_fields = json.dumps(["started_at", str(now), "retry_count", "0"])
        _record, msg, *_ = step(args=[namespace, 86400, now, *prev, begin_fields,
                                      started_head, *given, *queues])
        given = ["", ""]
        if not msg:
            prev = ["", "", "[]", "", ""]
            got = client.brpop(queues, timeout=1)
            if got:
                given = [got[1], got[0]]
            continue
        started_at = time.time()
        message = json.loads(msg)
        job_id = message["headers"]["id"]
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        key = storage_key(namespace, job_id, kwargs["output_filename"])
        result = service.generate_pdf(kwargs["template"], kwargs["data"],
                                      kwargs["output_filename"], key=key)
        result.extra.update(started_at=started_at, priority=kwargs.get("priority"),
                            worker_pid=os.getpid())
        done = dt.datetime.now(dt.UTC)
        meta = json.dumps({"status": "SUCCESS", "result": result.as_dict(),
                           "traceback": None, "children": [],
                           "date_done": done.isoformat(), "task_id": job_id})
        fields = json.dumps(["completed_at", str(done.timestamp()), "result_path",
                             result.path, "pages", str(result.pages), "error", ""])
        event = json.dumps({"event": "completed", "job_id": job_id, "error": None,
                            "ts": time.time()})
        prev = [job_id, message["properties"]["delivery_tag"], fields, meta, event]
