"""The ``watermark`` option: a line of text stamped on every page.

The text is laid out by WeasyPrint (so it is real, extractable text in an embedded font, and
styled with CSS), once per page size, and drawn on each page as a form XObject, inside an
``/Artifact`` marked-content sequence so that PDF/UA readers skip it. ``under`` draws it
before the page's content, ``over`` after it (the page's own content wrapped in ``q … Q``
so its graphics state cannot leak into the stamp).
"""

from __future__ import annotations

import contextlib
import html
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdftasks.options.document import WatermarkOptions

_TOP = {"center": "50%", "top": "18%", "bottom": "82%"}


def _refuse_all(url: str, *args: Any, **kwargs: Any) -> Any:
    raise ValueError(f"a watermark fetches nothing ({url})")


def stamp_html(opts: WatermarkOptions, width: float, height: float) -> str:
    """The one-page HTML of the stamp for a ``width`` x ``height`` pt page."""
    weight = "bold" if opts.bold else "normal"
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><style>
@page {{ size: {width:.2f}pt {height:.2f}pt; margin: 0 }}
html, body {{ margin: 0; padding: 0 }}
div {{ position: absolute; left: -50%; width: 200%; top: {_TOP[opts.position]};
      text-align: center; white-space: nowrap; line-height: 1;
      font: {weight} {opts.font_size:g}pt {opts.font_family}; color: {opts.color};
      opacity: {opts.opacity:g};
      transform: translateY(-50%) rotate({-opts.angle:g}deg) }}
</style></head><body><div>{html.escape(opts.text)}</div></body></html>"""


def stamp_pdf(opts: WatermarkOptions, width: float, height: float,
              font_config: Any = None) -> bytes:
    """The stamp as a one-page PDF (WeasyPrint; nothing fetched)."""
    from weasyprint import HTML

    pdf: bytes = HTML(string=stamp_html(opts, width, height), url_fetcher=_refuse_all) \
        .write_pdf(font_config=font_config)
    return pdf


def apply_watermark(pdf: Any, opts: WatermarkOptions, stack: contextlib.ExitStack[Any],
                    font_config: Any = None) -> int:
    """Stamp every page of ``pdf`` (a ``pikepdf.Pdf``); return the number of stamps
    rendered (one per distinct page size). The stamps' PDFs stay open in ``stack`` until
    ``pdf`` is saved (pikepdf copies their streams then)."""
    import pikepdf

    forms: dict[tuple[float, float], Any] = {}
    for page in pdf.pages:
        box = [float(v) for v in page.mediabox]
        x0, y0, width, height = box[0], box[1], box[2] - box[0], box[3] - box[1]
        size = (round(width, 2), round(height, 2))
        form = forms.get(size)
        if form is None:
            source = stack.enter_context(
                pikepdf.open(io.BytesIO(stamp_pdf(opts, width, height, font_config))))
            form = forms[size] = pdf.copy_foreign(source.pages[0].as_form_xobject())
        # One name per stamp: pages often share one resource dictionary.
        name = page.add_resource(form, pikepdf.Name.XObject,
                                 pikepdf.Name(f"/PdftasksStamp{list(forms).index(size)}"))
        draw = (f"q 1 0 0 1 {x0:g} {y0:g} cm /Artifact BMC {name} Do EMC Q\n").encode()
        if opts.layer == "under":
            page.contents_add(pdf.make_stream(draw), prepend=True)
        else:
            page.contents_add(pdf.make_stream(b"q\n"), prepend=True)
            page.contents_add(pdf.make_stream(b"Q\n" + draw))
    return len(forms)
