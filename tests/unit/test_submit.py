"""Unit tests (no services): bad input is refused at submit time, before anything is queued.

The client is configured for a Redis broker, but none of these calls reach it.
"""

from __future__ import annotations

import datetime as dt

import pytest

from pdftasks import errors, generate_pdf
from pdftasks.samples import sample_invoice


@pytest.mark.parametrize("kwargs,error", [
    ({"template": "missing.html"}, errors.TemplateNotFoundError),
    ({"template": "broken_syntax.html"}, errors.TemplateSyntaxError),
    ({"template": "../secret.html"}, errors.UnsafePathError),
    ({"template": "/etc/passwd"}, errors.UnsafePathError),
    ({"output_filename": "../escape.pdf"}, errors.UnsafePathError),
    ({"output_filename": "sub/dir.pdf"}, errors.UnsafePathError),
    ({"output_filename": "/tmp/abs.pdf"}, errors.UnsafePathError),
    ({"priority": "asap"}, errors.InvalidPriorityError),
    ({"data": {"when": dt.datetime.now()}}, errors.InvalidDataError),
    ({"css_file": "../../etc/passwd"}, errors.UnsafePathError),
])
def test_bad_input_raises_a_typed_error_at_submit(kwargs, error) -> None:
    job = {"template": "invoice.html", "data": sample_invoice(1),
           "output_filename": "ok.pdf", "priority": "normal", **kwargs}
    with pytest.raises(error):
        generate_pdf.delay(**job)
    with pytest.raises(error):
        generate_pdf.apply_async(kwargs=job)


def test_every_submit_error_is_a_permanent_pdftasks_error() -> None:
    with pytest.raises(errors.PdfTasksError) as info:
        generate_pdf.delay("invoice.html", {}, "a/b.pdf")
    assert info.value.permanent
