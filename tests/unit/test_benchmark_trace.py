"""Unit tests (fast, no services) of ``benchmarks/throughput.py``'s trace split: the file
format ``_variant_app.py`` writes, read back into steps that add up and into each render's
CPU."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import throughput  # noqa: E402

#: The marks of one job in a pool process (step, seconds after the job's first mark, CPU
#: clock after it), in the order they happen; m_* are the main process's.
POOL_MARKS = [("k_in", 0.0, 0.0), ("prerun", 0.0002, 0.0001), ("render_start", 0.0010, 0.0008),
              ("render_end", 0.0510, 0.0458), ("on_success", 0.0516, 0.0462),
              ("emit", 0.0522, 0.0465), ("on_success_end", 0.0524, 0.0467),
              ("postrun", 0.0525, 0.0468)]
MAIN_MARKS = [("m_received", 0.0400), ("m_dispatched", 0.0405), ("m_result", 0.0530),
              ("m_result_end", 0.0531)]


def _write_trace(folder: Path, jobs: list[str], pid: int = 4242, main_pid: int = 4200,
                 cpu: bool = True) -> None:
    """Two files as the variant app writes them: the pool process's and the main
    process's (each job starts 0.06 s after the one before)."""
    pool, main = [], []
    for n, job in enumerate(jobs):
        t0, c0 = 1000.0 + 0.06 * n, 5.0 + 0.05 * n
        for step, dt, dc in POOL_MARKS:
            clock = f" {c0 + dc:.6f}" if cpu else ""
            pool.append(f"{t0 + dt:.6f} {step} {job} {2 * n}{clock}")
        for step, dt in MAIN_MARKS:
            main.append(f"{t0 + dt:.6f} {step} {job} 0")
        main.append(f"{t0 + 0.0595:.6f} m_write {pid} 0")  # the next job to this process
    (folder / f"trace-{pid}.log").write_text("\n".join(pool) + "\n")
    (folder / f"trace-{main_pid}.log").write_text("\n".join(main) + "\n")


def test_the_split_adds_up_and_gives_each_render_its_cpu(tmp_path: Path) -> None:
    jobs = ["a", "b", "c"]
    _write_trace(tmp_path, jobs)
    split = throughput.trace_split(tmp_path, set(jobs))
    # Two gaps between three jobs; the steps add up to the time between two renders
    assert len(split["total"]) == 2
    total = sum(split[name][0] for name, *_ in throughput.TRACE_STEPS)
    assert total == pytest.approx(split["total"][0], abs=1e-6)
    assert split["total"][0] == pytest.approx((1000.061 - 1000.051) * 1000, abs=1e-3)
    assert split["main: next message written"][0] == pytest.approx(
        (0.0595 - 0.0531) * 1000, abs=1e-3)
    # Each render's CPU comes from the process's own clock at its start and end marks
    assert split[throughput.RENDER_CPU] == pytest.approx([45.0, 45.0, 45.0], abs=1e-3)


def test_jobs_not_measured_and_marks_without_a_clock_are_left_out(tmp_path: Path) -> None:
    _write_trace(tmp_path, ["a", "b", "c"], cpu=False)
    split = throughput.trace_split(tmp_path, {"a", "b"})
    assert len(split["total"]) == 1  # a -> b only: c was not measured
    assert split[throughput.RENDER_CPU] == []
    assert not any(math.isnan(v) for v in split["total"])


def test_the_pool_process_cpu_of_each_of_its_own_steps(tmp_path: Path) -> None:
    _write_trace(tmp_path, ["a", "b"])
    split = throughput.trace_split(tmp_path, {"a", "b"})
    cpu = throughput.CPU_OF
    # Steps between two marks of the pool process: the CPU its clock moved
    assert split[cpu + "end script"] == pytest.approx([0.3], abs=1e-3)  # 0.0465 - 0.0462
    assert split[cpu + "tracer set-up"] == pytest.approx([0.1], abs=1e-3)  # next job's
    # The hand-over: from its postrun to its next message (0.05 + 0.0 - 0.0468)
    assert split[cpu + throughput.HAND_OVER[0]] == pytest.approx([3.2], abs=1e-3)
    # Steps with a mark of the main process have no pool process CPU
    assert cpu + "result to the main process" not in split
