"""Unit tests (no broker, no worker): the bookkeeping of ``pdftasks.worker.early`` between
a pool process's render-ended signal and the end of its request, on kombu's own QoS."""

from __future__ import annotations

import os
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from kombu.common import QoS

from pdftasks.worker import early


@pytest.fixture
def step(monkeypatch) -> Any:
    """An EarlyFetch step on a consumer whose QoS starts at 2 (two pool processes), with
    this process in the role of a pool process (it writes to the pipe)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    monkeypatch.setattr(early, "_pipe", (read_fd, write_fd))
    monkeypatch.setattr(early, "_main_pid", -1)
    consumer = SimpleNamespace(qos=QoS(lambda prefetch_count: None, 2))
    s = early.EarlyFetch.__new__(early.EarlyFetch)
    s.consumer, s.early, s.partial = consumer, set(), b""
    s.ended = deque(maxlen=early._ENDED_KEEP)
    monkeypatch.setattr(early, "_active", s)
    yield s
    os.close(read_fd)
    os.close(write_fd)


def test_a_render_end_allows_one_more_message_until_its_request_ends(step) -> None:
    early.render_ended("job-1")
    step.readable()
    assert step.consumer.qos.value == 3
    early.render_ended("job-1")  # the same job again: still one
    step.readable()
    assert step.consumer.qos.value == 3
    early.request_ended("job-1")
    assert step.consumer.qos.value == 2
    early.request_ended("job-1")  # ended twice (failure after a lost process): once
    assert step.consumer.qos.value == 2


def test_a_request_that_ended_before_its_signal_was_read_allows_nothing(step) -> None:
    early.render_ended("job-2")
    early.request_ended("job-2")  # the result was read first
    step.readable()
    assert step.consumer.qos.value == 2 and not step.early


def test_jobs_that_never_signal_change_nothing(step) -> None:
    early.request_ended("failed-before-render")
    assert step.consumer.qos.value == 2


def test_two_processes_ending_together_allow_two(step) -> None:
    early.render_ended("a")
    early.render_ended("b")
    step.readable()
    assert step.consumer.qos.value == 4
    early.request_ended("b")
    early.request_ended("a")
    assert step.consumer.qos.value == 2


def test_a_line_split_across_reads_is_kept_until_complete(step) -> None:
    os.write(early._pipe[1], b"job-")
    step.readable()
    assert step.consumer.qos.value == 2 and step.partial == b"job-"
    os.write(early._pipe[1], b"3\n")
    step.readable()
    assert step.early == {"job-3"} and step.consumer.qos.value == 3


def test_the_main_process_never_signals_itself(step, monkeypatch) -> None:
    monkeypatch.setattr(early, "_main_pid", os.getpid())
    early.render_ended("job-4")  # a solo pool runs jobs in the main process
    step.readable()
    assert step.consumer.qos.value == 2


def test_without_a_pipe_nothing_happens(monkeypatch) -> None:
    monkeypatch.setattr(early, "_pipe", None)
    monkeypatch.setattr(early, "_active", None)
    early.render_ended("job-5")
    early.request_ended("job-5")


def test_any_job_id_is_given_back_under_the_same_id(step) -> None:
    # Callers choose job ids (apply_async(task_id=...)): not only ASCII
    for job_id in ("café-1", "職-2", "\ud800-3"):
        early.render_ended(job_id)
        step.readable()
        assert job_id in step.early
        early.request_ended(job_id)
    assert step.consumer.qos.value == 2 and not step.early


def test_an_id_with_a_line_break_or_too_long_is_not_taken_early(step) -> None:
    early.render_ended("two\nlines")
    early.render_ended("x" * (early._MAX_ID + 1))
    step.readable()
    assert step.consumer.qos.value == 2 and not step.early and step.partial == b""


def test_signals_left_unread_by_a_lost_connection_are_dropped_on_restart(step) -> None:
    # Given a render's signal still in the pipe when the connection was lost (its request
    # may have ended unseen) and a new QoS after the reconnect
    early.render_ended("before-reconnect")
    readers = []
    consumer = SimpleNamespace(qos=QoS(lambda prefetch_count: None, 2),
                               hub=SimpleNamespace(add_reader=lambda fd, cb: readers.append(fd)))
    # When the step starts again
    step.start(consumer)
    step.readable()
    # Then the old signal allows nothing on the new QoS; new ones do
    assert consumer.qos.value == 2 and readers == [early._pipe[0]]
    early.render_ended("after-reconnect")
    step.readable()
    assert consumer.qos.value == 3
