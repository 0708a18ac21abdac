"""Charts of the recorded benchmark results, for the docs.

Reads the numbers recorded from the benchmark runs (``docs/data/benchmarks.json``, updated
by hand when a benchmark is rerun) and draws them with matplotlib: throughput against the
rendering limit, the per-PDF cost, where the latency of one job goes, and the urgent wait.
The docs build calls ``charts()``; run it alone to write the PNG files somewhere:

    python benchmarks/charts.py --out /tmp/charts
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The recorded numbers the charts are drawn from.
DATA = ROOT / "docs" / "data" / "benchmarks.json"

_BLUE, _GREY, _ORANGE = "#3f51b5", "#9e9e9e", "#ef6c00"


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # No timestamps or software versions in the file: the same numbers give the same bytes.
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight",
                   metadata={"Software": None})
    return buffer.getvalue()


def _throughput(data: dict[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    rows = data["throughput"]["rows"]
    cost = data["render_cost"]["rows"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    names = [r["setup"] for r in rows][::-1]
    values = [r["of_limit"] for r in rows][::-1]
    colors = [_GREY if "limit" in n else _BLUE for n in names]
    left.barh(names, values, color=colors)
    left.axvline(100, color=_ORANGE, linestyle="--", linewidth=1)
    left.set_xlabel("throughput, % of the rendering limit (median of rounds)")
    left.set_xlim(0, 110)
    for y, v in enumerate(values):
        left.text(v + 1, y, f"{v:.1f}%", va="center", fontsize=8)
    left.set_title("500 one-page invoices, 2 processes")
    names = [r["setup"] for r in cost][::-1]
    p50 = [r["p50_ms"] for r in cost][::-1]
    right.barh(names, p50, color=[_GREY if n.startswith("stock") else _BLUE for n in names])
    for y, v in enumerate(p50):
        right.text(v + 4, y, f"{v:.0f} ms", va="center", fontsize=8)
    right.set_xlabel("ms per one-page invoice (p50, lower is better)")
    right.set_xlim(0, max(p50) * 1.2)
    right.set_title("Per-PDF cost")
    figure.tight_layout()
    out = _png(figure)
    plt.close(figure)
    return out


def _latency(data: dict[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    steps = data["latency"]["rows"]
    prio = data["priority"]["rows"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 2.8),
                                         gridspec_kw={"width_ratios": [3, 2]})
    start = 0.0
    palette = [_ORANGE, "#ffb74d", _BLUE, "#7986cb", "#c5cae9"]
    for row, color in zip(steps, palette, strict=False):
        left.barh([0], [row["p50_ms"]], left=start, color=color, label=row["step"])
        start += row["p50_ms"]
    left.set_yticks([])
    left.set_xlabel("ms (p50) from .delay() to .get() returning, idle worker")
    left.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    left.set_title(f"One job end to end: {start:.0f} ms, of which rendering "
                   f"{steps[2]['p50_ms']:.0f} ms")
    right.bar([r["setup"] for r in prio], [r["ms"] for r in prio], color=[_BLUE, _GREY])
    right.set_ylabel("ms")
    right.set_title("Urgent job behind 1,000 low ones (p95)")
    right.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    out = _png(figure)
    plt.close(figure)
    return out


def charts(data_file: Path = DATA) -> dict[str, bytes]:
    """The charts as PNG bytes by file name."""
    import matplotlib

    matplotlib.use("Agg")
    data = json.loads(data_file.read_text(encoding="utf-8"))
    return {"bench-throughput.png": _throughput(data), "bench-latency.png": _latency(data)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNGs")
    parser.add_argument("--data", type=Path, default=DATA, help="recorded numbers (JSON)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, png in charts(args.data).items():
        (args.out / name).write_bytes(png)
        print(args.out / name)


if __name__ == "__main__":
    main()
