"""Job records on DynamoDB (``PDFTASKS_JOB_STORE_URL=dynamodb://TABLE``, the default on
SQS): ``DynamoDBJobStore``, chosen by ``pdftasks.stores.open_store``. Celery results go to
the same table (``pdftasks.brokers.sqs.DynamoDBResultBackend``); ``pdftasks aws-setup``
creates it (``pdftasks.contrib.aws.ensure_table``).

The table (``PDFTASKS_DYNAMODB_TABLE``, default ``pdftasks``) has a string partition key
``pk`` and sort key ``sk``; every item carries its kind in ``pk``:

==============================  ========  ==================================================
``pk``                          ``sk``    what
==============================  ========  ==================================================
``{ns}#job#{job_id}``           ``job``   one job record; ``status_key`` = ``{ns}#{status}``
                                          and ``created_ts`` feed the ``status-index`` GSI
``{ns}#counts#{day}#{shard}``   ``n``     counters ``{status}_{priority}`` of the jobs
                                          created that day (UTC), split over shards
``{ns}#claim#{key}``            ``claim`` a claimed beat slot (``claim()``)
``{ns}#events``                 ``{ts}…`` a lifecycle event, kept one hour
``result#{celery key}``         ``r``     a Celery result
==============================  ========  ==================================================

Every item has ``expires_at`` (epoch seconds), the table's TTL attribute. DynamoDB deletes
expired items within days, so reads also skip items whose ``expires_at`` has passed.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import math
import random
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pdftasks.awsclient import _code, thread_client
from pdftasks.errors import BrokerUnavailableError, InvalidDataError
from pdftasks.models import Job, JobPriority, JobStatus
from pdftasks.settings import JOB_RETENTION_S, Settings
from pdftasks.stores.base import JobStore, _encode

#: Name of the table's global secondary index on (status_key, created_ts).
STATUS_INDEX = "status-index"
#: The table's TTL attribute (epoch seconds).
TTL_ATTRIBUTE = "expires_at"
#: Counter items per day: transitions of different jobs rarely touch the same item, so
#: concurrent transactions seldom conflict.
COUNTER_SHARDS = 8
#: How long lifecycle events are kept, in seconds (listeners read them within seconds).
EVENT_TTL_S = 3600
#: Seconds between event polls of a listening manager.
EVENT_POLL_S = 0.25
#: Largest job record accepted, in bytes: a DynamoDB item holds at most 400 KB.
MAX_RECORD_BYTES = 350_000
_RETRY_CODES = {"ProvisionedThroughputExceededException", "ThrottlingException",
                "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable",
                "TransactionInProgressException"}


def _s(value: Any) -> dict[str, str]:
    return {"S": str(value)}


def _n(value: Any) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _plain(attr: Mapping[str, Any]) -> Any:
    if "S" in attr:
        return attr["S"]
    if "N" in attr:
        return attr["N"]
    if "B" in attr:
        return attr["B"]
    if "NULL" in attr:
        return None
    raise ValueError(f"unexpected DynamoDB attribute {attr!r}")


def _batch_get(ddb: Any, table: str, keys: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``BatchGetItem`` of any number of keys (100 per call), retrying unprocessed keys."""
    for start in range(0, len(keys), 100):
        request = {table: {"Keys": keys[start:start + 100], "ConsistentRead": True}}
        for attempt in range(10):
            reply = ddb.batch_get_item(RequestItems=request)
            yield from reply.get("Responses", {}).get(table, [])
            request = reply.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(random.uniform(0, 0.05 * 2 ** attempt))


