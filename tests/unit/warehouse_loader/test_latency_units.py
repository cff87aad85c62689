"""The loader's side of the latency waterfall, without a warehouse."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from warehouse_loader.latency import streamed_commits

T0 = dt.datetime(2026, 11, 29, 11, 0, tzinfo=dt.UTC)


def test_streamed_commits_are_epoch_seconds_of_the_rows_that_are_not_snapshot_rows():
    table = pa.table({
        "_op": ["r", "c", "u", "r", "d", "t"],
        "_commit_ts": pa.array([T0 + dt.timedelta(milliseconds=ms) for ms in (0, 1, 2, 3, 4, 5)],
                               pa.timestamp("us", tz="UTC")),
    })
    assert streamed_commits(table).to_pylist() == [T0.timestamp() + ms / 1000 for ms in (1, 2, 4, 5)]
    assert len(streamed_commits(table.slice(0, 1))) == 0


def test_a_stage_from_the_commit_to_one_instant_takes_its_p99_from_the_commits_first_percentile():
    """What the loader's statement relies on: p_q(t - commit) = t - p_(1-q)(commit)."""
    commits = np.random.default_rng(15).uniform(0, 10, 1001)
    t = 12.5
    assert np.isclose(np.percentile(t - commits, 99), t - np.percentile(commits, 1))
    assert np.isclose(np.percentile(t - commits, 50), t - np.percentile(commits, 50))
    # pyarrow's quantile (the loader's, no numpy in its Lambda) interpolates as numpy does.
    assert pc.quantile(pa.array(commits), q=[0.5, 0.01]).to_pylist() == pytest.approx(
        list(np.percentile(commits, [50, 1])))
