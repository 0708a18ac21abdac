"""Join PDFs into one: pages, bookmarks and document information, and optionally continuous
"Page X of Y" numbers stamped on the result (a split job's parts, ``pdftasks.worker.split``)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The default page label of a split job's merged PDF; ``{page}`` and ``{pages}`` are
#: replaced by the page's number and the document's page count.
PAGE_LABEL = "Page {page} of {pages}"

#: Where and how the label is stamped: the bottom-right page-margin box of
#: ``templates/base.css`` (same margins, font, size and colour), so a split report looks like
#: one rendered in one piece.
STAMP_CSS = """
@page {{
  size: {width}pt {height}pt;
  margin: 15mm 16mm 20mm 16mm;
  @bottom-right {{
    content: {content};
    font-family: "DejaVu Sans", sans-serif;
    font-size: 8pt;
    color: #6b7280;
  }}
}}
html, body {{ margin: 0; }}
div {{ break-after: page; height: 1px; }}
"""

_PLACEHOLDER = re.compile(r"\{(page|pages)\}")


def css_content(label: str) -> str:
    """``label`` (``"Page {page} of {pages}"``) as a CSS ``content`` value."""
    parts: list[str] = []
    pos = 0
    for found in _PLACEHOLDER.finditer(label):
        if found.start() > pos:
            parts.append(_css_string(label[pos:found.start()]))
        parts.append(f"counter({found.group(1)})")
        pos = found.end()
    if pos < len(label):
        parts.append(_css_string(label[pos:]))
    return " ".join(parts) or '""'


def _css_string(text: str) -> str:
    escaped = "".join(ch if ch.isprintable() and ch not in '"\\' else f"\\{ord(ch):x} "
                      for ch in text)
    return f'"{escaped}"'


def stamp_pdf(pages: int, width: float, height: float, label: str = PAGE_LABEL) -> bytes:
    """A PDF of ``pages`` pages (``width`` x ``height`` points) holding only their labels:
    laid over the merged pages, one on each."""
    from weasyprint import CSS, HTML

    css = CSS(string=STAMP_CSS.format(width=round(width, 3), height=round(height, 3),
                                      content=css_content(label)))
    html = "<html><body>" + "<div></div>" * pages + "</body></html>"
    return HTML(string=html).write_pdf(stylesheets=[css])  # type: ignore[no-any-return]


def merge_pdfs(inputs: Sequence[str | Path], output: str | Path, *,
               page_label: str | None = None) -> int:
    """Write the pages of ``inputs``, in order, to ``output``; return its page count.

    The bookmarks (outlines) of every input follow, in order, pointing to the same places;
    the document information (title, author, ...), language and XMP metadata are those of
    the first input. ``page_label`` (e.g. ``PAGE_LABEL``) stamps each page's number and the
    total at the bottom right; None leaves the pages as they are.
    """
    import pikepdf

    with contextlib.ExitStack() as stack:
        merged = stack.enter_context(pikepdf.Pdf.new())
        marks: list[tuple[int, list[Any], pikepdf.Pdf]] = []
        for i, path in enumerate(inputs):
            part = stack.enter_context(pikepdf.open(path))  # open until the merge is saved
            offset = len(merged.pages)
            merged.pages.extend(part.pages)
            if i == 0:
                _copy_document_info(part, merged)
            with part.open_outline() as outline:
                marks.append((offset, list(outline.root), part))
        _merge_outlines(merged, marks)
        if page_label is not None and len(merged.pages):
            _stamp(merged, page_label, stack)
        merged.save(output)
        return len(merged.pages)


def _copy_document_info(source: Any, target: Any) -> None:
    import pikepdf

    if source.trailer.get("/Info") is not None:
        target.docinfo = target.copy_foreign(source.docinfo)
    for name in ("/Lang", "/ViewerPreferences", "/MarkInfo"):
        if name in source.Root:
            target.Root[name] = target.copy_foreign(source.Root[name]) \
                if isinstance(source.Root[name], pikepdf.Dictionary) else source.Root[name]
    if "/Metadata" in source.Root:
        target.Root.Metadata = target.copy_foreign(source.Root.Metadata)


def _merge_outlines(merged: Any, marks: list[tuple[int, list[Any], Any]]) -> None:
    """Every input's outline items under the merged root, in order, their destinations moved
    by the number of pages before that input."""
    if not any(items for _, items, _ in marks):
        return
    with merged.open_outline() as outline:
        for offset, items, part in marks:
            for item in items:
                outline.root.append(_moved(item, offset, part, merged))


def _moved(item: Any, offset: int, part: Any, merged: Any) -> Any:
    import pikepdf
    from pikepdf.models.outlines import OutlineItem

    dest = item.destination
    if isinstance(dest, pikepdf.Name | pikepdf.String | str | bytes):
        dest = _named_destination(part, dest)
    if dest is None and item.action is not None and item.action.get("/D") is not None:
        dest = item.action.D
    page_index: int | None = None
    view: list[Any] = [pikepdf.Name.Fit]
    if isinstance(dest, pikepdf.Array) and len(dest):
        target = dest[0]
        if isinstance(target, int):
            page_index = int(target)
        else:
            with contextlib.suppress(ValueError, TypeError):
                page_index = part.pages.index(pikepdf.Page(target))
        view = list(dest[1:]) or view
    moved = OutlineItem(item.title)
    moved.is_closed = item.is_closed
    if page_index is not None:
        moved.destination = pikepdf.Array([merged.pages[offset + page_index].obj, *view])
    moved.children.extend(_moved(child, offset, part, merged) for child in item.children)
    return moved


def _named_destination(part: Any, name: Any) -> Any:
    import pikepdf

    root = part.Root
    with contextlib.suppress(Exception):
        names = pikepdf.NameTree(root.Names.Dests)
        found = names.get(str(name))
        return found.D if isinstance(found, pikepdf.Dictionary) else found
    with contextlib.suppress(Exception):
        return root.Dests[str(name)]
    return None


def _stamp(merged: Any, label: str, stack: contextlib.ExitStack) -> None:
    import io

    import pikepdf

    first = merged.pages[0].mediabox
    width, height = float(first[2]) - float(first[0]), float(first[3]) - float(first[1])
    stamps = stack.enter_context(pikepdf.open(io.BytesIO(stamp_pdf(len(merged.pages), width,
                                                                   height, label))))
    for page, stamp in zip(merged.pages, stamps.pages, strict=True):
        page.add_overlay(stamp)
