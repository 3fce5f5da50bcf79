"""The demo's window-end -> warehouse latency figures, against numpy's percentiles."""

import numpy as np

from txpipe.lab.demo import latency


def test_percentiles_and_max_match_numpy():
    delays = [0.4, 0.9, 1.3, 0.7, 2.8, 1.1, 0.5, 3.9, 0.8, 1.0, 12.5]
    p50, p95, most, n = latency(delays)
    assert n == len(delays) and most == 12.5
    assert abs(p50 - np.percentile(delays, 50)) < 1e-9
    assert abs(p95 - np.percentile(delays, 95)) < 1e-9


def test_no_window_no_figure_and_one_window_is_its_own_percentiles():
    assert latency([]) is None
    assert latency([1.5]) == (1.5, 1.5, 1.5, 1)
