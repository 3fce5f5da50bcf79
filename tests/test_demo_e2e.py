"""End to end with the real Pub/Sub emulator: a seeded simulator run and its truth manifest ->
the streaming pipeline (DirectRunner) -> a DuckDB file; the warehouse must equal the manifest.

The expectations come from the simulator's record of what the service acknowledged, never from
the pipeline: per window the count, the exact sum, min and max of the transactions that were not
sent late; every bad message a dead letter with its reason.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from conftest import unique_settings

from simulator import Truth
from txpipe import money
from txpipe.lab.demo import DemoConfig, count_dead_letters, read_totals, read_windows, run_live
from txpipe.lab.local import PubSubEmulator, free_port, pid_alive
from txpipe.resources import ensure_pubsub
from txpipe.sinks.duckdb import connect

WINDOW, LATENESS = 5, 8


def test_warehouse_equals_the_truth_manifest(pubsub_emulator, tmp_path):
    settings = unique_settings(window_size_seconds=WINDOW, allowed_lateness_seconds=LATENESS)
    cfg = DemoConfig(seconds=15, rate=150, seed=7, duplicate_rate=0.03, malformed_rate=0.02,
                     late_rate=0.02, jitter_seconds=1.0, local_dir=tmp_path, band_seconds=3)
    warehouse = str(tmp_path / "warehouse.duckdb")
    outcome = run_live(cfg, settings, pubsub_emulator.emulator_host, warehouse, say=lambda _: None)

    # The manifest, as a file and back: what a correct pipeline must output.
    manifest = tmp_path / "truth.json"
    outcome.published.to_json(manifest)
    truth = Truth.from_json(manifest)
    assert truth.duplicates > 0 and truth.late > 0 and sum(truth.malformed.values()) >= 6

    rows, dead = read_windows(warehouse, settings), count_dead_letters(warehouse, settings)
    got = read_totals(warehouse, settings)
    kept = {w.start: w for w in outcome.kept.windows}
    assert set(got) == {start for start, w in kept.items() if w.count}
    for start, want in kept.items():
        row = got[start]
        assert row["total_transactions"] == want.count, start
        assert row["total_amount_sum"] == want.sum  # exact: Decimal against Decimal
        assert money.to_text(row["total_amount_sum"]) == money.to_text(want.sum)
        assert row["min_amount"] == want.min and row["max_amount"] == want.max
        assert row["window_end_time"] - row["window_start_time"] == timedelta(seconds=WINDOW)
    for pane in rows:  # every stored pane's average is its own sum over its count
        assert pane["avg_transaction_amount"] == money.average(pane["total_amount_sum"],
                                                               pane["total_transactions"])

    con = connect(warehouse)
    try:
        reasons = Counter(dict(con.execute(
            f'SELECT reason, count(*) FROM "{settings.bigquery_dead_letter_table_id}" '
            "GROUP BY reason").fetchall()))
    finally:
        con.close()
    assert reasons == Counter({k: v for k, v in truth.malformed.items() if v})
    assert dead == sum(truth.malformed.values())

    c = outcome.conservation
    assert c.line() == (
        f"CONSERVATION published_valid={truth.valid} counted={truth.valid - truth.late} "
        f"dead_lettered={sum(truth.malformed.values())} duplicates_dropped={truth.duplicates} "
        f"late_dropped={truth.late} lost=0")
    assert c.exact and c.unexpected == 0
    # The read caught up, and the windows that closed meanwhile were fired by a watermark that
    # stays the estimation band behind the clock: none reached the warehouse sooner.
    assert outcome.caught_up_after is not None
    assert outcome.arrivals and min(outcome.arrivals) >= cfg.band_seconds
    assert sum(Decimal(w.counted_sum) for w in c.windows) == sum(
        (w.sum for w in outcome.kept.windows), Decimal(0))


@pytest.mark.emulator  # starts an emulator of its own, to restart it
def test_emulator_restart_mid_run_loses_nothing_silently(tmp_path, monkeypatch):
    """Kill the emulator mid-run and start a new one on the same port: the simulator retries,
    the reader waits, and whatever the old server held is reported as lost, window by window."""
    port = free_port()
    emulator = PubSubEmulator(port=port, log_path=tmp_path / "emulator.log").start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.emulator_host)
    settings = unique_settings(window_size_seconds=WINDOW, allowed_lateness_seconds=LATENESS)
    cfg = DemoConfig(seconds=14, rate=150, seed=11, late_rate=0.0, local_dir=tmp_path, band_seconds=3)
    pids = [emulator.pid]
    restarted = []

    def restart(elapsed: float) -> None:
        if elapsed >= 5 and not restarted:
            restarted.append(elapsed)
            emulator.stop()
            assert not pid_alive(pids[0])
            emulator.start(port)
            pids.append(emulator.pid)
            ensure_pubsub(settings, emulator_host=emulator.emulator_host)

    try:
        outcome = run_live(cfg, settings, emulator.emulator_host, str(tmp_path / "w.duckdb"),
                           say=print, during=restart)
    finally:
        emulator.stop()
    assert restarted and all(not pid_alive(pid) for pid in pids)
    c = outcome.conservation
    print(c.line())  # shown on failure: what the restart cost
    stats = outcome.publish_stats
    assert stats.retries > 0 or stats.failed > 0  # the outage was seen, not skipped over
    assert stats.published + stats.failed == stats.generated
    # The books balance exactly, whatever the loss: nothing counted twice, nothing unaccounted.
    assert c.unexpected == 0
    assert c.published_valid == c.counted + c.late_dropped + c.lost_valid
    assert c.dead_letters_expected == c.dead_lettered + c.lost_dead_letters
    assert c.lost == sum(max(0, w.expected - w.counted) for w in c.windows) + c.lost_dead_letters
    # The pipeline survived: windows after the restart were counted in full.
    last = max(c.windows, key=lambda w: w.start)
    assert last.counted == last.expected > 0
    assert f"lost={c.lost}" in c.line()
