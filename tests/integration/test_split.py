"""Integration tests: split jobs (``options.split``) on real Redis, real ``pdftasks worker``
processes and real WeasyPrint; PDFs read back with pypdf and pikepdf."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pikepdf
import pytest
from pypdf import PdfReader

from pdftasks import JobStatus
from pdftasks.errors import InvalidOptionsError
from pdftasks.models import part_job_id
from pdftasks.render import PDFService, PDFServiceConfig
from tests.conftest import ROOT, TEMPLATES, wait_for

pytestmark = pytest.mark.integration

REGIONS = ("North America", "EMEA", "APAC", "LATAM")


def table_rows(n: int) -> list[dict]:
    """``n`` rows of a plain table report (every value distinct per row)."""
    return [{"line": i + 1, "date": f"2026-11-{1 + i % 30:02d}", "region": REGIONS[i % 4],
             "quantity": 1 + (i * 7) % 40, "amount": round((i + 1) * 12.5, 2)}
            for i in range(n)]


def report(n: int) -> dict:
    return {"title": "Monthly sales", "period": "2026-11", "summary": "Split test summary.",
            "sections": [{"heading": "Key figures", "rows": [{"label": "Rows", "value": n}]}],
            "table_title": "Transactions", "rows": table_rows(n),
            "totals": {"quantity": 123, "amount": 4567.5}, "closing": "End of report."}


FOOTER = re.compile(r"Page (\d+) of (\d+)")
DOC_REF = "Monthly sales · 2026-11"
HEADER_ROW = "Line Date Region Quantity Amount"
ROW = re.compile(r"^\d+ 2026-11-\d\d ")


def page_lines(path: Path | bytes) -> list[list[str]]:
    reader = PdfReader(path if isinstance(path, Path) else __import__("io").BytesIO(path))
    return [[ln.strip() for ln in (p.extract_text() or "").splitlines() if ln.strip()]
            for p in reader.pages]


def footers(lines: list[str]) -> list[str]:
    return [m.group(0) for ln in lines for m in FOOTER.finditer(ln)]


def body(pages: list[list[str]]) -> list[str]:
    """Every line but the page footers and the repeated table header."""
    out = []
    for lines in pages:
        for ln in lines:
            ln = FOOTER.sub("", ln).replace(DOC_REF, "").strip()
            if ln and ln != HEADER_ROW:
                out.append(ln)
    return out


def single_render(data: dict, tmp_path: Path) -> bytes:
    service = PDFService(PDFServiceConfig(templates_dir=TEMPLATES, output_dir=tmp_path / "one"))
    return service.render_pdf("report.html", data)[0]


def files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def test_split_report_reads_like_the_same_rows_rendered_in_one_document(
        make_manager, start_worker, output_dir, tmp_path) -> None:
    # Given two worker processes and a 230-row report cut into parts of 60 rows
    start_worker(concurrency=2)
    manager = make_manager(start=False, output_dir=output_dir)
    data = report(230)
    job_id = manager.submit_job("report.html", data, "monthly.pdf",
                                options={"split": {"key": "rows", "size": 60}})
    # When it completes
    job = manager.wait_for_job(job_id, timeout=180)
    # Then the parent's record counts its 4 parts, all done, and names the merged PDF
    assert job.status is JobStatus.COMPLETED
    assert (job.parts_total, job.parts_done) == (4, 4)
    merged = Path(job.result_path)
    assert merged.name == "monthly.pdf" and merged.is_file()
    pages = page_lines(merged)
    assert job.pages == len(pages)
    # Every page's footer names its own number and the true total, once
    for number, lines in enumerate(pages, start=1):
        assert footers(lines) == [f"Page {number} of {len(pages)}"], (number, lines[-3:])
    # The text equals, row after row, the same rows rendered in one document (the other
    # lines too; text extraction follows drawing order within a page, so they are compared
    # as a multiset)
    one = page_lines(single_render(data, tmp_path))
    rows_of = lambda lines: [ln for ln in lines if ROW.match(ln)]  # noqa: E731
    assert rows_of(body(pages)) == rows_of(body(one))
    assert len(rows_of(body(pages))) == 230
    assert sorted(body(pages)) == sorted(body(one))
    # ... with the title page in the first part and the totals and closing in the last
    assert "Split test summary." in pages[0] and "Key figures" in pages[0]
    assert "End of report." in pages[-1] and "Total 123 4,567.50" in pages[-1]
    assert sum(ln == "End of report." for lines in pages for ln in lines) == 1
    # Table headers are repeated on every page that holds rows
    for lines in pages:
        if any(ROW.match(ln) for ln in lines):
            assert HEADER_ROW in lines
    # Document information and bookmarks come through the merge
    with pikepdf.open(merged) as pdf:
        assert str(pdf.docinfo["/Title"]) == "Monthly sales"
        with pdf.open_outline() as outline:
            titles = [item.title for item in outline.root]
            children = [c.title for item in outline.root for c in item.children]
        assert titles == ["Monthly sales"] and "Transactions" in children
    # The part files are gone: the merged PDF is the only file left
    assert files_under(output_dir) == [merged.relative_to(output_dir).as_posix()]
    # Each part was a job of its own, rendered by the workers
    parts = [manager.get_job(part_job_id(job_id, i)) for i in range(4)]
    assert [p.status for p in parts] == [JobStatus.COMPLETED] * 4
    assert {p.parent_id for p in parts} == {job_id}
    assert sum(p.pages for p in parts) == job.pages
    # The parent's Celery result is the merged PDF's, as a single job's would be
    from celery.result import AsyncResult

    result = AsyncResult(job_id, app=manager.app).get(timeout=10)
    assert (result["path"], result["pages"], result["parts"]) == (job.result_path, job.pages, 4)


def test_a_list_no_longer_than_size_is_one_ordinary_job(make_manager, start_worker,
                                                          output_dir) -> None:
    start_worker(concurrency=1)
    manager = make_manager(start=False, output_dir=output_dir)
    job_id = manager.submit_job("report.html", report(40), "short.pdf",
                                options={"split": {"key": "rows", "size": 40}})
    job = manager.wait_for_job(job_id, timeout=60)
    assert job.status is JobStatus.COMPLETED and job.parts_total is None
    assert manager.get_job(part_job_id(job_id, 0)) is None
    pages = page_lines(Path(job.result_path))
    # The template's own page numbers (part 1 of 1), the title page and the totals
    assert footers(pages[-1]) == [f"Page {len(pages)} of {len(pages)}"]
    text = "\n".join(body(pages))
    assert "Split test summary." in text and "End of report." in text


def test_split_key_must_lead_to_a_list_at_submit(make_manager, redis_client) -> None:
    manager = make_manager(start=False)
    before = redis_client.dbsize()
    for options, where in (({"key": "nope", "size": 5}, "no 'nope'"),
                           ({"key": "title", "size": 5}, "is a str, not a list"),
                           ({"key": "rows", "size": 0}, "options.split.size")):
        with pytest.raises(InvalidOptionsError, match=re.escape(where)):
            manager.submit_job("report.html", report(10), "x.pdf", options={"split": options})
    with pytest.raises(InvalidOptionsError, match="above the limit of 1000"):
        manager.submit_job("report.html", report(2001), "x.pdf",
                           options={"split": {"key": "rows", "size": 2}})
    assert redis_client.dbsize() == before


def test_a_part_that_fails_fails_the_parent_with_its_error(make_manager, start_worker,
                                                           output_dir) -> None:
    # Given a report whose row 130 lacks a column the template shows (a permanent error)
    start_worker(concurrency=2)
    manager = make_manager(start=False, output_dir=output_dir)
    data = report(200)
    del data["rows"][129]["amount"]
    job_id = manager.submit_job("report.html", data, "broken.pdf",
                                options={"split": {"key": "rows", "size": 50}})
    # Then the parent fails, naming the part and what was wrong, without retries
    with pytest.raises(RuntimeError, match=r"part 3 of 4 failed: MissingVariableError"):
        manager.wait_for_job(job_id, timeout=120)
    job = manager.get_job(job_id)
    assert job.status is JobStatus.FAILED and job.retry_count == 0
    assert manager.get_job(part_job_id(job_id, 2)).status is JobStatus.FAILED
    # ... and no part file or merged PDF is left once the other parts are done
    wait_for(lambda: all(manager.get_job(part_job_id(job_id, i)).status.is_final
                         for i in range(4)), 60, "the other parts to end")
    wait_for(lambda: files_under(output_dir) == [], 10, "no files left")


def test_cancelling_the_parent_cancels_its_parts(make_manager, start_worker,
                                                 output_dir) -> None:
    # Given one worker process and a report of 12 parts
    start_worker(concurrency=1)
    manager = make_manager(start=False, output_dir=output_dir)
    job_id = manager.submit_job("report.html", report(360), "cancelled.pdf",
                                options={"split": {"key": "rows", "size": 30}})
    # When it is cancelled while its parts render
    wait_for(lambda: (j := manager.get_job(job_id)) and j.parts_total and j.parts_done >= 1,
             120, "a part done")
    assert manager.cancel_job(job_id)
    # Then the parent is CANCELLED, the parts not started never render, and nothing is left
    assert manager.get_job(job_id).status is JobStatus.CANCELLED
    wait_for(lambda: all(manager.get_job(part_job_id(job_id, i)).status.is_final
                         for i in range(12)), 60, "every part to end")
    statuses = [manager.get_job(part_job_id(job_id, i)).status for i in range(12)]
    assert statuses.count(JobStatus.CANCELLED) >= 8, statuses
    wait_for(lambda: files_under(output_dir) == [], 10, "no files left")
    assert manager.get_job(job_id).status is JobStatus.CANCELLED


def test_from_pdftasks_submit_to_the_merged_pdf_with_progress_in_cli_and_api(
        start_worker, output_dir, redis_url, tmp_path) -> None:
    from tests.integration.test_api import KEY_A, ApiServer, api_env

    # Given a report in a file and the CLI's environment
    data_file = tmp_path / "report.json"
    data_file.write_text(json.dumps(report(200)))
    env = {**os.environ, "PDFTASKS_OUTPUT_DIR": str(output_dir)}

    def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pdftasks", *args], env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)

    # When it is submitted with `pdftasks submit --options` and followed with `wait`
    submitted = cli("submit", "report.html", "-o", "cli-report.pdf", "-f", str(data_file),
                    "--options", '{"split": {"key": "rows", "size": 50}}')
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    waiting = subprocess.Popen([sys.executable, "-m", "pdftasks", "wait", job_id], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
    time.sleep(1.0)  # `wait` starts following the PENDING job; then workers come
    start_worker(concurrency=2)
    out, err = waiting.communicate(timeout=180)
    # Then `wait` showed the parts done (one line per change off a terminal) and the result
    assert waiting.returncode == 0, err
    progress = re.findall(r"processing .*\] +(\d)/4 parts", err)
    assert progress and progress == sorted(progress) and progress[0] != "4", err
    doc = json.loads(out)
    assert doc["status"] == "completed" and (doc["parts_total"], doc["parts_done"]) == (4, 4)
    assert Path(doc["result_path"]).is_file() and doc["pages"] == len(
        page_lines(Path(doc["result_path"])))
    status = json.loads(cli("status", job_id).stdout)
    assert (status["parts_total"], status["parts_done"]) == (4, 4)
    # And the HTTP API takes the same option and shows the same progress
    server = ApiServer(api_env(tmp_path / "api-out"), tmp_path / "api.log", output_dir)
    (tmp_path / "api-out").mkdir()
    try:
        server.wait_ready()
        with server.client(KEY_A) as http:
            sent = http.post("/api/pdf", json={
                "template": "report.html", "data": report(120), "filename": "api.pdf",
                "options": {"split": {"key": "rows", "size": 40}}})
            assert sent.status_code in (200, 201, 202), sent.text
            api_id = sent.json()["job_id"]
            seen = []

            def finished() -> bool:
                got = http.get(f"/api/pdf/{api_id}").json()
                seen.append((got.get("parts_done"), got.get("parts_total")))
                return got["status"] in ("completed", "failed")

            wait_for(finished, 120, "the API's split job", interval=0.05)
            final = http.get(f"/api/pdf/{api_id}").json()
            assert final["status"] == "completed", final
            assert (final["parts_total"], final["parts_done"]) == (3, 3)
            schema = http.get("/openapi.json").json()
            assert "parts_done" in schema["components"]["schemas"]["JobDocument"]["properties"]
    finally:
        server.stop()


def test_a_part_that_fails_for_a_passing_reason_is_retried_alone(make_manager, start_worker,
                                                                output_dir) -> None:
    # Given a worker with a 1 s backoff, and part 2's folder blocked by a file (its PDF
    # cannot be written: a transient StorageError)
    start_worker(concurrency=2, retry_backoff_s=1, retry_jitter="false")
    manager = make_manager(start=False, output_dir=output_dir)
    job_id = "split-retried"
    blocker = output_dir / "pdf" / "_" / part_job_id(job_id, 1)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    manager.task.apply_async(kwargs={
        "template": "report.html", "data": report(120), "output_filename": "retried.pdf",
        "options": {"split": {"key": "rows", "size": 40}}}, task_id=job_id)
    # When part 2 has failed once, and the folder is freed
    part = wait_for(lambda: (p := manager.get_job(part_job_id(job_id, 1))) and
                    p.status is JobStatus.RETRYING and p, 60, "part 2 to be RETRYING")
    assert part.error.startswith("StorageError") and part.retry_count == 1
    blocker.unlink()
    # Then the report completes; part 2 was retried alone, the others rendered once
    job = manager.wait_for_job(job_id, timeout=120)
    parts = [manager.get_job(part_job_id(job_id, i)) for i in range(3)]
    assert job.status is JobStatus.COMPLETED and job.retry_count == 0
    assert [p.retry_count for p in parts] == [0, 1, 0]
    assert [p.attempts for p in parts] == [1, 2, 1]
    assert len([ln for ln in body(page_lines(Path(job.result_path))) if ROW.match(ln)]) == 120


def test_document_options_apply_to_the_merged_pdf(make_manager, start_worker, output_dir,
                                                  tmp_path, redis_client) -> None:
    # Given a split report with a title, a watermark and encryption
    start_worker(concurrency=2)
    manager = make_manager(start=False, output_dir=output_dir)
    job_id = manager.submit_job("report.html", report(120), "options.pdf", options={
        "split": {"key": "rows", "size": 40},
        "metadata": {"title": "Split with options", "author": "Finance"},
        "watermark": {"text": "DRAFT"},
        "encrypt": {"user_password": "open-sesame", "owner_password": "owner-secret"}})
    job = manager.wait_for_job(job_id, timeout=120)
    assert job.parts_total == 3 and "open-sesame" not in json.dumps(job.options)
    # The passwords are nowhere in Redis: records, parts, merge results (result_extended)
    for key in redis_client.scan_iter(count=1000):
        kind = redis_client.type(key)
        values = (redis_client.hvals(key) if kind == b"hash" else
                  [redis_client.get(key)] if kind == b"string" else
                  redis_client.lrange(key, 0, -1) if kind == b"list" else [])
        for value in values:
            assert b"open-sesame" not in value and b"owner-secret" not in value, key
    # Then the merged PDF has them all: title, a watermark and a page number on every page
    path = Path(job.result_path)
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(path)
    with pikepdf.open(path, password="open-sesame") as pdf:
        assert pdf.is_encrypted
        assert str(pdf.docinfo["/Title"]) == "Split with options"
        assert str(pdf.docinfo["/Author"]) == "Finance"
        clear = tmp_path / "clear.pdf"
        pdf.save(clear)
    pages = page_lines(clear)
    for number, lines in enumerate(pages, start=1):
        text = " ".join(lines)
        assert "DRAFT" in text and f"Page {number} of {len(pages)}" in text
    # A whole-document option cannot be combined with split: refused at submit
    with pytest.raises(InvalidOptionsError, match="pdf_variant"):
        manager.submit_job("report.html", report(120), "a.pdf", options={
            "split": {"key": "rows", "size": 40}, "pdf_variant": "pdf/a-3b"})
