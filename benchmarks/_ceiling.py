"""``throughput.py --also-ceiling``: what a worker whose rendering processes are each their
own consumer of the queues (no main process handing messages over) would reach. A
measurement of a design pdftasks does not have, not a way to run it. Two rows:

**one script per job** (:func:`consume`, N spawned processes). Between two renders one Lua
script (``STEP``):

1. ends the previous job as ``JobStore.finish`` does (COMPLETED transition with the job
   store's own ``move()``, the store event's ``PUBLISH``, the worker's metrics counters
   (``attempt_counters``), Celery's SUCCESS result with the extended fields written with
   the job store's ``put()``, the changed record returned) and acknowledges its message
   (kombu's unacked record and index entry removed);
2. takes the next message, most urgent queue first (strict priority, one job per process),
   and records it as unacknowledged in kombu's format (``HSET unacked`` of ``[message,
   exchange, routing key]`` + ``ZADD unacked_index``);
3. begins it as ``JobStore.begin`` does (attempt count, PROCESSING, Celery's STARTED; its
   extended ``kwargs`` field holds the message body, which Lua cannot decode).

When no message waits, the process blocks in ``BRPOP`` and then sends the same script with
the message it got. It renders with ``PDFService.generate_pdf`` (warmed up, stylesheet
cache) on the key the task would use. Left out: the task's code and Celery's tracer (its
soft time-limit alarm, option checks, redelivery count check, hooks, log line), the
guard's checks on each message.

**the task as it is** (:func:`supervise_tasks` forks N :func:`consume_task` processes). One
script (``TAKE``) acknowledges the last message and takes the next one as above; then
``generate_pdf`` runs through Celery's tracer as in a pool process, with its own begin and
finish scripts, hooks and log line: three round trips per job.

**the task with one script per job** (:func:`supervise_tasks` with ``one_script``): as
*the task as it is*, but the end of a job, its acknowledgement, the next message and the
start of that job take one round trip: the task's own end script (``JobStore.finish``) and
``TAKE_AND_BEGIN`` (acknowledge, take the next message, begin it as ``JobStore.begin``
does) go in one pipeline, and the task's start script is not sent for a job begun that
way. Celery's tracer, the task's code, hooks and log line stay: the plan in
``docs/explanation/performance.md`` ("What a worker that reaches the target would be").

All leave out what surrounds the jobs: a supervisor that enforces the hard time limit and
replaces a crashed process, revokes, remote control, task events, retries with a
countdown (ETA messages), warm shutdown. So each row is an upper bound for its variant of
that design on this machine.

Functions at module level: spawned children import this file.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from typing import Any, NamedTuple

from pdftasks.stores.redis import _MOVE_AND_PUT  # the job store's move() and put()

# Both rows' scripts: acknowledge a message, and take one.
_ACK_AND_TAKE = """
local function ack(tag)
  redis.call('HDEL', 'unacked', tag)
  redis.call('ZREM', 'unacked_index', tag)
end
-- The message given (its queue too), or the next one of the queues ARGV[first..last], most
-- urgent first; recorded as unacknowledged as kombu's QoS.append does: [message, exchange,
-- routing key]. Returns the message, its queue and its decoded envelope, or nothing.
local function take(msg, queue, first, last, now)
  if msg == '' then
    msg = false
    for i = first, last do
      msg = redis.call('RPOP', ARGV[i])
      if msg then queue = ARGV[i]; break end
    end
    if not msg then return nil end
  end
  local m = cjson.decode(msg)
  local tag = m['properties']['delivery_tag']
  local exchange = m['properties']['delivery_info']['exchange']
  redis.call('HSET', 'unacked', tag,
    '[' .. msg .. ', ' .. cjson.encode(exchange) .. ', "' .. queue .. '"]')
  redis.call('ZADD', 'unacked_index', now, tag)
  return msg, queue, m
end
"""

# ARGV: ns, result ttl, now, the previous job (id, delivery tag, SUCCESS meta, event; '' =
# none), the head of the STARTED meta, a message already taken and its queue ('' = take
# one), then four counts (queues, the previous job's fields and values, the next job's
# fields and values, counters x 3) and those lists: the queues most urgent first, the
# fields, the counters (hash, field, amount) as in JobStore.finish.
STEP = _MOVE_AND_PUT + _ACK_AND_TAKE + """
local ns, ttl, now = ARGV[1], ARGV[2], ARGV[3]
local nq, nf, nb, nc = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]),
  tonumber(ARGV[14])
