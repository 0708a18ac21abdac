#!/usr/bin/env python
"""What each document option adds to the one-page invoice, next to the plain render.

Issue 15. One process, one warm ``PDFService`` set up as a worker child's is
(``cache_stylesheets=True``, ``warm_up()``), the sample invoice
(``templates/sample_invoice.json``). Each row is one set of job options, timed as
``PDFService.generate_pdf`` (template + data + options to a PDF file on disk, the unit a
worker job times). The rows are interleaved: ``--rounds`` rounds, each rendering every row
``--n`` / ``--rounds`` times in a rotating order, so load from other programs hits every
row alike. 3 unmeasured renders per row first.

Columns: median and p90 wall ms, ``added ms`` = the row's median minus the plain row's,
``x plain`` = the ratio of medians, and the output size. Signing uses a throwaway CA made
here (PKCS#12 as the workers' profile); B-T asks a local RFC 3161 server over HTTP (the
time of a real timestamp authority is its network round trip on top).

Run: ``.venv/bin/python benchmarks/document_options.py`` (about 40 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    ROOT,
    load_average,
    machine_description,
    percentile,
    print_table,
)

COVER = {"title": "Cover letter", "period": "November 2026", "generated_at": "-",
         "summary": "Please find our invoice enclosed.", "sections": []}

ROWS: dict[str, dict[str, Any] | None] = {
    "plain (no options)": None,
    "metadata": {"metadata": {"author": "Northwind Billing", "language": "de-DE"}},
    "pdf_variant pdf/a-3b": {"pdf_variant": "pdf/a-3b"},
    "pdf_variant pdf/ua-1": {"pdf_variant": "pdf/ua-1"},
    "einvoice en16931 (PDF/A-3b)": {"einvoice": {"profile": "en16931"}},
    "watermark": {"watermark": {"text": "PAID"}},
    "encrypt (AES-256)": {"encrypt": {"owner_password": "owner", "user_password": "user"}},
    "attachments (2 files)": {"attachments": [
        {"name": "lines.csv", "content_base64": "c2t1LHF0eQpBLDEK"},
        {"name": "logo.svg", "path": "logo.svg"}]},
    "merge (cover + invoice)": {"merge": [{"template": "report.html", "data": COVER},
                                          {"self": True}]},
    "sign b-b": {"sign": {}},
    "sign b-t (local TSA)": {"sign": {"level": "b-t"}},
    "sign b-b, visible box": {"sign": {"visible": {}}},
    "all: einvoice+watermark+merge+sign b-t": {
        "einvoice": {}, "watermark": {"text": "PAID"},
        "merge": [{"self": True}, {"template": "report.html", "data": COVER}],
        "sign": {"level": "b-t"}},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=30, help="measured renders per row")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from pdftasks.options import parse_options
    from pdftasks.render import PDFService, PDFServiceConfig
    from pdftasks.settings import Settings
    from tests.unit.test_documents_sign import PASSPHRASE, TimestampServer, make_ca

    tmp = Path(tempfile.mkdtemp(prefix="bench-docopts-"))
    ca = make_ca(tmp)
    tsa = TimestampServer(ca)
    settings = Settings(templates_dir=ROOT / "templates", output_dir=tmp / "out",
                        sign_pkcs12_file=ca.p12, sign_pkcs12_passphrase=PASSPHRASE.decode(),
                        sign_timestamp_url=tsa.url)
    service = PDFService(PDFServiceConfig.from_settings(settings), cache_stylesheets=True)
    service.warm_up(freeze_gc=True)
    data = json.loads((ROOT / "templates" / "sample_invoice.json").read_text())
    options = {name: parse_options(raw) for name, raw in ROWS.items()}
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    sizes: dict[str, int] = {}

    def render(name: str, i: int) -> float:
        started = time.perf_counter()
        result = service.generate_pdf("invoice.html", data, f"{i}.pdf", options=options[name])
        elapsed = (time.perf_counter() - started) * 1000
        sizes[name] = result.bytes
        return elapsed

    names = list(ROWS)
    for name in names:
        for i in range(3):
            render(name, i)
    per_round = max(1, args.n // args.rounds)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for i in range(per_round):
                times[name].append(render(name, i))
    tsa.close()

    plain = percentile(times[names[0]], 50)
    rows = []
    for name in names:
        median = percentile(times[name], 50)
        rows.append([name, f"{median:.1f}", f"{percentile(times[name], 90):.1f}",
                     "-" if name == names[0] else f"{median - plain:+.1f}",
                     f"{median / plain:.2f}", f"{sizes[name] / 1024:.1f}"])
    print(f"Document options on the one-page sample invoice ({per_round * args.rounds} "
          f"renders per row, interleaved; load {load_average()})")
    print(machine_description())
    print()
    print_table(["options", "median ms", "p90 ms", "added ms", "x plain", "KiB"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