class _AwsErrors:
    """Turn unreachable-endpoint and throttling failures into ``BrokerUnavailableError``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        if isinstance(exc, BotoCoreError) or (
                isinstance(exc, ClientError) and _code(exc) in _RETRY_CODES):
            raise BrokerUnavailableError(f"cannot reach the DynamoDB job store: {exc}") from exc


class DynamoDBJobStore(JobStore):
    """Job records on one DynamoDB table (layout: this module's docstring).

    - **Transitions** read the job's status, then write it back in one
      ``TransactWriteItems`` with ``ConditionExpression: status = <what was read>``,
      together with the counter update; a concurrent change cancels the transaction and
      the transition is re-read and retried, so each change happens exactly once.
    - **Counts** are counter items updated in the same transactions (one per day of
      creation and shard): ``counts()`` reads a few items instead of counting records.
      Counters of days older than the retention are left out, so counts cover whole days.
    - **Listing** queries the ``status-index`` GSI (partition ``{ns}#{status}``, sort key
      ``created_ts``) newest first, per status, merging statuses.
    - **Events** are items in one partition per namespace with a time-ordered sort key,
      polled by listeners.

    Args:
        table: Table name.
        namespace: Queue namespace; records of other namespaces are invisible.
        retention_s: Records expire (TTL) this long after creation.
        settings: Region, endpoint and credentials source (required: nothing here reads
            the environment; ``open_store(settings)`` passes them).
    """

    def __init__(self, table: str, namespace: str, retention_s: int = JOB_RETENTION_S,
                 settings: Settings | None = None) -> None:
        super().__init__(namespace, retention_s)
        self.table = table
        if settings is None:
            raise TypeError("DynamoDBJobStore needs settings (region and endpoint): "
                            "pdftasks.stores.open_store(settings) passes them")
        self.settings: Settings = settings
        self._local = threading.local()

    @property
    def ddb(self) -> Any:
        return thread_client(self._local, "dynamodb", self.settings)

    # Keys.

    def _job_key(self, job_id: str) -> dict[str, Any]:
        return {"pk": _s(f"{self.namespace}#job#{job_id}"), "sk": _s("job")}

    def _status_key(self, status: JobStatus) -> str:
        return f"{self.namespace}#{status.value}"

    @staticmethod
    def _day(created_ts: float) -> str:
        return dt.datetime.fromtimestamp(created_ts, dt.UTC).strftime("%Y%m%d")

    def _counter_key(self, job_id: str, created_ts: float) -> dict[str, Any]:
        shard = zlib.crc32(job_id.encode()) % COUNTER_SHARDS
        return {"pk": _s(f"{self.namespace}#counts#{self._day(created_ts)}#{shard}"),
                "sk": _s("n")}

    def _counter_update(self, key: dict[str, Any], changes: Mapping[str, int],
                        created_ts: float) -> dict[str, Any]:
        names, values, adds = {"#exp": TTL_ATTRIBUTE}, {}, []
        for i, (attr, delta) in enumerate(changes.items()):
            names[f"#c{i}"] = attr
            values[f":d{i}"] = _n(delta)
            adds.append(f"#c{i} :d{i}")
        day_end = (int(created_ts) // 86400 + 1) * 86400
        values[":exp"] = _n(day_end + self.retention_s + 2 * 86400)
        return {"Update": {
            "TableName": self.table, "Key": key,
            "UpdateExpression": f"ADD {', '.join(adds)} SET #exp = if_not_exists(#exp, :exp)",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}

    @staticmethod
    def _counter_attr(status: JobStatus | str, priority: int) -> str:
        return f"{JobStatus(status).value}_{int(priority)}"

    # Records.

    def _item(self, job: Job) -> dict[str, Any]:
        created = job.created_at.timestamp()
        item: dict[str, Any] = {
            **self._job_key(job.job_id),
            "status_key": _s(self._status_key(job.status)),
            "created_ts": _n(created),
            TTL_ATTRIBUTE: _n(math.ceil(created + self.retention_s)),
        }
        for name, value in job.to_record().items():
            item[name] = _n(int(value or 0)) if name == "attempts" else _s(value)
        return item

    @staticmethod
    def _job(item: Mapping[str, Any]) -> Job:
        rec = {name: str(_plain(attr)) for name, attr in item.items()
               if name not in ("pk", "sk", "status_key", "created_ts", TTL_ATTRIBUTE)}
        return Job.from_record(rec)

    @staticmethod
    def _expired(item: Mapping[str, Any], now: float | None = None) -> bool:
        exp = item.get(TTL_ATTRIBUTE)
        return exp is not None and float(exp["N"]) <= (now or time.time())

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """``TransactWriteItems``, retried on conflicts with other transactions."""
        for attempt in range(12):
            try:
                self.ddb.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if _code(exc) == "TransactionCanceledException" and \
                        "ConditionalCheckFailed" not in reasons and attempt < 11 and \
                        any(r in ("TransactionConflict", "ThrottlingError") for r in reasons):
                    time.sleep(random.uniform(0, min(1.0, 0.01 * 2 ** attempt)))
                    continue
                raise

    @staticmethod
    def _condition_failed(exc: ClientError) -> bool:
        if _code(exc) == "ConditionalCheckFailedException":
            return True
        reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
        return _code(exc) == "TransactionCanceledException" and \
            "ConditionalCheckFailed" in reasons

    def create_many(self, jobs: Iterable[Job]) -> None:
        chunk: list[Job] = []
        size = 0
        with _AwsErrors():
            for job in jobs:
                item_size = len(json.dumps(job.to_record()))
                if item_size > MAX_RECORD_BYTES:
                    raise InvalidDataError(
                        f"job {job.job_id}: its record is {item_size} bytes, above the "
                        f"{MAX_RECORD_BYTES} bytes a DynamoDB item can hold; send less data "
                        "(or a reference to it) with the job")
                if chunk and (len(chunk) >= 80 or size + item_size > 3_000_000):
                    self._create_chunk(chunk)
                    chunk, size = [], 0
                chunk.append(job)
                size += item_size
            if chunk:
                self._create_chunk(chunk)

    def _create_chunk(self, jobs: list[Job]) -> None:
        """Up to 80 records and their counters in one transaction (<= 100 actions)."""
        counters: dict[str, tuple[dict[str, Any], dict[str, int], float]] = {}
        items = []
        for job in jobs:
            created = job.created_at.timestamp()
            items.append({"Put": {"TableName": self.table, "Item": self._item(job),
                                  "ConditionExpression": "attribute_not_exists(pk)"}})
            key = self._counter_key(job.job_id, created)
            entry = counters.setdefault(key["pk"]["S"], (key, {}, created))
            attr = self._counter_attr(job.status, job.priority)
            entry[1][attr] = entry[1].get(attr, 0) + 1
        items += [self._counter_update(key, changes, created)
                  for key, changes, created in counters.values()]
        try:
            self._transact(items)
        except ClientError as exc:
            if not self._condition_failed(exc):
                raise
            # A job id that exists already (a caller's own task_id): replace it like the
            # other stores do, keeping the counters right.
            existing = [j.job_id for j in jobs if self.get(j.job_id) is not None]
            if not existing:
                raise
            self.delete(existing)
            self._transact(items)

    def get(self, job_id: str) -> Job | None:
        with _AwsErrors():
            item = self.ddb.get_item(TableName=self.table, Key=self._job_key(job_id),
                                        ConsistentRead=True).get("Item")
        if not item or self._expired(item):
            return None
        return self._job(item)

    def _current(self, job_id: str) -> dict[str, Any] | None:
        item = self.ddb.get_item(
            TableName=self.table, Key=self._job_key(job_id), ConsistentRead=True,
            ProjectionExpression="#st, #pr, #ct, #exp",
            ExpressionAttributeNames={"#st": "status", "#pr": "priority", "#ct": "created_ts",
                                      "#exp": TTL_ATTRIBUTE}).get("Item")
        return None if not item or self._expired(item) else item

    def transition(self, job_id: str, to: JobStatus, allowed_from: Iterable[JobStatus],
                   **values: Any) -> bool:
        allowed = {s.value for s in allowed_from}
        names = {"#st": "status", "#sk": "status_key"}
        attrs = {":to": _s(to.value), ":sk": _s(self._status_key(to))}
        sets = ["#st = :to", "#sk = :sk"]
        for i, (name, value) in enumerate(_encode(values).items()):
            names[f"#v{i}"] = name
            attrs[f":v{i}"] = _n(int(value or 0)) if name == "attempts" else _s(value)
            sets.append(f"#v{i} = :v{i}")
        with _AwsErrors():
            for _ in range(50):
                item = self._current(job_id)
                if item is None or item["status"]["S"] not in allowed:
                    return False
                current = item["status"]["S"]
                update = {
                    "TableName": self.table, "Key": self._job_key(job_id),
                    "UpdateExpression": "SET " + ", ".join(sets),
                    "ConditionExpression": "#st = :cur",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": {**attrs, ":cur": _s(current)}}
                try:
                    if current == to.value:
                        self.ddb.update_item(**update)
                    else:
                        created = float(item["created_ts"]["N"])
                        prio = int(item["priority"]["S"])
                        self._transact([{"Update": update}, self._counter_update(
                            self._counter_key(job_id, created),
                            {self._counter_attr(current, prio): -1,
                             self._counter_attr(to, prio): 1}, created)])
                    return True
                except ClientError as exc:
                    if not self._condition_failed(exc):
                        raise
                    # The status changed since it was read: read it again.
        raise BrokerUnavailableError(f"job {job_id}: status kept changing; transition gave up")

    def add_attempt(self, job_id: str) -> int:
        with _AwsErrors():
            try:
                reply = self.ddb.update_item(
                    TableName=self.table, Key=self._job_key(job_id),
                    UpdateExpression="ADD attempts :one",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":one": _n(1)}, ReturnValues="UPDATED_NEW")
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    return 0
                raise
        return int(reply["Attributes"]["attempts"]["N"])

    def delete(self, job_ids: Iterable[str]) -> None:
        with _AwsErrors():
            for job_id in job_ids:
                for _ in range(50):
                    item = self.ddb.get_item(
                        TableName=self.table, Key=self._job_key(job_id), ConsistentRead=True,
                        ProjectionExpression="#st, #pr, #ct",
                        ExpressionAttributeNames={"#st": "status", "#pr": "priority",
                                                  "#ct": "created_ts"}).get("Item")
                    if item is None:
                        break
                    created = float(item["created_ts"]["N"])
                    try:
                        self._transact([
                            {"Delete": {"TableName": self.table, "Key": self._job_key(job_id),
                                        "ConditionExpression": "#st = :cur",
                                        "ExpressionAttributeNames": {"#st": "status"},
                                        "ExpressionAttributeValues": {
                                            ":cur": item["status"]}}},
                            self._counter_update(self._counter_key(job_id, created), {
                                self._counter_attr(item["status"]["S"],
                                                   int(item["priority"]["S"])): -1},
                                created)])
                        break
                    except ClientError as exc:
                        if not self._condition_failed(exc):
                            raise

    def _query_status(self, status: JobStatus, limit: int | None = None,
                      newest_first: bool = True, before: float | None = None,
                      projection: str | None = None) -> Iterator[dict[str, Any]]:
        now = time.time()
        condition = "status_key = :k"
        values: dict[str, Any] = {":k": _s(self._status_key(status)), ":now": _n(int(now))}
        if before is not None:
            condition += " AND created_ts < :before"
            values[":before"] = _n(before)
        kwargs: dict[str, Any] = {
            "TableName": self.table, "IndexName": STATUS_INDEX,
            "KeyConditionExpression": condition, "ScanIndexForward": not newest_first,
            "FilterExpression": "attribute_not_exists(#exp) OR #exp > :now",
            "ExpressionAttributeValues": values,
            "ExpressionAttributeNames": {"#exp": TTL_ATTRIBUTE}}
        if projection:
            kwargs["ProjectionExpression"] = projection
        if limit is not None:
            kwargs["Limit"] = max(limit, 1)
        found = 0
        while True:
            page = self.ddb.query(**kwargs)
            for item in page.get("Items", []):
                yield item
                found += 1
                if limit is not None and found >= limit:
                    return
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list(self, status: JobStatus | None = None, limit: int | None = 100) -> list[Job]:
        statuses = [status] if status else list(JobStatus)
        with _AwsErrors():
            items = [item for s in statuses for item in self._query_status(s, limit)]
        items.sort(key=lambda item: float(item["created_ts"]["N"]), reverse=True)
        if limit is not None:
            items = items[:limit]
        return [self._job(item) for item in items]

    def created_before(self, cutoff: float, statuses: Iterable[JobStatus]
                       ) -> builtins.list[str]:
        with _AwsErrors():
            return [item["job_id"]["S"] for s in statuses for item in self._query_status(
                s, newest_first=False, before=cutoff, projection="job_id")]

    def claim(self, key: str, ttl_s: int) -> bool:
        now = time.time()
        with _AwsErrors():
            try:
                self.ddb.put_item(
                    TableName=self.table,
                    Item={"pk": _s(f"{self.namespace}#claim#{key}"), "sk": _s("claim"),
                          TTL_ATTRIBUTE: _n(int(now + ttl_s))},
                    ConditionExpression="attribute_not_exists(pk) OR #exp < :now",
                    ExpressionAttributeNames={"#exp": TTL_ATTRIBUTE},
                    ExpressionAttributeValues={":now": _n(int(now))})
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def counts(self) -> dict[JobStatus, dict[JobPriority, int]]:
        out = {s: {p: 0 for p in JobPriority} for s in JobStatus}
        today = int(time.time()) // 86400
        first = int(time.time() - self.retention_s) // 86400
        keys = [{"pk": _s(f"{self.namespace}#counts#{self._day(day * 86400)}#{shard}"),
                 "sk": _s("n")}
                for day in range(first, today + 1) for shard in range(COUNTER_SHARDS)]
        with _AwsErrors():
            for item in _batch_get(self.ddb, self.table, keys):
                for status in JobStatus:
                    for prio in JobPriority:
                        attr = item.get(self._counter_attr(status, prio))
                        if attr is not None:
                            out[status][prio] += int(attr["N"])
        return out

    def publish(self, event: dict[str, Any]) -> None:
        now = time.time()
        with _AwsErrors():
            self.ddb.put_item(TableName=self.table, Item={
                "pk": _s(f"{self.namespace}#events"),
                "sk": _s(f"{now:017.6f}#{uuid.uuid4().hex}"),
                "body": _s(json.dumps(event)), TTL_ATTRIBUTE: _n(int(now + EVENT_TTL_S))})

    def events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        return self._follow(time.time(), stop)

    def _follow(self, start: float, stop: threading.Event) -> Iterator[dict[str, Any]]:
        # Events are read again from a few seconds back, so one written late by a worker
        # whose clock is slightly behind is not missed; ``seen`` drops the repeats.
        skew_s = 5.0
        newest = start
        seen: dict[str, float] = {}
        while not stop.is_set():
            try:
                items = self._events_since(newest - skew_s)
            except (BotoCoreError, ClientError):
                stop.wait(1.0)
                continue
            for item in items:
                sk = item["sk"]["S"]
                ts = float(sk.split("#", 1)[0])
                if sk in seen or ts < start:
                    continue
                seen[sk] = ts
                newest = max(newest, ts)
                yield json.loads(item["body"]["S"])
            for sk in [k for k, ts in seen.items() if ts < newest - 2 * skew_s]:
                del seen[sk]
            stop.wait(EVENT_POLL_S)

    def _events_since(self, since: float) -> builtins.list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND sk > :since",
            "ExpressionAttributeValues": {":pk": _s(f"{self.namespace}#events"),
                                          ":since": _s(f"{max(since, 0):017.6f}")}}
        items: builtins.list[dict[str, Any]] = []
        while True:
            page = self.ddb.query(**kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