local q0 = 15
local f0 = q0 + nq
local b0 = f0 + nf
local c0 = b0 + nb
local record = {}
if ARGV[4] ~= '' then
  local id = ARGV[4]
  local job = ns .. ':job:' .. id
  if move(job, ns, id, 'completed', 'processing', f0, b0 - 1) == 1 then
    redis.call('PUBLISH', ns .. ':events', ARGV[7])
    for i = c0, c0 + nc - 1, 3 do
      local by = string.find(ARGV[i + 2], '[.eE]') and 'HINCRBYFLOAT' or 'HINCRBY'
      redis.call(by, ARGV[i], ARGV[i + 1], ARGV[i + 2])
    end
    record = redis.call('HGETALL', job)  -- returned as JobStore.finish does, for the hooks
  end
  put('celery-task-meta-' .. id, ARGV[6], ttl)
  ack(ARGV[5])
end
local msg, queue, m = take(ARGV[9], ARGV[10], q0, f0 - 1, now)
if not msg then return {record, false} end
local id = m['headers']['id']
local job = ns .. ':job:' .. id
local attempts, moved = 0, 0
if redis.call('EXISTS', job) == 1 then
  attempts = redis.call('HINCRBY', job, 'attempts', 1)
  moved = move(job, ns, id, 'processing', 'pending,retrying,processing', b0, c0 - 1)
  -- Celery's extended STARTED meta carries the task's arguments: here the message body
  if moved == 1 then
    put('celery-task-meta-' .. id, ARGV[8] .. ', "kwargs": ' .. cjson.encode(m['body'])
        .. ', "queue": "' .. queue .. '", "task_id": "' .. id .. '"}', ttl)
  end
