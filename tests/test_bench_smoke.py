"""The benchmark harness, tiny: it runs, and what it compares is the same work — txpipe and the
pandas baseline find the same windows, counts and money, and the notebook's two plans agree.
No timing is asserted; the figures come from ``make bench``."""

from __future__ import annotations

import json
import random
import sys
from datetime import timedelta
from decimal import Decimal

import pytest
import recount

from benchmarks import data, elementwise, foreign, replay
from benchmarks.measure import run

pytestmark = pytest.mark.subprocess  # the benchmarks measure whole processes


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    # bad records of every reason too, so both implementations' validation is exercised
    return work, data.replay_file(work / "replay.jsonl", 2_000, malformed_share=0.03)


def test_txpipe_and_pandas_compute_the_same_windows(small_file):
    work, path = small_file
    pandas = replay.pandas_replay(path, work)
    ours = replay.txpipe_replay(path, work)
    assert replay.disagreements(ours, pandas) == []
    counts = ours.counts
    assert counts["unique"] + counts["duplicates_dropped"] == counts["valid"]
    assert counts["duplicates_dropped"] > 0
    assert ours.counts["dead_lettered"] == pandas.counts["dead"] > 0
    assert ours.measured.peak_rss_bytes > 0 and ours.measured.cpu_seconds > 0


def test_txpipe_and_pandas_agree_on_a_foreign_producers_file(tmp_path):
    path = foreign.write(tmp_path / "foreign.jsonl", 3_000, duplicates=0.05, bad=0.02)
    pandas = replay.pandas_replay(path, tmp_path)
    ours = replay.txpipe_replay(path, tmp_path)
    assert replay.disagreements(ours, pandas) == []
    assert ours.counts["duplicates_dropped"] > 0 and ours.counts["dead_lettered"] > 0


def test_the_strict_baseline_reads_every_spelling_the_contract_reads(tmp_path):
    """Lower-case t and z, a space, offsets, 1-9 digits of a second, exponents: what txpipe
    accepts the strict baseline accepts too, and they find the same windows."""
    rng = random.Random(3)
    txs = [recount.Tx(f"s-{i}", Decimal(rng.randrange(1, 10**7)).scaleb(-2),
                      recount.BASE + timedelta(microseconds=rng.randrange(0, 600 * 10**6)))
           for i in range(1_500)]
    path = tmp_path / "spellings.jsonl"
    path.write_bytes(b"\n".join(recount.spell_message(tx, rng) for tx in txs) + b"\n")
    pandas = replay.pandas_replay(path, tmp_path)
    ours = replay.txpipe_replay(path, tmp_path)
    assert pandas.counts["dead"] == ours.counts["dead_lettered"] == 0
    assert replay.disagreements(ours, pandas) == []


def test_a_file_of_only_bad_lines_is_counted_dead_by_txpipe_and_the_baseline(tmp_path):
    """No window at all (pandas then writes an empty line): every line dead, nothing lost, and
    the strict baseline agrees."""
    path = foreign.write(tmp_path / "bad.jsonl", 300, bad=1.0)
    ours = replay.txpipe_replay(path, tmp_path)
    strict = replay.pandas_replay(path, tmp_path)
    assert ours.counts["dead_lettered"] == strict.counts["dead"] == 300
    assert ours.windows == strict.windows == {}
    assert replay.disagreements(ours, strict) == []


def test_the_plain_script_and_duckdb_count_what_txpipe_counts_on_a_clean_file(tmp_path):
    """On a file without bad lines the scripts a user compares with do the same work: the same
    windows, counts and money (to the cent) as txpipe's strict baseline."""
    path = foreign.write(tmp_path / "clean.jsonl", 2_000, duplicates=0.05)
    strict = replay.pandas_replay(path, tmp_path)
    for script in ("plain_pandas", "duckdb_sql"):
        other = replay.pandas_replay(path, tmp_path, script)
        assert other.counts == strict.counts, script
        assert sorted(w["count"] for w in other.windows.values()) == sorted(
            w["count"] for w in strict.windows.values())
        assert abs(sum(w["sum"] for w in other.windows.values())
                   - sum(Decimal(str(w["sum"])) for w in strict.windows.values())) < 0.01


def test_the_element_wise_measurement_runs(tmp_path):
    result = elementwise.measure("dataflow", tmp_path, sizes=(300, 600))
    assert result["sizes"] == (300, 600) and min(result["cpu_s"]) > 0


def test_the_price_is_dataflows_list_price_of_the_seed_worker():
    # 3.6 ms of CPU per transaction: a million of them is one vCPU-hour; on n1-standard-2
    # (2 vCPU, 7.5 GB) streaming workers that hour costs $0.069 and 3.75 GB-hours at $0.003557
    cost = elementwise.dataflow_cost(0.0036)
    assert cost["vcpu_hours_per_million"] == pytest.approx(1.0)
    assert cost["usd_per_million"] == pytest.approx(0.069 + 3.75 * 0.003557)


def test_the_multi_process_replay_agrees_too(small_file):
    work, path = small_file
    pandas = replay.pandas_replay(path, work)
    ours = replay.txpipe_replay(path, work, replay.MULTI_PROCESS, name="mp")
    assert replay.disagreements(ours, pandas) == []


def test_the_notebook_plans_collect_the_same_windows(small_file):
    work, _ = small_file
    path = data.replay_file(work / "notebook.jsonl", 1_000, rate=20)
    results = {}
    for plan in ("stats", "stepwise"):
        out = run([sys.executable, "-m", "benchmarks.notebook", str(path), "--plan", plan,
                   "--json"]).check()
        results[plan] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["stats"]["rows"] > 1
    for key in ("rows", "transactions", "sums"):
        assert results["stats"][key] == results["stepwise"][key], key


def test_the_anomaly_benchmark_scores_both_detectors_on_the_same_windows(tmp_path):
    from benchmarks import anomaly

    result = anomaly.measure(tmp_path, 0.5, 4, 3, None, "category")
    assert result["injected"] == 2 and result["rows"] > 0  # 60 windows, 20 of warm-up
    for key in ("precision", "recall", "baseline_precision", "baseline_recall"):
        assert 0.0 <= result[key] <= 1.0
    # the baseline flags a point more than 3 sd from its series' past: check it by hand
    windows = [{"window_start_time": f"t{i:03d}", "pane_timing": "ON_TIME",
                "total_transactions": 100 + (i % 3), "total_amount_sum": "10.00"}
               for i in range(30)]
    windows[25]["total_transactions"] = 400
    found = anomaly.moving_average_baseline(windows, [])
    assert [(f["window_start_time"], f["metric"]) for f in found] == [
        ("t025", "total_transactions")]
