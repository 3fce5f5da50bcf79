"""The demo's window-end -> on-time-pane latency figure, against numpy's percentiles."""

from datetime import datetime, timedelta

import numpy as np

from txpipe.contract import UTC
from txpipe.lab.demo import pane_latency

END = datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)


def _row(delay: float, timing: str = "ON_TIME", window: int = 0) -> dict:
    end = END + timedelta(seconds=30 * window)
    return {"window_end_time": end, "processed_at": end + timedelta(seconds=delay),
            "pane_timing": timing}


def test_percentiles_of_on_time_panes_only():
    delays = [0.4, 0.9, 1.3, 0.7, 2.8, 1.1, 0.5, 3.9, 0.8, 1.0]
    rows = [_row(d, window=i) for i, d in enumerate(delays)]
    rows += [_row(45.0, "LATE", window=3), _row(-10.0, "EARLY", window=4)]
    p50, p95, n = pane_latency(rows)
    assert n == len(delays)
    assert abs(p50 - np.percentile(delays, 50)) < 1e-9
    assert abs(p95 - np.percentile(delays, 95)) < 1e-9


def test_no_on_time_pane_no_figure_and_one_pane_is_its_own_percentiles():
    assert pane_latency([_row(5.0, "LATE")]) is None
    assert pane_latency([_row(1.5)]) == (1.5, 1.5, 1)
