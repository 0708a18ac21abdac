"""``RedisJobStore``: a hash per job, a sorted set per status and priority, atomic
transitions in Lua, events on pub/sub."""

from __future__ import annotations

import builtins
import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pdftasks.errors import BrokerUnavailableError
from pdftasks.models import Job, JobPriority, JobStatus
from pdftasks.settings import JOB_RETENTION_S
from pdftasks.stores.base import MAX_DEAD_LETTERS, JobStore, _encode, dead_letter_entry

_TRANSITION = """
local job = KEYS[1]
local ns, id, to = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', job, 'status')
if not cur then return 0 end
local ok = false
for s in string.gmatch(ARGV[4], '[^,]+') do if s == cur then ok = true end end
if not ok then return 0 end
local prio = redis.call('HGET', job, 'priority')
local created = redis.call('HGET', job, 'created_at')
redis.call('ZREM', ns .. ':idx:' .. cur .. ':' .. prio, id)
redis.call('ZADD', ns .. ':idx:' .. to .. ':' .. prio, created, id)
redis.call('HSET', job, 'status', to)
for i = 5, #ARGV, 2 do redis.call('HSET', job, ARGV[i], ARGV[i + 1]) end
return 1
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


class _RedisErrors:
    """Turn connection failures into ``BrokerUnavailableError`` (typed, transient)."""

    def __init__(self, redis_module: Any) -> None:
        self.errors = (redis_module.ConnectionError, redis_module.TimeoutError)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and isinstance(exc, self.errors):
            raise BrokerUnavailableError(f"cannot reach the job store: {exc}") from exc
