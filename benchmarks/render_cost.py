#!/usr/bin/env python
"""Per-PDF cost of a one-page invoice: stock WeasyPrint calls next to a warm pdftasks worker.

Issue 8, benchmark 2. Target: <= 50 ms per one-page invoice in a warm worker, with the same
output as a stock render (text and page count equal, pages the same pixels).

Rows (each setup in its own Python process, the same invoices)
--------------------------------------------------------------
* ``stock, no HarfBuzz subsetting``: the product guide's setup, fresh objects per document:
  one Jinja ``Environment`` (it caches compiled templates, as the guide's service would),
  then per invoice ``HTML(string=html, base_url=templates).render(
  font_config=FontConfiguration()).write_pdf(path)``: a new font configuration, the linked
  stylesheets fetched and parsed again, fonts subset by fontTools. WeasyPrint picks
  HarfBuzz subsetting at import when ``libharfbuzz-subset`` loads
  (``weasyprint.text.ffi.harfbuzz_subset``, imported by name into
  ``weasyprint.pdf.fonts``); this process sets both names to ``None`` right after importing
  WeasyPrint, which is what WeasyPrint has when the library is missing (it then warns and
  subsets with fontTools; the run counts the fontTools calls to show that path was taken).
* ``stock, HarfBuzz subsetting``: the same with the library as installed.
* ``pdftasks warm, without this work``: ``PDFService.generate_pdf`` reused across jobs
  (compiled templates, ``FontConfiguration``, the ``css_file`` cache and WeasyPrint's image
  cache kept) with the two render-speed changes switched off: linked stylesheets parsed per
  document (``cache_stylesheets=False``) and no ``gc.freeze()`` after warm-up.
* ``pdftasks warm worker``: ``PDFService.generate_pdf`` as a worker child runs it: the
  Celery app imported first (the same heap as a worker child), the service created and
  warmed up (``warm_up()``), then measured.
* ``pdftasks worker, end-to-end`` (reference): ``duration_ms`` reported by real
  ``python -m pdftasks worker -c 1`` jobs on a private redis-server, submitted one at a
  time (``--worker-jobs``, 30; 0 skips it). It takes its turns like the other rows; a
  job that follows an idle moment of the process renders somewhat slower (cold caches).

All rows time the same unit of work: template + data to a PDF file on disk (the stock rows
write the file with ``write_pdf(path)``, pdftasks writes it atomically with fsync). Each
process renders 3 unmeasured invoices first. The rows are interleaved in time:
``--rounds`` (10) rounds, each row rendering its next few invoices in turn (one process
renders at a time; the order rotates every round), so a burst of load from other programs
hits every row alike. ``--n`` (40) invoices per row, ``--n-stock-nosubset`` (10) for the
slow row. ``CPU ms`` = ``time.process_time()`` of the render, which other programs
inflate less than wall time.

Where the time goes: each in-process row also wraps WeasyPrint's stages with timers (a few
calls per document, no profiler overhead): HTML parsing, styles (finding and parsing
stylesheets + cascade), box building, layout, paint, fonts (subsetting), PDF serialization;
"rest" is Jinja, checks, the font configuration of the stock rows and the file write.
For a function-level profile: ``--profile`` prints cProfile's top functions of the warm
row (stderr).

Output check: the warm row's first invoice and the stock (HarfBuzz) row's first invoice
(same data) are compared: ``pypdf`` text and page count, and ``pdftoppm`` renders at
100 dpi compared pixel by pixel (skipped with a note if pdftoppm is missing).

Run: ``.venv/bin/python benchmarks/render_cost.py`` (about 40 s).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ROOT,
    CpuMonitor,
    RedisServer,
    celery_ping,
    load_average,
    log,
    machine_description,
    pdftasks_worker,
    percentile,
    print_table,
    release_results,
    sigterm_as_exit,
    use_pdftasks_env,
)

TEMPLATE = "invoice.html"
TARGET_MS = 50.0
WARMUP_DOCS = 3
STAGES = ["html parse", "styles", "boxes", "layout", "paint", "fonts", "pdf write", "rest"]
MODES = {
    "stock-nosubset": "stock, no HarfBuzz subsetting",
    "stock-subset": "stock, HarfBuzz subsetting",
    "service-before": "pdftasks warm, without this work",
    "service": "pdftasks warm worker",
}


# Child side: one setup per process.

class StageTimer:
    """Wraps WeasyPrint's stage functions with perf_counter timers (ms per document)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.docs: list[dict[str, float]] = []

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)
        timer = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                ms = (time.perf_counter() - started) * 1000
                timer.current[stage] = timer.current.get(stage, 0.0) + ms

        setattr(owner, name, timed)

    def install(self) -> None:
        import pydyf
        import weasyprint
        import weasyprint.document
        import weasyprint.pdf

        doc = weasyprint.document
        self.wrap(weasyprint.HTML, "__init__", "html parse")
        self.wrap(doc, "get_all_computed_styles", "styles")
        self.wrap(doc, "build_formatting_structure", "boxes")
        self.wrap(doc.Document, "_render", "_render")
        self.wrap(doc.Page, "paint", "paint")
        self.wrap(weasyprint.pdf, "build_fonts_dictionary", "fonts")
        self.wrap(doc, "generate_pdf", "_generate")
        self.wrap(pydyf.PDF, "write", "pdf write")

    def finish(self, total_ms: float) -> None:
        c = self.current
        stages = {k: c.get(k, 0.0) for k in ("html parse", "styles", "boxes", "paint", "fonts",
                                               "pdf write")}
        stages["layout"] = c.get("_render", 0.0) - stages["styles"] - stages["boxes"]
        # generate_pdf = paint + fonts + building the PDF objects; count the latter as writing.
        stages["pdf write"] += c.get("_generate", 0.0) - stages["paint"] - stages["fonts"]
        stages["rest"] = total_ms - sum(stages.values())
        self.docs.append(stages)
        self.current = {}


