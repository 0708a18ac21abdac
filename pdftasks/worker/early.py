"""Take a pool process's next message while it records the end of its current job.

A pdftasks worker holds one job per pool process (prefetch multiplier 1, ``-O fair``), so
the next free process always gets the most urgent job waiting. Without more, a process's
next message is taken off the broker only once its current job is acknowledged: the
``BRPOP``, kombu's unacked record, the guard's checks and Celery's request then all happen
while the process waits (about 1.5 ms of the 4.4 ms between two of its renders on an idle
2-core machine; overlapping them gave 0.7–0.9 ms less per job, see
``docs/explanation/performance.md``).

Here, a pool process tells the worker's main process when a job's render ended (its id on a
pipe made before the pool forks, ``render_ended``). From then until that job's request
ends, the main process allows one more message (Celery's consumer prefetch, as for ETA
tasks), so the next message is taken and checked while the process writes the job's
record, result and events. The message waits in the main process (the pool's outbound
buffer under ``-O fair``) until a process is free: no process ever holds two jobs, and a
job still goes to the first process that is free. What changes for priority: the next job
is chosen when a render ends rather than when its job is acknowledged, a few milliseconds
earlier; an urgent job that arrives within those milliseconds goes to the next free
process after that one.

Only for Celery's prefork pool with an event loop (what ``pdftasks worker`` runs);
``PDFTASKS_EARLY_FETCH=false`` turns it off.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from typing import Any

from celery import Celery, bootsteps

#: (read end, write end) of the pipe, in the worker's main process and its pool processes.
_pipe: tuple[int, int] | None = None
#: The main process's pid: it never signals itself (a solo or threads pool shares it).
_main_pid = 0
#: The running step of this (main) process: request ends are reported to it.
_active: EarlyFetch | None = None
#: Jobs whose request ended before their render's signal was read (both arrive together).
_ENDED_KEEP = 256
#: Longest job id signalled, in bytes (with its newline, well under the pipe's atomic
#: write size); a longer id, or one with a line break, simply is not taken early.
_MAX_ID = 512


def render_ended(job_id: str) -> None:
    """In a pool process: the render of ``job_id`` ended; the main process may take the
    next message now. Never blocks and never fails (a full pipe only means no early take)."""
    pipe = _pipe
    if pipe is None or os.getpid() == _main_pid:
        return
    line = job_id.encode("utf-8", "surrogatepass")
    if len(line) > _MAX_ID or b"\n" in line:
        return
    with contextlib.suppress(OSError):
        os.write(pipe[1], line + b"\n")


def request_ended(job_id: str) -> None:
    """In the main process: the request of ``job_id`` ended (success, failure, retry,
    hard time limit, lost process); give back the extra message it allowed, if any."""
    step = _active
    if step is not None:
        step.end(job_id)


class EarlyFetch(bootsteps.StartStopStep):
    """Consumer bootstep: one more message allowed per pool process whose render ended,
    until its request ends (see the module)."""

    label = "pdftasks-early-fetch"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.consumer: Any = None
        self.early: set[str] = set()
        self.ended: deque[str] = deque(maxlen=_ENDED_KEEP)
        self.partial = b""
        super().__init__(c, **kwargs)

    def include_if(self, c: Any) -> bool:
        from celery.concurrency.prefork import TaskPool

        from pdftasks.worker.tasks import app_settings

        return bool(app_settings(c.app).early_fetch and c.hub is not None
                    and isinstance(c.pool, TaskPool))

    def create(self, c: Any) -> EarlyFetch:
        global _pipe, _main_pid
        if _pipe is None:  # before the pool forks: its processes inherit the write end
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)
            _pipe, _main_pid = (read_fd, write_fd), os.getpid()
        return self

    def start(self, c: Any) -> None:
        global _active
        self.consumer = c
        # A new connection: a new QoS at its initial prefetch. Signals not read yet are of
        # renders before it (their requests may have ended unseen): dropped, not counted.
        self.early.clear()
        self.ended.clear()
        self.partial = b""
        if _pipe is not None:
            with contextlib.suppress(OSError):
                while os.read(_pipe[0], 65536):
                    pass
            c.hub.add_reader(_pipe[0], self.readable)
            _active = self

    def stop(self, c: Any) -> None:
        global _active
        if _active is self:
            _active = None
        if _pipe is not None and c.hub is not None:
            with contextlib.suppress(Exception):
                c.hub.remove_reader(_pipe[0])

    shutdown = stop

    def readable(self, *_: Any) -> None:
        assert _pipe is not None
        try:
            data = os.read(_pipe[0], 65536)
        except (BlockingIOError, InterruptedError):
            return
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            self.start_early(line.decode("utf-8", "surrogatepass"))

    def start_early(self, job_id: str) -> None:
        qos = getattr(self.consumer, "qos", None)
        if qos is None or job_id in self.early:
            return
        if job_id in self.ended:  # its result was read first: nothing left to overlap
            self.ended.remove(job_id)
            return
        self.early.add(job_id)
        qos.increment_eventually()  # the event loop applies it before its next poll

    def end(self, job_id: str) -> None:
        if job_id in self.early:
            self.early.discard(job_id)
            qos = getattr(self.consumer, "qos", None)
            if qos is not None:
                qos.decrement_eventually()
        else:
            self.ended.append(job_id)


def install(app: Celery) -> None:
    """Add ``EarlyFetch`` to ``app``'s workers."""
    app.steps["consumer"].add(EarlyFetch)


__all__ = ["EarlyFetch", "install", "render_ended", "request_ended"]
