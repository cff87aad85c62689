"""capture.progress: rows done / estimate, windowed rate, ETA, from many threads."""

from __future__ import annotations

import threading

import pytest

from capture.progress import WINDOW_SECONDS, ProgressTracker, TableProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_from_rows_done_against_the_estimate() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("public.t", 1000)
    for _ in range(10):
        clock.now += 1
        tracker.advance("public.t", 20)
    [p] = tracker.snapshot()
    assert (p.table, p.rows_done, p.estimated_total, p.finished) == ("public.t", 200, 1000, False)
    assert p.rate == pytest.approx(20.0)
    assert p.eta_seconds == pytest.approx(40.0)
    assert p.describe() == "public.t 200/1,000 rows (20%), 20 rows/s, ETA 40 s"
    assert p.as_dict() == {"table": "public.t", "rows_done": 200, "estimated_total": 1000,
                           "rate": 20.0, "eta_seconds": 40, "finished": False}


def test_rate_follows_the_recent_window_not_the_whole_copy() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("t", 10_000_000)
    for _ in range(100):  # fast for 100 s, then slow for two windows
        clock.now += 1
        tracker.advance("t", 1000)
    for _ in range(int(2 * WINDOW_SECONDS)):
        clock.now += 1
        tracker.advance("t", 10)
    [p] = tracker.snapshot()
    assert p.rate == pytest.approx(10.0)


def test_a_stalled_copy_shows_its_rate_falling_to_zero() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("t", 100)
    clock.now += 1
    tracker.advance("t", 50)
    clock.now += 2 * WINDOW_SECONDS
    [p] = tracker.snapshot()
    assert p.rate == 0.0
    assert p.eta_seconds is None
    assert p.describe().endswith("ETA unknown")


def test_frequent_advances_keep_memory_bounded() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("t", None)
    for _ in range(100_000):
        clock.now += 0.001
        tracker.advance("t", 1)
    [p] = tracker.snapshot()
    assert p.rate == pytest.approx(1000.0, rel=0.05)
    assert len(tracker._tables["t"].samples) <= WINDOW_SECONDS + 3


def test_unknown_estimate_gives_no_eta() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("t", -1)  # reltuples of a table never analysed
    clock.now += 1
    tracker.advance("t", 5)
    [p] = tracker.snapshot()
    assert (p.estimated_total, p.eta_seconds) == (None, None)
    assert p.describe() == "t 5/? rows, 5 rows/s, ETA unknown"


def test_more_rows_than_estimated_gives_eta_zero_not_negative() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("t", 10)
    clock.now += 1
    tracker.advance("t", 15)
    [p] = tracker.snapshot()
    assert p.eta_seconds == 0.0
    assert "(100%)" in p.describe()


def test_finished_table_reports_its_average_rate_and_stays_listed() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("a", 100)
    tracker.start("b", 100)
    clock.now += 4
    tracker.advance("a", 100)
    tracker.finish("a")
    clock.now += 100
    a, b = tracker.snapshot()
    assert (a.table, a.finished, a.rows_done, a.rate, a.eta_seconds) == ("a", True, 100, 25.0, 0.0)
    assert a.describe() == "a 100 rows, done (25 rows/s)"
    assert (b.table, b.finished) == ("b", False)


def test_starting_a_table_again_starts_from_zero() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("t", 100)
    clock.now += 1
    tracker.advance("t", 100)
    tracker.finish("t")
    tracker.start("t", 200)
    [p] = tracker.snapshot()
    assert (p.rows_done, p.estimated_total, p.finished) == (0, 200, False)


def test_advances_from_many_threads_are_all_counted() -> None:
    tracker = ProgressTracker()
    tracker.start("t", 80_000)

    def copy_range() -> None:
        for _ in range(10_000):
            tracker.advance("t", 1)

    threads = [threading.Thread(target=copy_range) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tracker.snapshot()[0].rows_done == 80_000


def test_copied_counts_every_row_of_every_copy() -> None:
    tracker = ProgressTracker()
    tracker.start("t", 10)
    tracker.advance("t", 10)
    tracker.start("t", 10)  # copied again: the progress restarts, the count goes on
    tracker.advance("t", 4)
    tracker.start("u", 10)
    tracker.advance("u", 1)
    assert tracker.copied == 15


def test_a_resumed_copy_counts_rows_done_before_as_done_not_in_its_rate() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("t", 1000, done=600)
    clock.now += 2
    tracker.advance("t", 100)
    [p] = tracker.snapshot()
    assert (p.rows_done, p.rate, p.eta_seconds) == (700, 50.0, 6.0)
    assert tracker.copied == 100
    tracker.finish("t")
    assert tracker.snapshot()[0].rate == 50.0


def test_the_json_form_reads_back_into_the_same_line() -> None:
    """`totes-cdc status` shows a copy from the status file's JSON with the log line's words."""
    clock = Clock()
    tracker = ProgressTracker(clock)
    tracker.start("public.t", 2_000_000)
    clock.now += 10
    tracker.advance("public.t", 1_234_567)
    [p] = tracker.snapshot()
    assert TableProgress(**p.as_dict()).describe() == p.describe() == (
        "public.t 1,234,567/2,000,000 rows (61%), 123,457 rows/s, ETA 6 s")
