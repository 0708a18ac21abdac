"""``RedisJobStore``: a hash per job, a sorted set per status and priority, atomic
transitions in Lua, events on pub/sub."""

from __future__ import annotations

import builtins
import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pdftasks.errors import BrokerUnavailableError
from pdftasks.models import Job, JobPriority, JobStatus
from pdftasks.settings import JOB_RETENTION_S
from pdftasks.stores.base import (
    MAX_DEAD_LETTERS,
    Counters,
    JobStore,
    ResultWrites,
    _encode,
    dead_letter_entry,
)

# A job's status change (every script below uses it): the record's status and fields, and
# the status index sorted sets, if its status is one of ``allowed``.
_MOVE = """
local function move(job, ns, id, to, allowed, first, last)
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
  for i = first, last, 2 do redis.call('HSET', job, ARGV[i], ARGV[i + 1]) end
  return 1
end
"""

# KEYS: job. ARGV: ns, id, to, allowed, then fields and values.
_TRANSITION = _MOVE + """
return move(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 5, #ARGV)
"""

# begin() and finish(): the record change, its event and Celery's result writes in one
# round trip. put() writes a result as Celery's Redis backend does (SET with expiry,
# PUBLISH on the key for AsyncResult.get()) and, like it, never over a stored SUCCESS.
_MOVE_AND_PUT = _MOVE + """
local function put(key, value, ttl)
  local cur = redis.call('GET', key)
  if cur then
    -- Celery's meta starts with its status; decode only what does not
    local head = string.sub(cur, 1, 20)
    if head == '{"status": "SUCCESS"' then return end
    if string.sub(head, 1, 12) ~= '{"status": "' then
      local ok, meta = pcall(cjson.decode, cur)
      if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return end
    end
  end
  if tonumber(ttl) > 0 then redis.call('SET', key, value, 'EX', ttl)
  else redis.call('SET', key, value) end
  redis.call('PUBLISH', key, value)
end
local function put_all(from)
  for i = 2, #KEYS do put(KEYS[i], ARGV[from + 2 * (i - 2)], ARGV[from + 2 * (i - 2) + 1]) end
end
"""

# KEYS: job, result keys. ARGV: ns, id, retries, max redeliveries, allowed, to, n (fields
# and values), fields and values, then (meta, ttl) per result key.
_BEGIN = _MOVE_AND_PUT + """
local job = KEYS[1]
if redis.call('EXISTS', job) == 0 then return {0, 0} end
local attempts = redis.call('HINCRBY', job, 'attempts', 1)
if attempts - tonumber(ARGV[3]) - 1 > tonumber(ARGV[4]) then return {attempts, 0} end
local n = tonumber(ARGV[7])
local moved = move(job, ARGV[1], ARGV[2], ARGV[6], ARGV[5], 8, 7 + n)
if moved == 1 then put_all(8 + n) end
return {attempts, moved}
"""

# KEYS: job, result keys. ARGV: ns, id, to, allowed, n, fields and values, event channel,
# event ('' = none), c (counters x 3), counters (hash, field, amount), then (meta, ttl) per
# result key. Returns {moved, the record after the move (flat), if moved}.
_FINISH = _MOVE_AND_PUT + """
local n = tonumber(ARGV[5])
local moved = move(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 6, 5 + n)
local c = tonumber(ARGV[8 + n])
if moved == 1 then
  if ARGV[7 + n] ~= '' then redis.call('PUBLISH', ARGV[6 + n], ARGV[7 + n]) end
  for i = 9 + n, 8 + n + c, 3 do
    local by = string.find(ARGV[i + 2], '[.eE]') and 'HINCRBYFLOAT' or 'HINCRBY'
    redis.call(by, ARGV[i], ARGV[i + 1], ARGV[i + 2])
  end
end
put_all(9 + n + c)
if moved == 1 then return {1, redis.call('HGETALL', KEYS[1])} end
return {0, {}}
"""

_PART_DONE = """
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local n = redis.call('SCARD', KEYS[2])
if redis.call('HGET', KEYS[1], 'status') == 'processing' then
  redis.call('HSET', KEYS[1], 'parts_done', n)
end
return n
"""