def _stock_no_subset() -> None:
    import weasyprint.pdf.fonts
    import weasyprint.text.ffi

    weasyprint.text.ffi.harfbuzz_subset = None
    weasyprint.pdf.fonts.harfbuzz_subset = None


def child(mode: str, out_dir: Path, profile: bool) -> dict[str, Any]:
    import gc
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("weasyprint").setLevel(logging.ERROR)  # fontTools fallback warning
    from pdftasks.samples import sample_invoice

    templates = ROOT / "templates"
    out_dir.mkdir(parents=True, exist_ok=True)
    timer = StageTimer()
    if mode.startswith("stock"):
        import jinja2
        import weasyprint
        from weasyprint.text.fonts import FontConfiguration

        if mode == "stock-nosubset":
            _stock_no_subset()
        fonttools_calls = [0]
        import weasyprint.pdf.fonts as wfonts

        original_subset = wfonts.Font._fonttools_subset

        def counting(self: Any, *a: Any, **k: Any) -> Any:
            fonttools_calls[0] += 1
            return original_subset(self, *a, **k)

        wfonts.Font._fonttools_subset = counting
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), autoescape=True)
        base_url = templates.as_uri() + "/"

        def render(i: int, path: Path) -> int:
            html = env.get_template(TEMPLATE).render(**sample_invoice(i))
            document = weasyprint.HTML(string=html, base_url=base_url).render(
                font_config=FontConfiguration())
            document.write_pdf(path)
            return len(document.pages)
    else:
        import pdftasks.celery_app  # noqa: F401  (a worker child's heap)
        from pdftasks.render import PDFService, PDFServiceConfig

        # "service-before": without the stylesheet cache and gc.freeze (as before them).
        service = PDFService(PDFServiceConfig(templates_dir=templates, output_dir=out_dir),
                             cache_stylesheets=mode != "service-before")
        if mode == "service-before":
            service.warm_up(freeze_gc=False)
        else:
            service.warm_up()
        fonttools_calls = [0]

        def render(i: int, path: Path) -> int:
            return service.generate_pdf(TEMPLATE, sample_invoice(i), path.name).pages

    for i in range(WARMUP_DOCS):
        render(900_000 + i, out_dir / f"warm_{i}.pdf")
    fonttools_before = fonttools_calls[0]
    timer.install()
    prof: Any = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    times: list[float] = []
    cpu: list[float] = []
    pages: set[int] = set()
    gc_count = sum(s["collections"] for s in gc.get_stats())
    # The parent hands out the invoices in small batches, round-robin between the rows'
    # processes: "run FIRST COUNT" renders that many, "finish" ends with the results.
    print("ready", flush=True)
    for line in sys.stdin:
        if line.startswith("finish"):
            break
        _, first, count = line.split()
        if prof is not None:
            prof.enable()
        for i in range(int(first), int(first) + int(count)):
            path = out_dir / f"inv_{i:04d}.pdf"
            started, started_cpu = time.perf_counter(), time.process_time()
            pages.add(render(i, path))
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
            timer.finish(times[-1])
        if prof is not None:
            prof.disable()
        print("ok", flush=True)
    if prof is not None:
        import pstats

        stats = pstats.Stats(prof, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
    return {
        "mode": mode, "ms": times, "cpu_ms": cpu, "pages": sorted(pages),
        "stages": {k: statistics.mean(d[k] for d in timer.docs) for k in STAGES},
        "sample": str(out_dir / "inv_0001.pdf"),
        "fonttools_calls": fonttools_calls[0] - fonttools_before,
        "gc_collections": sum(s["collections"] for s in gc.get_stats()) - gc_count,
    }


# Parent side.

class Row:
    """One setup's process, rendering the batches it is given (see ``child``)."""

    def __init__(self, mode: str, args: argparse.Namespace, tmp: Path) -> None:
        self.mode = mode
        cmd = [sys.executable, __file__, "--child", mode, "--out", str(tmp / mode)]
        if args.profile and mode == "service":
            cmd.append("--profile")
        self.err_path = tmp / f"{mode}.stderr"
        with open(self.err_path, "w") as err:  # a file: a full pipe would block the child
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=None if args.profile else err, text=True,
                                         start_new_session=True)
        self.cpu = CpuMonitor([self.proc.pid])
        self.busy_s = 0.0
        self.foreign = 0.0

    def _reply(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.err_path.read_text(errors="replace") if self.err_path.exists() else ""
            raise RuntimeError(f"{self.mode} exited:\n{err[-3000:]}")
        return line.strip()

    def ready(self) -> None:
        if self._reply() != "ready":
            raise RuntimeError(f"{self.mode}: unexpected start")

    def run(self, first: int, count: int) -> None:
        assert self.proc.stdin is not None
        started = time.monotonic()
        self.cpu.start()
        self.proc.stdin.write(f"run {first} {count}\n")
        self.proc.stdin.flush()
        self._reply()
        spent = time.monotonic() - started
        self.foreign += self.cpu.foreign_cores() * spent
        self.busy_s += spent

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("finish\n")
        self.proc.stdin.flush()
        result = json.loads(self._reply())
        self.proc.wait(timeout=30)
        result["other_cpu"] = self.foreign / self.busy_s if self.busy_s else math.nan
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class WorkerRow:
    """The end-to-end row: a real ``pdftasks worker -c 1``, jobs one at a time."""

    mode = "worker"

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.server = RedisServer(tmp / "redis").start()
        use_pdftasks_env(tmp, self.server.url(0), output="out-worker")
        from pdftasks.celery_app import app

        self.app = app
        self.hostname = f"bench-render-cost-{os.getpid()}@localhost"
        self.worker = pdftasks_worker(1, self.hostname, tmp / "worker.log", cwd=tmp)
        self.worker.start()
        assert self.worker.proc is not None and self.server.proc is not None
        self.cpu = CpuMonitor([self.worker.proc.pid, self.server.proc.pid])
        self.held: list[Any] = []
        self.times: list[float] = []
        self.busy_s = self.foreign = 0.0

    def _job(self, i: int) -> float:
        from pdftasks import generate_pdf
        from pdftasks.samples import sample_invoice

        self.held.append(generate_pdf.delay(template=TEMPLATE, data=sample_invoice(i),
                                            output_filename=f"w_{i:06d}.pdf"))
        return float(self.held[-1].get(timeout=60)["duration_ms"])

    def ready(self) -> None:
        self.worker.wait_ready(celery_ping(self.app, self.hostname), timeout=90)
        for i in range(WARMUP_DOCS):
            self._job(900_000 + i)

    def run(self, first: int, count: int) -> None:
        started = time.monotonic()
        self.cpu.start()
        self.times += [self._job(i) for i in range(first, first + count)]
        spent = time.monotonic() - started
        self.foreign += self.cpu.foreign_cores() * spent
        self.busy_s += spent

    def finish(self) -> dict[str, Any]:
        return {"mode": "worker", "ms": self.times,
                "other_cpu": self.foreign / self.busy_s if self.busy_s else math.nan}

    def kill(self) -> None:
        try:
            release_results(self.app, self.held)  # while Redis still runs
            self.held.clear()
            self.worker.stop()
        finally:
            self.server.stop()


def run_rows(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """All rows, interleaved: round r gives each row its next few invoices.

    Rows take turns (one renders at a time, the others wait idle), in an order that
    rotates every round, so a burst of load from other programs hits all rows alike.
    """
    rows: list[Any] = []
    # The row processes import pdftasks: keep its state out of the working directory.
    use_pdftasks_env(tmp, output="out-rows")
    try:
        rows += [Row(mode, args, tmp) for mode in MODES]
        if args.worker_jobs:
            rows.append(WorkerRow(args, tmp))
        for row in rows:
            row.ready()
        log(f"{len(rows)} rows warm; {args.rounds} interleaved rounds")
        total = {m: args.n for m in MODES}
        total.update({"stock-nosubset": args.n_stock_nosubset, "worker": args.worker_jobs})
        for r in range(args.rounds):
            for k in range(len(rows)):
                row = rows[(r + k) % len(rows)]
                lo = total[row.mode] * r // args.rounds
                hi = total[row.mode] * (r + 1) // args.rounds
                if hi > lo:
                    row.run(1 + lo, hi - lo)
        return [row.finish() for row in rows]
    finally:
        for row in rows:
            row.kill()


def compare_output(a: str, b: str, tmp: Path) -> str:
    """pypdf text + page count, and pdftoppm pixels, of two PDFs."""
    from pypdf import PdfReader

    ra, rb = PdfReader(a), PdfReader(b)
    text_a = [p.extract_text() for p in ra.pages]
    text_b = [p.extract_text() for p in rb.pages]
    verdict = [f"pages {len(text_a)} vs {len(text_b)}",
               "text equal" if text_a == text_b else "TEXT DIFFERS"]
    if shutil.which("pdftoppm") is None:
        return "; ".join([*verdict, "pixels not compared (pdftoppm missing)"])
    from PIL import Image, ImageChops

    images = []
    for name, pdf in (("a", a), ("b", b)):
        prefix = tmp / f"cmp-{name}"
        subprocess.run(["pdftoppm", "-r", "100", "-png", pdf, str(prefix)], check=True)
        images.append([Image.open(p).convert("RGB")
                       for p in sorted(tmp.glob(f"cmp-{name}*.png"))])
    same = len(images[0]) == len(images[1]) and all(
        ImageChops.difference(x, y).getbbox() is None for x, y in zip(*images, strict=True))
    verdict.append("pages pixel-identical at 100 dpi" if same else "PIXELS DIFFER")
    return "; ".join(verdict)


def fmt(ms: float) -> str:
    return "-" if math.isnan(ms) else f"{ms:.1f}"


def report(args: argparse.Namespace, results: list[dict[str, Any]], check: str,
           seconds: float) -> bool:
    by_mode = {r["mode"]: r for r in results}
    stock = by_mode.get("stock-nosubset", {}).get("ms")
    stock_p50 = statistics.median(stock) if stock else math.nan
    warm_p50 = statistics.median(by_mode["service"]["ms"])
    print()
    print("render_cost: one-page invoice (templates/invoice.html, sample_invoice(i)), "
          "template + data -> PDF file, one process")
    print(f"machine: {machine_description()}")
    print()
    rows = []
    for r in results:
        name = MODES.get(r["mode"], "pdftasks worker, end-to-end (duration_ms)")
        ms = r["ms"]
        p50 = statistics.median(ms)
        cpu = statistics.median(r["cpu_ms"]) if "cpu_ms" in r else math.nan
        rows.append([name, len(ms), fmt(p50), fmt(percentile(ms, 95)), fmt(statistics.mean(ms)),
                     fmt(cpu), f"{stock_p50 / p50:.2f}x", f"{p50 / warm_p50:.2f}x",
                     f"{r['other_cpu']:.2f}"])
    print_table(["setup", "n", "p50 ms", "p95 ms", "mean ms", "CPU ms p50", "speed-up",
                 "vs warm", "other CPU"], rows)
    print("speed-up = stock (no subsetting) p50 / row p50; vs warm = row p50 / pdftasks warm "
          "worker p50")
    print()
    print("Where the time goes (mean ms per invoice, stage timers):")
    stage_rows = []
    for r in results:
        if "stages" not in r:
            continue
        st = r["stages"]
        stage_rows.append([MODES[r["mode"]], *(fmt(st[k]) for k in STAGES),
                           fmt(sum(st.values()))])
    print_table(["setup", *STAGES, "total"], stage_rows)
    print("styles = finding + parsing stylesheets and the cascade; fonts = font subsetting; "
          "rest = Jinja, checks, FontConfiguration (stock), file write")
    nosub = by_mode.get("stock-nosubset")
    if nosub is not None:
        print(f"fontTools subsetting calls in the no-subsetting row: {nosub['fonttools_calls']} "
              f"({'fallback path confirmed' if nosub['fonttools_calls'] else 'NOT TAKEN'})")
    print(f"output check (pdftasks warm worker vs stock HarfBuzz, same invoice): {check}")
    met = warm_p50 <= TARGET_MS
    print(f"target: pdftasks warm worker p50 <= {TARGET_MS:.0f} ms: "
          f"{'met' if met else 'NOT met'} ({warm_p50:.1f} ms)")
    if any(r["other_cpu"] > 0.25 for r in results):
        print("WARNING: other programs used the CPUs while measuring (other CPU > 0.25); "
              "times are inflated. Re-run on an idle machine.")
    print(f"load average at end: {load_average()}; total run time {seconds:.0f} s")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="ms per one-page invoice: stock WeasyPrint vs a warm pdftasks worker.",
        epilog="Methodology: see the docstring at the top of this file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="invoices per in-process row")
    parser.add_argument("--n-stock-nosubset", type=int, default=10,
                        help="invoices for the slow no-subsetting row")
    parser.add_argument("--rounds", type=int, default=10,
                        help="interleaved rounds the invoices are split over")
    parser.add_argument("--worker-jobs", type=int, default=30,
                        help="jobs through a real worker (0 = skip that row)")
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile's top functions of the warm row (stderr)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="bound on each row's process, in seconds")
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    parser.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, Path(args.out), args.profile)))
        return 0
    if min(args.n, args.n_stock_nosubset) < args.rounds or args.worker_jobs < 0:
        parser.error("--n and --n-stock-nosubset must be >= --rounds, --worker-jobs >= 0")
    if args.worker_jobs and args.worker_jobs < args.rounds:
        parser.error("--worker-jobs must be 0 or >= --rounds")

    begin = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="pdftasks-render-cost-"))
    try:
        with sigterm_as_exit():
            results = run_rows(args, tmp)
            warm = next(r for r in results if r["mode"] == "service")["sample"]
            stock = next(r for r in results if r["mode"] == "stock-subset")["sample"]
            check = compare_output(warm, stock, tmp)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    met = report(args, results, check, time.monotonic() - begin)
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
