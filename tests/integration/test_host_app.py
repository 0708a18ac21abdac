"""pdftasks as a guest in a host application's process (integration: real Redis, a real host
Celery worker and a real pdftasks worker).

A Django-style project has its own Celery app (``proj/celery.py``), its own broker database
and its own ``@shared_task``. It imports pdftasks and sends both kinds of work: the host's
tasks must reach the host's queue and worker, ``generate_pdf`` pdftasks' workers, and the
working directory must stay empty. A client that does not install pdftasks at all enqueues a
job by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pdftasks.models import JobStatus
from pdftasks.samples import sample_invoice
from tests.conftest import ROOT, pdf_text, wait_for

pytestmark = pytest.mark.integration

HOST_CELERY = '''
from celery import Celery, shared_task

app = Celery("hostproj", broker="{broker}", backend="{broker}")
app.conf.task_default_queue = "host-jobs"


@shared_task
def add(x, y):
    return x + y
'''

CLIENT = '''
import json, os, sys
import celery
import hostproj.celery  # the host's app: Celery's current app, as in Django projects
from hostproj.celery import add

import pdftasks  # must change nothing
from kombu import transport

out = {{"current_after_import": celery.current_app.main,
       "redis_transport": transport.TRANSPORT_ALIASES["redis"],
       "files_after_import": sorted(os.listdir("."))}}
from pdftasks import generate_pdf
out["add_app"] = add.app.main
out["add"] = add.delay(2, 3).get(timeout=60)
job = generate_pdf.delay(template="invoice.html", data={data},
                         output_filename="guest.pdf", priority="urgent")
out["job_id"] = job.id
out["pdf"] = job.get(timeout=90)["path"]
out["add_again"] = add.delay(4, 5).get(timeout=60)
out["current_at_end"] = celery.current_app.main
print(json.dumps(out))
'''


def _host_env(host: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(host), str(ROOT)])
    env.pop("PDFTASKS_HOME", None)  # the zero-setup home would be ./.pdftasks
    return env


def test_a_host_celery_app_keeps_its_tasks_and_pdftasks_gets_its_jobs(
        redis_url, redis_client, start_worker, output_dir, tmp_path) -> None:
    # Given a host project with its own Celery app on its own Redis database, its worker,
    # and a pdftasks worker on pdftasks' database
    host_broker = redis_url.rsplit("/", 1)[0] + "/5"
    host = tmp_path / "host"
    (host / "hostproj").mkdir(parents=True)
    (host / "hostproj" / "__init__.py").write_text("")
    (host / "hostproj" / "celery.py").write_text(HOST_CELERY.format(broker=host_broker))
    host_log = open(tmp_path / "host-worker.log", "wb")  # noqa: SIM115
    host_worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "hostproj", "worker", "-Q", "host-jobs",
         "-c", "1", "-P", "solo", "-l", "INFO"], cwd=str(host), env=_host_env(host),
        stdout=host_log, stderr=subprocess.STDOUT)
    start_worker(concurrency=1)
    try:
        wait_for(lambda: " ready." in (tmp_path / "host-worker.log").read_text(), 60,
                 "the host worker")
        # When the host's code, run from an empty directory, imports pdftasks and sends both
        workdir = tmp_path / "empty"
        workdir.mkdir()
        client = CLIENT.format(data=repr(sample_invoice(7, client="Guest Co")))
        done = subprocess.run([sys.executable, "-c", client], cwd=str(workdir),
                              env=_host_env(host), capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        host_worker.terminate()
        host_worker.wait(30)
        host_log.close()
    # Then importing pdftasks left Celery's current app, kombu and the directory alone
    assert out["current_after_import"] == "hostproj" == out["current_at_end"]
    assert out["redis_transport"] == "kombu.transport.redis:Transport"
    assert out["files_after_import"] == [] and os.listdir(workdir) == []
    # And the host's shared task ran on the host's worker, through the host's broker
    assert out["add_app"] == "hostproj" and (out["add"], out["add_again"]) == (5, 9)
    host_worker_log = (tmp_path / "host-worker.log").read_text()
    assert host_worker_log.count("hostproj.celery.add") >= 2
    assert "pdftasks.generate_pdf" not in host_worker_log
    # And the PDF job went to pdftasks' worker and queue (never to the host's database)
    text, _ = pdf_text(out["pdf"])
    assert "Guest Co" in text and Path(out["pdf"]).is_relative_to(output_dir)
    host_db = redis_client.connection_pool.connection_kwargs["db"]
    assert host_db == 0
    import redis

    host_redis = redis.Redis.from_url(host_broker)
    assert not any(b"generate_pdf" in (k or b"") for k in host_redis.keys("*"))
    host_redis.close()


def test_a_client_without_pdftasks_enqueues_by_name(redis_url, start_worker) -> None:
    # Given a pdftasks worker, and a client with only Celery (WeasyPrint cannot be imported)
    start_worker(concurrency=1)
    client = textwrap.dedent(f'''
        import json, sys
        sys.modules["weasyprint"] = None  # not installed on this client
        sys.modules["pdftasks"] = None     # nor is pdftasks
        from celery import Celery

        app = Celery("client", broker="{redis_url}", backend="{redis_url}")
        result = app.send_task("pdftasks.generate_pdf", queue="pdf.urgent", kwargs={{
            "template": "invoice.html", "data": {sample_invoice(8, client="By Name")!r},
            "output_filename": "by-name.pdf", "priority": "urgent"}})
        print(json.dumps({{"id": result.id, "result": result.get(timeout=90)}}))
    ''')
    done = subprocess.run([sys.executable, "-c", client], capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items()
                                            if not k.startswith("PDFTASKS_")})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # Then the worker rendered it and created the job record it found missing, so the job
    # is followed, listed and counted like any other
    assert "By Name" in pdf_text(out["result"]["path"])[0]
    from pdftasks import PDFQueueManager, RedisBackend

    manager = PDFQueueManager(backend=RedisBackend(url=redis_url))
    job = manager.get_job(out["id"])
    assert job is not None and job.status is JobStatus.COMPLETED
    assert job.priority.label == "urgent" and job.output_filename == "by-name.pdf"
    assert out["id"] in [j.job_id for j in manager.backend.get_all_jobs()]
    assert manager.get_queue_stats()["completed"] >= 1


def _address_space_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return int(line.split()[3]) // (1024 * 1024)
    raise AssertionError("no address-space line")


def test_two_apps_in_one_process_keep_their_jobs_hooks_and_limits(make_manager) -> None:
    import psutil

    from pdftasks.worker.tasks import event_hooks

    # Given two managers (two apps) with different settings in one process, a worker each
    alpha = make_manager(queue_name="alpha", num_workers=1, render_memory_limit_mb=1500)
    beta = make_manager(queue_name="beta", num_workers=1, render_memory_limit_mb=1700)
    # Their event hooks are their own: a hook added to one is not in the other's list
    def hook(app, event, job_id, error):
        return None

    event_hooks(alpha.app).append(hook)
    assert hook in event_hooks(alpha.app) and hook not in event_hooks(beta.app)
    # When each renders a job
    a = alpha.submit_job("invoice.html", sample_invoice(1, client="Alpha Co"), "same.pdf")
    b = beta.submit_job("invoice.html", sample_invoice(2, client="Beta Co"), "same.pdf")
    job_a, job_b = alpha.wait_for_job(a, timeout=60), beta.wait_for_job(b, timeout=60)
    # Then neither sees the other's job, each file is its own, and each worker's render
    # processes carry their own app's memory limit
    assert job_a.status is job_b.status is JobStatus.COMPLETED
    assert alpha.get_job(b) is None and beta.get_job(a) is None
    assert "Alpha Co" in pdf_text(job_a.result_path)[0]
    assert "Beta Co" in pdf_text(job_b.result_path)[0]
    limits = {}
    for name, manager in (("alpha", alpha), ("beta", beta)):
        proc = manager._worker  # the manager's worker subprocess
        children = psutil.Process(proc.pid).children()
        limits[name] = {_address_space_mb(c.pid) for c in children}
    assert limits == {"alpha": {1500}, "beta": {1700}}


def test_plain_celery_cli_finds_the_lazy_app(redis_url, output_dir, tmp_path) -> None:
    # `celery -A pdftasks worker` finds pdftasks.app (built on first use) and serves jobs.
    from pdftasks import generate_pdf

    env = dict(os.environ, PDFTASKS_OUTPUT_DIR=str(output_dir))
    log = open(tmp_path / "celery.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "pdftasks", "worker", "-Q",
         "pdf.urgent,pdf.high,pdf.normal,pdf.low", "-c", "1", "-l", "INFO"],
        cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        result = generate_pdf.delay("invoice.html", sample_invoice(9, client="Plain CLI"),
                                    "plain.pdf", priority="high")
        info = result.get(timeout=90)
        assert "Plain CLI" in pdf_text(info["path"])[0]
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
