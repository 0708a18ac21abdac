#!/usr/bin/env python
"""Multi-page documents: ms per PDF and pages per second for a 200-line invoice.

Issue 8, benchmark 3: a 200-line invoice (about 5 pages): report ms/PDF and pages/s.

Methodology
-----------
* Documents: ``templates/invoice.html`` with ``pdftasks.samples.sample_invoice(i,
  items=--items)`` (200 line items: 5 A4 pages, a repeated table header on each page and
  "Page x of y" footers), next to the one-page invoice (5 items) for reference.
* ``pdftasks warm``: ``PDFService.generate_pdf`` (checks, Jinja, WeasyPrint, atomic write
  with fsync) reused across documents in this process, warmed up with ``warm_up()`` and
  3 unmeasured documents of each kind, as in a worker child. ``--n`` documents per kind.
* ``stock``: the same document rendered the product guide's way (fresh objects per
  document: ``HTML(string=html, base_url=templates).render(font_config=
  FontConfiguration()).write_pdf(path)``, HarfBuzz subsetting as installed), ``--n-stock``
  documents, for the ratio. Both setups live in this process and take turns document by
  document (3 unmeasured documents each first), so a drift in the machine's speed hits
  both alike.
* pages/s = pages / seconds of one process (one core); a worker with N processes on N
  free cores scales about linearly (see throughput.py). ms/page = ms/PDF / pages.
* ``other CPU`` = CPUs used by other programs while measuring (/proc); above 0.25 the
  numbers are inflated.

Run: ``.venv/bin/python benchmarks/multipage.py`` (about 30 s).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ROOT,
    CpuMonitor,
    load_average,
    log,
    machine_description,
    percentile,
    print_table,
    use_pdftasks_env,
)

TEMPLATE = "invoice.html"


def measure(setups: dict[str, tuple[Any, int]], items: int
            ) -> dict[str, tuple[list[float], set[int]]]:
    """Render ``n`` documents per setup, interleaved: one setup's turn after the other's.

    The setups alternate document by document (the one with fewer documents is spread
    evenly), so a drift in the machine's speed affects both alike.
    """
    from pdftasks.samples import sample_invoice

    for name, (render, _) in setups.items():
        for i in range(3):
            render(sample_invoice(900 + i, items=items), f"warm_{name}_{i}.pdf")
    schedule = sorted((k / n, name, k) for name, (_, n) in setups.items() for k in range(n))
    out: dict[str, tuple[list[float], set[int]]] = {name: ([], set()) for name in setups}
    for _, name, k in schedule:
        render = setups[name][0]
        data = sample_invoice(k + 1, items=items)
        started = time.perf_counter()
        out[name][1].add(render(data, f"doc_{name}_{k:04d}.pdf"))
        out[name][0].append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="ms per PDF and pages/s of a 200-line (5-page) invoice.",
        epilog="Methodology: see the docstring at the top of this file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--items", type=int, default=200, help="line items of the long invoice")
    parser.add_argument("--n", type=int, default=15, help="documents per kind, pdftasks")
    parser.add_argument("--n-stock", type=int, default=5, help="documents per kind, stock")
    args = parser.parse_args(argv)
    if args.items < 1 or args.n < 2 or args.n_stock < 1:
        parser.error("--items >= 1, --n >= 2, --n-stock >= 1")

    begin = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="pdftasks-multipage-"))
    try:
        use_pdftasks_env(tmp)
        import jinja2
        import weasyprint
        from weasyprint.text.fonts import FontConfiguration

        import pdftasks.celery_app  # noqa: F401  (a worker child's heap)
        from pdftasks.render import PDFService, PDFServiceConfig
        service = PDFService(PDFServiceConfig(templates_dir=ROOT / "templates",
                                              output_dir=tmp / "out"),
                             cache_stylesheets=True)  # as a worker's
        service.warm_up()
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROOT / "templates")),
                                 autoescape=True)
        base_url = (ROOT / "templates").as_uri() + "/"

        def ours(data: dict[str, Any], name: str) -> int:
            return service.generate_pdf(TEMPLATE, data, name).pages

        def stock(data: dict[str, Any], name: str) -> int:
            html = env.get_template(TEMPLATE).render(**data)
            doc = weasyprint.HTML(string=html, base_url=base_url).render(
                font_config=FontConfiguration())
            doc.write_pdf(tmp / "out" / name)
            return len(doc.pages)

        kinds = [("one-page invoice (5 items)", 5), (f"{args.items}-line invoice", args.items)]
        rows = []
        cpu = CpuMonitor([])
        cpu.start()
        for label, items in kinds:
            log(f"{label}: {args.n} documents pdftasks, {args.n_stock} stock, interleaved")
            measured = measure({"pdftasks warm": (ours, args.n),
                                "stock": (stock, args.n_stock)}, items)
            for setup, (times, pages) in measured.items():
                p50 = statistics.median(times)
                npages = max(pages)
                rows.append([label, setup, "/".join(map(str, sorted(pages))), len(times),
                             f"{p50:.1f}", f"{percentile(times, 95):.1f}",
                             f"{p50 / npages:.1f}", f"{npages / (p50 / 1000):.1f}", p50])
        other = cpu.foreign_cores()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"multipage: invoice.html with {args.items} line items next to the one-page invoice; "
          "one process")
    print(f"machine: {machine_description()}")
    print()
    for label, _ in kinds:
        ours_p50 = next(r[-1] for r in rows if r[0] == label and r[1] == "pdftasks warm")
        for r in rows:
            if r[0] == label:
                r.append(f"{r[-1] / ours_p50:.2f}x")
    print_table(["document", "setup", "pages", "n", "ms/PDF p50", "p95", "ms/page",
                 "pages/s", "vs pdftasks"], [r[:8] + r[9:] for r in rows])
    print("pages/s = pages / p50 seconds, one process (one core)")
    print(f"CPU used by other programs while measuring: {other:.2f} cores"
          + (" (WARNING: disturbed run, times inflated)" if other > 0.25 else ""))
    print(f"load average at end: {load_average()}; total run time "
          f"{time.monotonic() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
