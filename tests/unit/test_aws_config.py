"""AWS settings and wiring that need no endpoint: derived URLs, queue names, transport
options, Celery options on SQS, storage selection. (Behaviour against a real endpoint:
tests/integration/test_aws.py.)"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from pdftasks.brokers.sqs import predefined_queue_urls, sqs_queue_name, transport_options
from pdftasks.celery_app import create_app
from pdftasks.contrib.aws import _message_job_id
from pdftasks.errors import UnsafePathError
from pdftasks.settings import Settings
from pdftasks.storage import LocalStorage, make_storage, storage_for
from pdftasks.storage.s3 import S3Storage


def sqs(**values) -> Settings:
    return Settings(broker_url="sqs://", **values)


def test_sqs_broker_derives_dynamodb_job_store_and_results() -> None:
    s = sqs(dynamodb_table="jobs-prod")
    assert s.is_sqs and not s.is_local
    assert s.effective_job_store_url == "dynamodb://jobs-prod"
    assert s.effective_result_backend == \
        "pdftasks.brokers.sqs.DynamoDBResultBackend+dynamodb://jobs-prod"
    assert not Settings(broker_url="redis://h:6379/0").is_sqs


def test_visibility_timeout_outlasts_retry_countdowns_and_renders_on_sqs() -> None:
    assert sqs().visibility_timeout_s == 600 + 90 + 60
    assert sqs(visibility_timeout_s=3600).visibility_timeout_s == 3600
    assert Settings(broker_url="redis://h").visibility_timeout_s == 600
    with pytest.raises(ValidationError, match="43200"):
        sqs(visibility_timeout_s=50000)


def test_storage_setting_is_an_s3_url_or_empty() -> None:
    assert sqs(storage="s3://my-bucket/pdfs/").storage == "s3://my-bucket/pdfs"
    for bad in ("/tmp/out", "s3://", "s3://UPPER/x", "gs://b/p"):
        with pytest.raises(ValidationError, match="PDFTASKS_STORAGE"):
            sqs(storage=bad)


def test_predefined_queues_in_three_forms() -> None:
    base = "https://sqs.eu-west-1.amazonaws.com/123456789012/pdf"
    expected = {p: f"{base}-{p}" for p in ("urgent", "high", "normal", "low")}
    assert predefined_queue_urls(sqs(sqs_predefined_queues=base)) == expected
    pairs = ",".join(f"{p}={u}" for p, u in expected.items())
    assert predefined_queue_urls(sqs(sqs_predefined_queues=pairs)) == expected
    assert predefined_queue_urls(sqs(sqs_predefined_queues=json.dumps(expected))) == expected
    with pytest.raises(ValueError, match="lacks high, normal, low"):
        predefined_queue_urls(sqs(sqs_predefined_queues=f"urgent={base}-urgent"))
    assert predefined_queue_urls(sqs()) == {}


def test_transport_options_for_kombu() -> None:
    s = sqs(aws_region="eu-west-1", aws_endpoint_url="http://127.0.0.1:5000",
            sqs_queue_prefix="prod-", sqs_wait_time_s=20, queue_namespace="pdf",
            sqs_predefined_queues="https://sqs.example/123/prod-pdf")
    options = transport_options(s)
    assert options["region"] == "eu-west-1"
    assert options["endpoint_url"] == "http://127.0.0.1:5000"
    assert options["queue_name_prefix"] == "prod-"
    assert options["wait_time_seconds"] == 20
    assert options["visibility_timeout"] == s.visibility_timeout_s > s.hard_time_limit_s
    assert options["priority_polling"] is True
    # kombu looks predefined queues up by their SQS names: prefix + name, "." -> "-"
    assert options["predefined_queues"] == {
        f"prod-pdf-{p}": {"url": f"https://sqs.example/123/prod-pdf-{p}"}
        for p in ("urgent", "high", "normal", "low")}
    assert sqs_queue_name("pdf.urgent", s) == "prod-pdf-urgent"


def test_celery_on_sqs_uses_pdftasks_transport_without_broadcast() -> None:
    app = create_app(sqs(aws_endpoint_url="http://127.0.0.1:5000"))
    conf = app.conf
    assert conf.broker_transport == "pdftasks.brokers.sqs:Transport"
    assert conf.worker_enable_remote_control is False
    assert conf.worker_send_task_events is False and conf.task_send_sent_event is False
    assert conf.broker_transport_options["endpoint_url"] == "http://127.0.0.1:5000"
    assert type(app.backend).__name__ == "DynamoDBResultBackend"
    assert app.backend.table == "pdftasks"
    with app.connection_for_write() as conn:
        assert type(conn.transport).__module__ == "pdftasks.brokers.sqs"
    # On Redis, task events are sent on demand (monitoring.TaskEventsOnDemand) or always
    redis_app = create_app(Settings(broker_url="redis://127.0.0.1:1/0"))
    assert redis_app.conf.worker_send_task_events is False
    assert redis_app.conf.worker_enable_remote_control is True  # monitors can ask for them
    always = create_app(Settings(broker_url="redis://127.0.0.1:1/0", task_events="always"))
    assert always.conf.worker_send_task_events is True


def test_an_sqs_app_connects_the_dead_letter_reaper(tmp_path) -> None:
    """The reaper's worker_ready receiver lives in pdftasks.contrib.aws, a layer above the
    app: ``configure`` loads it for SQS apps (a fresh process, so no earlier test did)."""
    code = ("import sys; from pdftasks.celery_app import create_app; "
            "from pdftasks.settings import Settings; "
            "assert 'pdftasks.contrib.aws' not in sys.modules; "
            "create_app(Settings(broker_url='sqs://')); "
            "from celery import signals; from pdftasks.contrib import aws; "
            "assert any(r() is aws._start_reaper for _, r in signals.worker_ready.receivers)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=120)


def test_storage_selection_and_s3_names(tmp_path) -> None:
    assert isinstance(make_storage(tmp_path), LocalStorage)
    s = sqs(storage="s3://my-bucket/a/b")
    storage = storage_for(s)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == ("my-bucket", "a/b")
    assert storage.uri_for("x.pdf") == "s3://my-bucket/a/b/x.pdf"
    assert S3Storage("s3://my-bucket", s).key_for("x.pdf") == "x.pdf"
    with pytest.raises(UnsafePathError):
        storage.key_for("../x.pdf")
    assert isinstance(storage_for(Settings(output_dir=tmp_path)), LocalStorage)


def test_job_id_of_a_dead_letter() -> None:
    envelope = {"body": "e30=", "headers": {"id": "job-1", "task": "pdftasks.generate_pdf"},
                "properties": {}}
    body = base64.b64encode(json.dumps(envelope).encode()).decode()
    assert _message_job_id(body) == "job-1"
    assert _message_job_id(json.dumps(envelope)) == "job-1"
    assert _message_job_id("not json") is None
