"""Unit tests: merging PDFs (pages, bookmarks, document information, stamped page numbers),
the ``split`` option's checks and the count of parts done."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pikepdf
import pytest
from pypdf import PdfReader
from weasyprint import HTML

from pdftasks.documents.merge import PAGE_LABEL, css_content, merge_pdfs, stamp_pdf
from pdftasks.errors import InvalidOptionsError
from pdftasks.models import Job, JobStatus, part_job_id
from pdftasks.options import parse_options
from pdftasks.options.split import MAX_PARTS, SplitOptions, check_split, split_list, with_items


def doc(tmp_path: Path, name: str, title: str, chapters: list[tuple[str, int]]) -> Path:
    """A PDF titled ``title`` with a page per paragraph, an <h1> per chapter (bookmarks)."""
    body = "".join(
        f'<h1 style="break-before: {"page" if n else "auto"}">{heading}</h1>'
        + "".join(f'<p style="break-before: page">{heading} p{i}</p>' for i in range(pages - 1))
        for n, (heading, pages) in enumerate(chapters))
    path = tmp_path / name
    HTML(string=f"<html lang='en'><head><title>{title}</title></head><body>{body}"
                "</body></html>").write_pdf(path)
    return path


def texts(path: Path) -> list[str]:
    return [p.extract_text() or "" for p in PdfReader(path).pages]


def test_pages_and_bookmarks_of_every_input_follow_in_order(tmp_path: Path) -> None:
    a = doc(tmp_path, "a.pdf", "First", [("Alpha", 2), ("Beta", 1)])
    b = doc(tmp_path, "b.pdf", "Second", [("Gamma", 3)])
    out = tmp_path / "out.pdf"
    assert merge_pdfs([a, b], out) == 6
    pages = texts(out)
    assert [("Alpha" in t, "Gamma" in t) for t in pages] == [
        (True, False), (True, False), (False, False), (False, True), (False, True),
        (False, True)]
    with pikepdf.open(out) as pdf:
        with pdf.open_outline() as outline:
            items = [(item.title, pdf.pages.index(pikepdf.Page(item.destination[0])))
                     for item in outline.root]
        # Bookmarks of the second input point into its pages, after the first's three
        assert items == [("Alpha", 0), ("Beta", 2), ("Gamma", 3)]
        # The first input's document information and language
        assert str(pdf.docinfo["/Title"]) == "First"
        assert str(pdf.Root.Lang) == "en"


def test_page_label_stamps_each_page_with_its_number_and_the_total(tmp_path: Path) -> None:
    parts = [doc(tmp_path, f"{i}.pdf", "T", [(f"Part{i}", n)]) for i, n in enumerate((2, 1, 3))]
    out = tmp_path / "out.pdf"
    assert merge_pdfs(parts, out, page_label=PAGE_LABEL) == 6
    for number, text in enumerate(texts(out), start=1):
        assert f"Page {number} of 6" in text
        assert text.count("of 6") == 1
    # Without a label nothing is stamped
    merge_pdfs(parts, tmp_path / "plain.pdf")
    assert not any("of 6" in t for t in texts(tmp_path / "plain.pdf"))


def test_a_label_of_any_text_is_a_safe_css_string() -> None:
    assert css_content("Page {page} of {pages}") == '"Page " counter(page) " of " counter(pages)'
    assert css_content("{page}") == "counter(page)"
    # Quotes, backslashes and newlines cannot end the CSS string
    hostile = css_content('x" } body { display: none } "\\\n{pages}')
    assert hostile.startswith('"x\\22  } body { display: none } \\22 \\5c \\a "')
    assert hostile.endswith("counter(pages)")
    label = 'Seite {page} / {pages} "quoted" \\'
    stamped = PdfReader(io.BytesIO(stamp_pdf(2, 595, 842, label)))
    assert 'Seite 2 / 2 "quoted" \\' in (stamped.pages[1].extract_text() or "")


def test_split_list_finds_the_list_at_a_dotted_key() -> None:
    data = {"report": {"rows": [1, 2, 3]}, "title": "t"}
    assert split_list(SplitOptions(key="report.rows", size=2), data) == [1, 2, 3]
    cut = with_items(data, "report.rows", [3])
    assert cut == {"report": {"rows": [3]}, "title": "t"} and data["report"]["rows"] == [1, 2, 3]
    assert SplitOptions(key="rows", size=2).parts(5) == 3
    assert SplitOptions(key="rows", size=5).parts(5) == 1
    assert SplitOptions(key="rows", size=5).parts(0) == 1


@pytest.mark.parametrize(("data", "key", "size", "message"), [
    ({"title": "x"}, "rows", 5, "the data has no 'rows'"),
    ({"rows": {"a": 1}}, "rows", 5, "data.rows is a dict, not a list"),
    ({"a": {"b": 3}}, "a.b.c", 5, "the data has no 'a.b.c'"),
    ({"rows": list(range(MAX_PARTS + 1))}, "rows", 1, f"above the limit of {MAX_PARTS}"),
])
def test_split_list_refuses_what_it_cannot_split(data, key, size, message) -> None:
    with pytest.raises(InvalidOptionsError, match=message):
        split_list(SplitOptions(key=key, size=size), data)


def test_data_copied_into_every_part_is_bounded() -> None:
    # One request of about 1 MB would have the broker (and the results) hold ~1 GB: each
    # part carries the data outside the list.
    rows = [{"n": i} for i in range(1000)]
    heavy = {"rows": rows, "blob": "x" * 1_000_000}
    with pytest.raises(InvalidOptionsError, match="each of the 1000 parts carries the "
                                                  "1,000,021 bytes of data outside data.rows"):
        split_list(SplitOptions(key="rows", size=1), heavy)
    assert split_list(SplitOptions(key="rows", size=100), heavy) is rows  # 10 copies
    assert split_list(SplitOptions(key="rows", size=1), {"rows": rows, "title": "t"}) is rows


@pytest.mark.parametrize("raw", [
    {"split": {"key": "rows"}},
    {"split": {"key": "rows", "size": 0}},
    {"split": {"key": "../etc", "size": 5}},
    {"split": {"key": "rows", "size": 5, "extra": True}},
    {"split": {"key": "rows", "size": 5, "page_label": "x" * 201}},
])
def test_bad_split_options_name_the_field(raw) -> None:
    with pytest.raises(InvalidOptionsError, match=r"options\.split"):
        parse_options(raw)


def test_split_cannot_be_combined_with_whole_document_options() -> None:
    for other in ({"pdf_variant": "pdf/a-3b"}, {"einvoice": {"profile": "en16931"}}):
        with pytest.raises(InvalidOptionsError, match="combined with split"):
            parse_options({"split": {"key": "rows", "size": 5}, **other})
    # check_split refuses them too (options built without the model's checks)
    built = SimpleNamespace(split=SplitOptions(key="rows", size=5), pdf_variant="pdf/a-3b")
    with pytest.raises(InvalidOptionsError, match="options.pdf_variant"):
        check_split(built, {"rows": [1]})
    assert check_split(parse_options({"split": {"key": "rows", "size": 5}}), {"rows": [1]}) \
        == [1]
    assert check_split(None, {}) is None


def test_parts_done_are_counted_once_each(tmp_path: Path) -> None:
    from pdftasks.stores.sqlite import SqliteJobStore

    store = SqliteJobStore(tmp_path / "jobs.db", "ns")
    parent = Job(job_id="p", template="t.html", data={}, output_filename="o.pdf",
                 status=JobStatus.PROCESSING, parts_total=3)
    parts = [Job(job_id=part_job_id("p", i), template="t.html", data={},
                 output_filename="part.pdf", parent_id="p") for i in range(3)]
    store.create_many([parent, *parts])
    assert store.get(part_job_id("p", 0)).parent_id == "p"
    assert store.get("p").parts_total == 3 and store.get("p").parts_done == 0
    for i, expected in ((0, 1), (0, 1), (2, 2), (1, 3)):
        store.transition(part_job_id("p", i), JobStatus.COMPLETED, (JobStatus.PENDING,))
        assert store.record_part_done("p", "run", i, 3) == expected
        assert store.get("p").parts_done == expected
