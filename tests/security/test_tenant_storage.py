"""Class 2: tenants (and namespaces) never share a file namespace chosen by the caller.

Integration (real API, Redis, worker, WeasyPrint) for the attack as reported, unit tests for
the key the server chooses, locally and on S3.
"""

from __future__ import annotations

import pytest

from pdftasks.errors import UnsafePathError
from pdftasks.storage import LocalStorage, check_key, storage_key
from tests.conftest import pdf_text
from tests.integration.test_api import KEY_A, KEY_B, submit, wait_for


@pytest.mark.integration
def test_same_filename_from_two_tenants_gives_two_files(start_api, start_worker,
                                                       tmp_path) -> None:
    # Given two tenants of one API and one worker fleet
    api = start_api()
    start_worker(concurrency=1, output_dir=api.output_dir)
    a, b = api.client(KEY_A), api.client(KEY_B)

    def done(client, job_id):
        return wait_for(lambda: client.get(f"/api/pdf/{job_id}").json()["status"]
                        == "completed", 60, f"job {job_id}")

    # When tenant B, then tenant A, submit a PDF named shared.pdf
    job_b = submit(b, "shared.pdf", data={"invoice_number": "B-SECRET-77"})
    done(b, job_b)
    job_a = submit(a, "shared.pdf", data={"invoice_number": "A-SECRET-42"})
    done(a, job_a)
    # Then each download returns its own tenant's document under the caller's name
    for client, job_id, mine, theirs in ((b, job_b, "B-SECRET-77", "A-SECRET-42"),
                                         (a, job_a, "A-SECRET-42", "B-SECRET-77")):
        answer = client.get(f"/api/pdf/{job_id}/download")
        assert answer.status_code == 200
        assert answer.headers["content-disposition"] == 'attachment; filename="shared.pdf"'
        path = tmp_path / f"{job_id}.pdf"
        path.write_bytes(answer.content)
        text, _ = pdf_text(path)
        assert mine in text and theirs not in text
    # And the two files live under each tenant's own folder, keyed by job id
    files = sorted(p.relative_to(api.output_dir).as_posix()
                   for p in api.output_dir.rglob("shared.pdf"))
    assert files == sorted([f"pdf/acme/{job_a}/shared.pdf", f"pdf/globex/{job_b}/shared.pdf"])
    # And neither tenant can read the other's job by id
    assert a.get(f"/api/pdf/{job_b}/download").status_code == 404
    assert b.get(f"/api/pdf/{job_a}").status_code == 404
    a.close()
    b.close()


def test_storage_keys_are_chosen_by_the_server() -> None:
    key_a = storage_key("pdf", "job-1", "invoice_001.pdf", "acme")
    key_b = storage_key("pdf", "job-2", "invoice_001.pdf", "globex")
    key_ns = storage_key("other", "job-3", "invoice_001.pdf")
    assert key_a == "pdf/acme/job-1/invoice_001.pdf"
    assert key_b == "pdf/globex/job-2/invoice_001.pdf"
    assert key_ns == "other/_/job-3/invoice_001.pdf"
    assert len({key_a, key_b, key_ns}) == 3


@pytest.mark.parametrize(("namespace", "job_id", "name", "tenant"), [
    ("pdf", "..", "a.pdf", None),
    ("pdf", "job/../../x", "a.pdf", None),
    ("pdf", "job", "a.pdf", ".."),
    ("pdf", "job", "a.pdf", "../globex"),
    ("pdf", "job", "../a.pdf", "acme"),
    ("..", "job", "a.pdf", "acme"),
    ("pdf", "", "a.pdf", None),
    ("pdf", 7, "a.pdf", None),
])
def test_unsafe_key_parts_are_refused(namespace, job_id, name, tenant) -> None:
    # A message that bypassed the client may carry any job id or tenant.
    with pytest.raises(UnsafePathError):
        storage_key(namespace, job_id, name, tenant)


def test_local_storage_writes_each_key_in_its_own_folder(tmp_path) -> None:
    storage = LocalStorage(tmp_path / "out")
    first = storage.write(storage_key("pdf", "j1", "same.pdf", "acme"), b"%PDF-acme")
    second = storage.write(storage_key("pdf", "j2", "same.pdf", "globex"), b"%PDF-globex")
    assert first != second
    assert first.read_bytes() == b"%PDF-acme" and second.read_bytes() == b"%PDF-globex"
    for bad in ("../x.pdf", "pdf/../../x.pdf", "/etc/x.pdf", "pdf//x.pdf", "pdf/.hidden/x.pdf"):
        with pytest.raises(UnsafePathError):
            check_key(bad)


def test_s3_keys_are_the_server_keys_under_the_prefix() -> None:
    from pdftasks.settings import Settings
    from pdftasks.storage.s3 import S3Storage

    storage = S3Storage("s3://bucket/pdfs", Settings(broker_url=None))
    key = storage_key("pdf", "j1", "invoice.pdf", "acme")
    assert storage.key_for(key) == "pdfs/pdf/acme/j1/invoice.pdf"
    with pytest.raises(UnsafePathError):
        storage.key_for("../other/invoice.pdf")