end
return {record, msg, attempts, moved}
"""


class Ended(NamedTuple):
    """The job a process ended, for the next ``STEP`` to record."""

    job_id: str = ""
    delivery_tag: str = ""
    meta: str = ""
    event: str = ""
    fields: tuple[str, ...] = ()
    counters: tuple[str, ...] = ()


def consume(url: str, namespace: str, queues: list[str], output_dir: str,
            templates_dir: str, result_ttl: int, ready: Any) -> None:
    """The loop of one process (until it is terminated); ``ready`` is set once it is warm."""
    import redis

    from pdftasks.celery_app import GENERATE_PDF
    from pdftasks.contrib.monitoring import attempt_counters
    from pdftasks.render import PDFService, PDFServiceConfig
    from pdftasks.storage import storage_key

    service = PDFService(PDFServiceConfig(templates_dir=templates_dir, output_dir=output_dir),
                         cache_stylesheets=True)
    service.warm_up()
    client = redis.Redis.from_url(url, decode_responses=True)
    step = client.register_script(STEP)
    hostname = f"ceiling-{os.getpid()}@localhost"
    extended = {"name": GENERATE_PDF, "args": [], "worker": hostname, "retries": 0}
    started_head = json.dumps({"status": "STARTED",
                               "result": {"pid": os.getpid(), "hostname": hostname},
                               "traceback": None, "children": [], "date_done": None,
                               **extended})[:-1]
    ended, given = Ended(), ("", "")
    ready.set()
    while True:
        now = time.time()
        begin = ("started_at", str(now), "retry_count", "0")
        _record, msg, *_ = step(args=[
            namespace, result_ttl, now, ended.job_id, ended.delivery_tag, ended.meta,
            ended.event, started_head, *given, len(queues), len(ended.fields), len(begin),
            len(ended.counters), *queues, *ended.fields, *begin, *ended.counters])
        ended, given = Ended(), ("", "")
        if not msg:
            got = client.brpop(queues, timeout=1)
            if got:
                given = (got[1], got[0])
            continue
        started_at = time.time()
        message = json.loads(msg)
        job_id = message["headers"]["id"]
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        key = storage_key(namespace, job_id, kwargs["output_filename"])
        result = service.generate_pdf(kwargs["template"], kwargs["data"],
                                      kwargs["output_filename"], key=key)
        queue = message["properties"]["delivery_info"]["routing_key"]
        result.extra.update(started_at=started_at, priority=kwargs.get("priority"),
                            worker_pid=os.getpid(), queue=queue)
        done = dt.datetime.now(dt.UTC)
        meta = json.dumps({"status": "SUCCESS", "result": result.as_dict(), "traceback": None,
                           "children": [], "date_done": done.isoformat(), **extended,
                           "kwargs": kwargs, "queue": queue, "task_id": job_id})
        event = json.dumps({"event": "completed", "job_id": job_id, "error": None,
                            "ts": time.time()})
        counters = attempt_counters(namespace, "completed", str(kwargs.get("priority")),
                                    result.duration_ms / 1000)
        ended = Ended(job_id, message["properties"]["delivery_tag"], meta, event,
                      ("completed_at", str(done.timestamp()), "result_path", result.path,
                       "pages", str(result.pages), "error", ""),
                      tuple(str(v) for counter in counters for v in counter))


# The ``task`` row: the message is only taken here (KEYS none; ARGV: now, the ended job's
# delivery tag or '', a message already taken and its queue or '', then the queues); the
# task's own begin and finish scripts run as in a worker.
TAKE = _ACK_AND_TAKE + """
if ARGV[2] ~= '' then ack(ARGV[2]) end
local msg, queue = take(ARGV[3], ARGV[4], 5, #ARGV, ARGV[1])
if not msg then return false end
return {msg, queue}
"""

# The ``one_script`` task row: sent in one pipeline with the task's own end script. ARGV:
# now, the ended job's delivery tag or '', ns, max redeliveries, started_at, the head of
# the STARTED meta, result ttl, then the queues. Begins the message it takes as
# JobStore.begin does (attempt count, the redelivery check, PROCESSING, STARTED).
TAKE_AND_BEGIN = _MOVE_AND_PUT + _ACK_AND_TAKE + """
if ARGV[2] ~= '' then ack(ARGV[2]) end
local msg, queue, m = take('', '', 8, #ARGV, ARGV[1])
if not msg then return false end
local ns, id = ARGV[3], m['headers']['id']
local job = ns .. ':job:' .. id
local attempts, moved = 0, 0
if redis.call('EXISTS', job) == 1 then
  attempts = redis.call('HINCRBY', job, 'attempts', 1)
  local retries = tonumber(m['headers']['retries'] or 0)
  if attempts - retries - 1 <= tonumber(ARGV[4]) then
    moved = move(job, ns, id, 'processing', 'pending,retrying,processing', 1, 0)
    if moved == 1 then
      redis.call('HSET', job, 'started_at', ARGV[5], 'retry_count', retries)
      put('celery-task-meta-' .. id, ARGV[6] .. ', "kwargs": ' .. cjson.encode(m['body'])
          .. ', "queue": "' .. queue .. '", "task_id": "' .. id .. '"}', ARGV[7])
    end
  end
end
return {msg, queue, attempts, moved, id}
"""


def supervise_tasks(url: str, namespace: str, queues: list[str], log_path: str,
                   ready: list[Any], one_script: bool = False) -> None:
    """The ``task`` row's parent: builds the app once (every module imported), then forks a
    process per event in ``ready`` that runs :func:`consume_task`, as the prefork pool forks
    its processes from the worker's main process (their modules shared copy-on-write), and
    as the supervisor of that design would. It does nothing else until it is terminated,
    and then terminates them."""
    import logging
    import multiprocessing
    import signal

    from pdftasks.celery_app import create_app
    from pdftasks.settings import get_settings
    from pdftasks.worker import signals as worker_signals

    logging.basicConfig(filename=log_path, level=logging.INFO,
                        format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
    os.environ["PDFTASKS_BROKER_URL"] = url
    app = create_app(get_settings())
    settings = app.pdftasks_settings
    assert settings.queue_namespace == namespace
    worker_signals._quiet_celery_job_lines(settings.log_level)
    worker_signals._write_results_with_records(app, settings)  # as in a pool process
    ctx = multiprocessing.get_context("fork")
    kids = [ctx.Process(target=consume_task, args=(app, url, queues, event, one_script),
                        daemon=True)
            for event in ready]

    def stop(*_: Any) -> None:
        for kid in kids:
            kid.terminate()
        for kid in kids:
            kid.join(10)
        os._exit(0)

    for kid in kids:
        kid.start()
    signal.signal(signal.SIGTERM, stop)  # after the forks: not the children's handler
    for kid in kids:
        kid.join()


def consume_task(app: Any, url: str, queues: list[str], ready: Any,
                 one_script: bool = False) -> None:
    """The ``task`` rows' loop: one script takes the next message (and acknowledges the last
    one), then ``generate_pdf`` runs as in a pool process, through Celery's tracer, with its
    begin and finish scripts, hooks and log line: three round trips per job. With
    ``one_script`` (:func:`one_round_trip`), the end script also takes and begins the next
    job, which then runs without a start script or a take: one round trip per job while
    messages wait."""
    import gc

    import redis
    from celery.app.trace import trace_task

    from pdftasks.celery_app import GENERATE_PDF
    from pdftasks.render import apply_memory_limit
    from pdftasks.worker.tasks import render_service

    # As a worker's pool process starts (pdftasks.worker.signals._prepare_child).
    apply_memory_limit(app.pdftasks_settings.render_memory_limit_mb)
    render_service(app).warm_up()
    task = app.tasks[GENERATE_PDF]
    hostname = f"ceiling-task-{os.getpid()}@localhost"
    client = redis.Redis.from_url(url, decode_responses=True)
    take = client.register_script(TAKE)
    ended, given = "", ("", "")
    current = [""]  # the delivery tag of the job running, until its end script acknowledges it
    taken: list[Any] = []  # [message, queue] taken and begun by that end script
    if one_script:
        one_round_trip(app, hostname, queues, current, taken)
    ready.set()
    traced = 0
    while True:
        if traced == 1:
            # What the first job imported goes to the collector's permanent generation too,
            # as in a worker's pool process, where the main process imported it before the
            # warm-up froze it (PDFService.warm_up).
            gc.collect()
            gc.freeze()
        got = taken.pop() if taken else take(args=[time.time(), ended, *given, *queues])
        ended, given = "", ("", "")
        if not got:
            popped = client.brpop(queues, timeout=1)
            if popped:
                given = (popped[1], popped[0])
            continue
        msg, queue = got
        message = json.loads(msg)
        props, headers = message["properties"], message["headers"]
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        request = dict(headers, hostname=hostname, correlation_id=headers["id"],
                       reply_to=props.get("reply_to"), is_eager=False,
                       delivery_info={"exchange": "", "routing_key": queue,
                                      "priority": 0, "redelivered": False})
        current[0] = props["delivery_tag"]
        trace_task(task, headers["id"], args, kwargs, request, app=app, hostname=hostname,
                   eager=False)
        traced += 1
        ended, current[0] = current[0], ""  # unless the end script acknowledged it


def one_round_trip(app: Any, hostname: str, queues: list[str], current: list[str],
                   taken: list[Any]) -> None:
    """Make this process's job store send ``TAKE_AND_BEGIN`` with each end script (one
    pipeline): the job ends, its message (``current``) is acknowledged, and the next message
    is taken and begun; it goes to ``taken``, and the start script of that job is not sent
    (``begin`` answers with what the pipeline did)."""
    from pdftasks.celery_app import GENERATE_PDF
    from pdftasks.stores.redis import _FINISH
    from pdftasks.worker.tasks import job_store

    store = job_store(app)
    settings = app.pdftasks_settings
    client = store.client
    finish_sha, take_sha = client.script_load(_FINISH), client.script_load(TAKE_AND_BEGIN)
    started_head = json.dumps({"status": "STARTED",
                               "result": {"pid": os.getpid(), "hostname": hostname},
                               "traceback": None, "children": [], "date_done": None,
                               "name": GENERATE_PDF, "args": [], "worker": hostname,
                               "retries": 0})[:-1]
    begun: dict[str, tuple[int, bool]] = {}
    store_begin = store.begin

    def begin(job_id: str, *args: Any, **values: Any) -> tuple[int, bool]:
        got = begun.pop(job_id, None)
        return got if got is not None else store_begin(job_id, *args, **values)

    def finish(job_id: str, to: Any, allowed_from: Any, event: Any = None,
               results: Any = (), counters: Any = (), **values: Any) -> bool:
        # RedisJobStore.finish's script, with TAKE_AND_BEGIN in the same pipeline
        keys, args = store.finish_call(job_id, to, allowed_from, event, results, counters,
                                       values)
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(finish_sha, len(keys), *keys, *args)
        now = time.time()
        pipe.evalsha(take_sha, 0, now, current[0], store.namespace, settings.max_redeliveries,
                     repr(now), started_head, settings.result_expires_s, *queues)
        (moved, record), got = pipe.execute()
        current[0] = ""
        if got:
            msg, queue, attempts, moved_next, next_id = got
            begun[next_id] = (int(attempts), bool(moved_next))
            taken.append([msg, queue])
        return store.finished(job_id, moved, record)

    store.begin, store.finish = begin, finish  # type: ignore[method-assign]
