"""``python -m txpipe demo`` as a new user runs it: what it prints, writes and exits with."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import duckdb
import pytest

pytestmark = pytest.mark.subprocess  # commands run as a user runs them


def demo(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("PUBSUB_", "BIGQUERY_", "DEMO_", "WINDOW_", "ALLOWED_"))}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "txpipe", "demo", *args], cwd=tmp_path,
                          env=clean, capture_output=True, text=True, timeout=300)


def test_without_the_emulator_the_same_pipeline_runs_in_process(tmp_path):
    bin_dir = tmp_path / "bin"  # no gcloud, no java on PATH
    bin_dir.mkdir()
    result = demo(tmp_path, "--seed", "3", PATH=str(bin_dir), DEMO_SECONDS="12", DEMO_RATE="40",
                  WINDOW_SIZE_SECONDS="5", ALLOWED_LATENESS_SECONDS="10")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "gcloud components install pubsub-emulator" in out
    assert "Running without Pub/Sub: the same pipeline, with the simulator in-process." in out
    line = re.search(r"^CONSERVATION published_valid=(\d+) counted=(\d+) dead_lettered=(\d+) "
                     r"duplicates_dropped=(\d+) late_dropped=(\d+) lost=(\d+)$", out, re.M)
    assert line, out
    valid, counted, dead, _dups, late, lost = map(int, line.groups())
    assert lost == 0 and valid == counted + late and valid > 300

    local = tmp_path / ".local"
    assert (local / "windows.png").stat().st_size > 10_000
    con = duckdb.connect(str(local / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == dead
        windows = con.execute(
            "SELECT sum(n) FROM (SELECT max_by(total_transactions, pane_index) AS n "
            "FROM hourly_sales_aggregation GROUP BY window_start_time)").fetchone()[0]
    finally:
        con.close()
    assert windows == counted
    assert "✓" in out and "✗" not in out


def test_bad_settings_are_one_line_exit_2(tmp_path):
    result = demo(tmp_path, DEMO_RATE="fast")
    assert result.returncode == 2
    assert result.stderr.strip() == "txpipe demo: DEMO_RATE must be a number (got 'fast')"
    result = demo(tmp_path, ALLOWED_LATENESS_SECONDS="2")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "ALLOWED_LATENESS_SECONDS must be >= 8" in result.stderr