class RedisJobStore(JobStore):
    """Jobs as Redis hashes ``{ns}:job:{id}``; sorted sets ``{ns}:idx:{status}:{priority}``."""

    def __init__(self, url: str, namespace: str, retention_s: int = JOB_RETENTION_S) -> None:
        super().__init__(namespace, retention_s)
        import redis

        self._redis_module = redis
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                           socket_connect_timeout=5, health_check_interval=25)
        self._transition = self.client.register_script(_TRANSITION)
        self._part_done = self.client.register_script(_PART_DONE)
        self._begin = self.client.register_script(_BEGIN)
        self._finish = self.client.register_script(_FINISH)
        #: (job id, record) as the last finish() left it, and the one get() may answer with.
        self._last: tuple[str, dict[str, str]] | None = None
        self._remember: tuple[str, dict[str, str]] | None = None

    def _key(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}"

    def _idx(self, status: JobStatus, priority: JobPriority | int) -> str:
        return f"{self.namespace}:idx:{status.value}:{int(priority)}"

    def _guard(self) -> Any:
        return _RedisErrors(self._redis_module)

    def create_many(self, jobs: Iterable[Job]) -> None:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for job in jobs:
                key = self._key(job.job_id)
                pipe.hset(key, mapping=job.to_record())  # type: ignore[arg-type]
                pipe.expire(key, self.retention_s)
                pipe.zadd(self._idx(job.status, job.priority),
                          {job.job_id: job.created_at.timestamp()})
            pipe.execute()

    def get(self, job_id: str) -> Job | None:
        remembered = self._remember
        if remembered is not None and remembered[0] == job_id:
            return Job.from_record(remembered[1])
        with self._guard():
            rec = self.client.hgetall(self._key(job_id))
        return Job.from_record(rec) if rec.get("status") else None  # type: ignore[arg-type]

    def transition(self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
                   **values: Any) -> bool:
        args = [self.namespace, job_id, to.value, ",".join(s.value for s in allowed_from)]
        for key, value in _encode(values).items():
            args += [key, value]
        with self._guard():
            return bool(self._transition(keys=[self._key(job_id)], args=args))

    def record_part_done(self, parent_id: str, run: str, index: int, total: int) -> int:
        """A set of the parts done per split job: SADD is idempotent, SCARD the count."""
        keys = [self._key(parent_id), f"{self.namespace}:parts:{parent_id}:{run}"]
        with self._guard():
            return int(self._part_done(keys=keys, args=[index, self.retention_s]))

    def _result_writes(self, job_id: str, args: list[Any], results: ResultWrites
                       ) -> list[str]:
        """The keys of a begin/finish script (the job's record, then one per result), and
        each result's (meta, ttl) appended to ``args``."""
        keys = [self._key(job_id)]
        for key, meta, ttl in results:
            keys.append(key)
            args += [meta, ttl]
        return keys

    def begin(self, job_id: str, retries: int, max_redeliveries: int,
              allowed_from: Iterable[JobStatus], results: ResultWrites = (),
              **values: Any) -> tuple[int, bool]:
        """One script: attempt count, PROCESSING, the results (see ``JobStore.begin``)."""
        fields = _flat(values)
        args: list[Any] = [self.namespace, job_id, retries, max_redeliveries,
                           ",".join(s.value for s in allowed_from), JobStatus.PROCESSING.value,
                           len(fields), *fields]
        keys = self._result_writes(job_id, args, results)
        with self._guard():
            attempts, moved = self._begin(keys=keys, args=args)
        return int(attempts), bool(moved)

    def finish(self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
               event: dict[str, Any] | None = None, results: ResultWrites = (),
               counters: Counters = (), **values: Any) -> bool:
        """One script: the transition, its event, the counters (HINCRBYFLOAT), the results
        (see ``JobStore.finish``); the changed record is kept for ``remembered``."""
        keys, args = self.finish_call(job_id, to, allowed_from, event, results, counters,
                                      values)
        with self._guard():
            moved, record = self._finish(keys=keys, args=args)
        return self.finished(job_id, moved, record)

    def finish_call(self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
                    event: dict[str, Any] | None, results: ResultWrites, counters: Counters,
                    values: dict[str, Any]) -> tuple[list[str], list[Any]]:
        """The keys and arguments of ``finish``'s script (``_FINISH``)."""
        fields = _flat(values)
        flat_counters = [str(v) for counter in counters for v in counter]
        args: list[Any] = [self.namespace, job_id, to.value,
                           ",".join(s.value for s in allowed_from), len(fields), *fields,
                           f"{self.namespace}:events",
                           "" if event is None else json.dumps(event),
                           len(flat_counters), *flat_counters]
        return self._result_writes(job_id, args, results), args

    def finished(self, job_id: str, moved: int, record: list[str]) -> bool:
        """``finish``'s answer from its script's: whether the record moved; the changed
        record is kept for ``remembered``."""
        self._last = (job_id, dict(zip(record[::2], record[1::2], strict=True))) if moved \
            else None
        return bool(moved)

    def keeps_counters(self) -> bool:
        return True

    @contextlib.contextmanager
    def remembered(self, job_id: str) -> Iterator[None]:
        """``get(job_id)`` answers with the record the last ``finish`` of it returned."""
        last, self._last = self._last, None  # once: only right after that finish
        self._remember = last if last is not None and last[0] == job_id else None
        try:
            yield
        finally:
            self._remember = None

    def supports_result_writes(self, result_url: str) -> bool:
        """True when Celery's results are in this store's Redis database (the default: both
        on the broker's Redis)."""
        return _same_redis(self.url, result_url)

    def add_attempt(self, job_id: str) -> int:
        key = self._key(job_id)
        with self._guard():
            if not self.client.exists(key):
                return 0
            return int(self.client.hincrby(key, "attempts", 1))

    def delete(self, job_ids: Iterable[str]) -> None:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.delete(self._key(job_id))
                for status in JobStatus:
                    for prio in JobPriority:
                        pipe.zrem(self._idx(status, prio), job_id)
            pipe.execute()

    def _prune(self, pipe: Any) -> None:
        cutoff = time.time() - self.retention_s
        for status in JobStatus:
            for prio in JobPriority:
                pipe.zremrangebyscore(self._idx(status, prio), "-inf", cutoff)

    def list(self, status: JobStatus | None = None, limit: int | None = 100) -> builtins.list[Job]:
        statuses = [status] if status else list(JobStatus)
        end = -1 if limit is None else limit - 1
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            self._prune(pipe)
            for s in statuses:
                for prio in JobPriority:
                    pipe.zrevrange(self._idx(s, prio), 0, end, withscores=True)
            replies = pipe.execute()[len(JobStatus) * len(JobPriority):]
            ranked = sorted((item for reply in replies for item in reply),
                            key=lambda item: item[1], reverse=True)
            if limit is not None:
                ranked = ranked[:limit]
            ids = [job_id for job_id, _ in ranked]
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._key(job_id))
            records = pipe.execute()
        return [Job.from_record(r) for r in records if r.get("status")]

    def created_before(self, cutoff: float, statuses: Iterable[JobStatus]) -> builtins.list[str]:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for s in statuses:
                for prio in JobPriority:
                    pipe.zrangebyscore(self._idx(s, prio), "-inf", f"({cutoff}")
            return [job_id for reply in pipe.execute() for job_id in reply]

    def claim(self, key: str, ttl_s: int) -> bool:
        with self._guard():
            return bool(self.client.set(f"{self.namespace}:claim:{key}", "1", nx=True,
                                        ex=ttl_s))

    def counts(self) -> dict[JobStatus, dict[JobPriority, int]]:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            self._prune(pipe)
            for s in JobStatus:
                for prio in JobPriority:
                    pipe.zcard(self._idx(s, prio))
            replies = iter(pipe.execute()[len(JobStatus) * len(JobPriority):])
        return {s: {p: int(next(replies)) for p in JobPriority} for s in JobStatus}

    def publish(self, event: dict[str, Any]) -> None:
        with self._guard():
            self.client.publish(f"{self.namespace}:events", json.dumps(event))

    def dead_letter(self, reason: str, info: dict[str, Any]) -> None:
        """LPUSH onto ``{namespace}:dead``, trimmed to ``MAX_DEAD_LETTERS``."""
        key = f"{self.namespace}:dead"
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(key, json.dumps(dead_letter_entry(reason, info)))
            pipe.ltrim(key, 0, MAX_DEAD_LETTERS - 1)
            pipe.execute()

    def dead_letters(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        with self._guard():
            return [json.loads(e) for e in
                    self.client.lrange(f"{self.namespace}:dead", 0, max(limit, 1) - 1)]

    def events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(f"{self.namespace}:events")  # now, not at the first next()
        return self._follow(pubsub, stop)

    def _follow(self, pubsub: Any, stop: threading.Event) -> Iterator[dict[str, Any]]:
        try:
            while not stop.is_set():
                try:
                    message = pubsub.get_message(timeout=0.2)
                except self._redis_module.RedisError:
                    stop.wait(0.5)
                    continue
                if message and message.get("type") == "message":
                    yield json.loads(message["data"])
        finally:
            pubsub.close()

    def close(self) -> None:
        self.client.close()


def _flat(values: dict[str, Any]) -> list[str]:
    return [item for pair in _encode(values).items() for item in pair]


def _same_redis(a: str, b: str) -> bool:
    """Whether two Redis URLs name the same server and database (same scheme, host, port,
    user and database number; the password is not compared)."""
    from urllib.parse import urlsplit

    def where(url: str) -> tuple[Any, ...]:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            return (parts.scheme, url)
        db = parts.path.strip("/") or "0"
        query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
        return (parts.scheme, parts.hostname or "localhost", parts.port or 6379,
                parts.username or "", query.get("db", db))

    try:
        return where(a) == where(b)
    except ValueError:
        return False


class _RedisErrors:
    """Turn connection failures into ``BrokerUnavailableError`` (typed, transient)."""

    def __init__(self, redis_module: Any) -> None:
        self.errors = (redis_module.ConnectionError, redis_module.TimeoutError)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and isinstance(exc, self.errors):
            raise BrokerUnavailableError(f"cannot reach the job store: {exc}") from exc
