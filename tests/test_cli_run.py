"""``python -m txpipe run --source file`` as a user runs it (a subprocess in a fresh directory):
JSONL and DuckDB sinks hold the recounted windows and the dead letters; flags beat ``.env``
and the environment; every usage mistake is one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from recount import (
    AWKWARD_AMOUNTS,
    BASE,
    Tx,
    assert_windows_match,
    bad_records,
    expected_average,
    expected_payload,
    spell_message,
)

from txpipe.config import Settings

pytestmark = pytest.mark.subprocess  # commands run as a user runs them

VARIABLES = {name.upper() for name in Settings.model_fields}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
    env.update(extra)
    return env


def txpipe_run(args: list[str], cwd, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "txpipe", "run", *args], cwd=cwd,
                            env=clean_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def summary_counts(stdout: str) -> dict[str, int]:
    last = stdout.strip().splitlines()[-1]
    return {k: int(v) if v.isdigit() else v
            for k, v in (part.split("=") for part in last.split())}


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """One small input file, replayed into JSONL (with a breakdown) and into DuckDB at once."""
    work = tmp_path_factory.mktemp("cli")
    rng = random.Random(11)
    txs, categories = [], {}
    for i in range(300):
        tx = Tx(f"c{i}", Decimal(rng.choice(AWKWARD_AMOUNTS)),
                BASE + timedelta(microseconds=rng.randrange(0, 120_000_000)))
        txs.append(tx)
    lines = []
    for tx in txs:
        raw = spell_message(tx, rng).replace(b'"category"', b'"ignored"')
        categories[tx.transaction_id] = rng.choice(["food", "travel", None])
        if categories[tx.transaction_id]:
            raw = raw[:-1] + f', "category": "{categories[tx.transaction_id]}"}}'.encode()
        lines.append(raw)
    resent = [lines[i] for i in range(0, 300, 7)]
    bad = bad_records()
    all_lines = lines + resent + [raw for raw, _ in bad]
    rng.shuffle(all_lines)
    (work / "data").mkdir()
    half = len(all_lines) // 2  # two files, read through one glob
    (work / "data" / "part-1.txt").write_bytes(b"\n".join(all_lines[:half]) + b"\n")
    (work / "data" / "part-2.txt").write_bytes(b"\n".join(all_lines[half:]) + b"\n")
    (work / ".env").write_text("WINDOW_SIZE_SECONDS=20\nBIGQUERY_TABLE_ID=from_dotenv\n")

    jsonl = txpipe_run(["--source", "file", "--input", "data/part-*.txt", "--sink", "jsonl",
                        "--output", "out/windows", "--dead-letter-output", "out/dead",
                        "--window-size", "10", "--breakdown", "category"], work)
    duck = txpipe_run(["--source", "file", "--input", "data/part-*.txt", "--sink", "duckdb",
                       "--output", "warehouse/local.duckdb"], work,
                      BIGQUERY_TABLE_ID="window_stats",  # the environment beats .env
                      LOG_LEVEL="WARNING")
    streaming = txpipe_run(["--source", "file", "--input", "data/part-*.txt", "--sink", "jsonl",
                            "--output", "stream/windows", "--dead-letter-output", "stream/dead",
                            "--streaming"], work)  # a Beam option, passed through
    return {"work": work, "txs": txs, "categories": categories, "resent": len(resent),
            "bad": bad, "jsonl": finish(jsonl), "duckdb": finish(duck),
            "streaming": finish(streaming)}


def _read_jsonl(pattern: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def test_jsonl_run_succeeds_and_reports_its_counts(replay):
    code, out, err = replay["jsonl"]
    assert code == 0, err
    assert "Traceback" not in err
    counts = summary_counts(out)
    n, resent, bad = len(replay["txs"]), replay["resent"], len(replay["bad"])
    assert counts["read"] == n + resent + bad
    assert (counts["valid"], counts["unique"], counts["duplicates_dropped"]) == (
        n + resent, n, resent)
    assert counts["dead_lettered"] == bad
    for reason, k in Counter(reason for _, reason in replay["bad"]).items():
        assert counts[reason] == k


def test_logs_are_json_lines_without_per_element_chatter(replay):
    _, _, err = replay["jsonl"]
    entries = [json.loads(line) for line in err.splitlines()]  # stderr is not a terminal
    assert entries and all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["level"] == "INFO" and e["logger"] == "txpipe.run" for e in entries)
    assert len(entries) < 10  # hundreds of messages, a handful of lines
    _, _, quiet = replay["duckdb"]  # LOG_LEVEL=WARNING
    assert all(json.loads(line)["level"] != "INFO" for line in quiet.splitlines())


def test_jsonl_windows_equal_the_recount_with_the_flag_window_size(replay):
    work = replay["work"]
    rows = [r for r in _read_jsonl(str(work / "out" / "windows-*-of-*.jsonl"))
            if "dimension" not in r]
    assert rows, os.listdir(work / "out")
    for row in rows:  # the JSON form: RFC 3339 UTC text, money as exact decimal strings
        assert row["window_start_time"].endswith("Z")
        assert isinstance(row["total_amount_sum"], str)
    assert_windows_match(rows, replay["txs"], 10)  # --window-size 10 beat .env's 20


def test_jsonl_breakdown_equals_the_recount_per_category(replay):
    work = replay["work"]
    rows = _read_jsonl(str(work / "out" / "windows-by-category-*.jsonl"))
    expected = defaultdict(list)
    for tx in replay["txs"]:
        start = BASE + timedelta(seconds=10 * ((tx.event_time - BASE) // timedelta(seconds=10)))
        expected[(start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                  replay["categories"][tx.transaction_id] or "")].append(tx.amount)
    got = {(r["window_start_time"], r["dimension_value"]): r for r in rows}
    assert len(got) == len(rows) == len(expected)
    for key, amounts in expected.items():
        row = got[key]
        total = sum(amounts, Decimal(0))
        assert row["dimension"] == "category"
        assert (row["total_transactions"], Decimal(row["total_amount_sum"])) == (
            len(amounts), total)
        assert Decimal(row["avg_transaction_amount"]) == expected_average(total, len(amounts))


def test_jsonl_dead_letters_are_the_bad_records(replay):
    rows = _read_jsonl(str(replay["work"] / "out" / "dead-*.jsonl"))
    assert Counter((r["reason"], r["payload"]) for r in rows) == Counter(
        (reason, expected_payload(raw)) for raw, reason in replay["bad"])
    assert all(r["seen_at"].endswith("Z") and r["message"] for r in rows)


def test_a_streaming_replay_gives_the_same_windows(replay):
    """``--streaming`` runs the streaming DirectRunner; a file's watermark ends at infinity,
    so every window fires once, on time, and the per-minute JSONL files hold the recount."""
    code, out, err = replay["streaming"]
    assert code == 0, err
    # Its counters are exact too (the lab makes the streaming DirectRunner commit them all).
    counts = summary_counts(out)
    assert {k: counts[k] for k in ("read", "valid", "unique", "duplicates_dropped",
                                   "dead_lettered")} == {
        "read": len(replay["txs"]) + replay["resent"] + len(replay["bad"]),
        "valid": len(replay["txs"]) + replay["resent"], "unique": len(replay["txs"]),
        "duplicates_dropped": replay["resent"], "dead_lettered": len(replay["bad"])}
    work = replay["work"]
    rows = _read_jsonl(str(work / "stream" / "windows-*.jsonl"))
    assert_windows_match(rows, replay["txs"], 20)  # WINDOW_SIZE_SECONDS=20 from .env
    dead = _read_jsonl(str(work / "stream" / "dead-*.jsonl"))
    assert Counter((r["reason"], r["payload"]) for r in dead) == Counter(
        (reason, expected_payload(raw)) for raw, reason in replay["bad"])


def test_duckdb_run_writes_windows_and_dead_letters(replay):
    import duckdb

    code, out, err = replay["duckdb"]
    assert code == 0, err
    path = replay["work"] / "warehouse" / "local.duckdb"
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone='UTC'")
        tables = {name for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables()").fetchall()}
        assert tables == {"window_stats", "dead_letters"}  # BIGQUERY_TABLE_ID from the env
        views = {name for (name,) in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert views == {"window_totals", "dead_letters_per_minute"}
        cursor = con.execute("SELECT * FROM window_stats")  # Decimals, not pandas floats
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        dead = con.execute("SELECT reason, payload FROM dead_letters").fetchall()
        types = dict(con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'window_stats'").fetchall())
    finally:
        con.close()
    assert types["total_amount_sum"] == "DECIMAL(38,9)"
    assert types["window_start_time"] == "TIMESTAMP WITH TIME ZONE"
    assert all(isinstance(r["total_amount_sum"], Decimal) for r in rows)
    assert_windows_match(rows, replay["txs"], 20)  # WINDOW_SIZE_SECONDS=20 from .env
    assert Counter(dead) == Counter(
        (reason, expected_payload(raw)) for raw, reason in replay["bad"])


# --- usage mistakes: one line, exit 2, no traceback, nothing written --------------------

GOOD = ["--source", "file", "--input", "in.txt", "--sink", "jsonl", "--output", "out/w"]
MISTAKES = {
    "glob matches nothing": (["--source", "file", "--input", "nothing-*.txt", "--sink", "jsonl",
                              "--output", "out/w"], {}, "matches no file"),
    "missing --input": (["--source", "file", "--sink", "jsonl", "--output", "out/w"], {},
                        "--input"),
    "input is a directory": (["--source", "file", "--input", "out", "--sink", "jsonl",
                              "--output", "out/w"], {}, "matches the directory"),
    "output under a file": (GOOD[:-1] + ["a-file/w"], {}, "not writable"),
    "output is a directory": (GOOD[:-1] + ["out"], {}, "directory"),
    "dead-letter output under a file": (GOOD + ["--dead-letter-output", "a-file/d"], {},
                                        "not writable"),
    "duckdb file under a file": (["--source", "file", "--input", "in.txt", "--sink", "duckdb",
                                  "--output", "a-file/x.duckdb"], {}, "--output"),
    "jsonl without --output": (["--source", "file", "--input", "in.txt", "--sink", "jsonl"], {},
                               "--output"),
    "unknown flag": (GOOD + ["--no-such-flag"], {}, "--no-such-flag"),
    "bad flag value": (GOOD + ["--window-size", "abc"], {}, "--window-size"),
    "bad flag choice": (GOOD + ["--window-type", "hopping"], {}, "--window-type"),
    "negative window": (GOOD + ["--window-size", "-5"], {}, "WINDOW_SIZE_SECONDS"),
    "bad Beam option value": (GOOD + ["--direct_num_workers", "abc"], {}, "direct_num_workers"),
    "unknown runner": (GOOD + ["--runner", "NoSuchRunner"], {}, "NoSuchRunner"),
    "stray argument": (GOOD + ["stray"], {}, "stray"),
    "bad env value": (GOOD, {"WINDOW_SIZE_SECONDS": "thirty"}, "WINDOW_SIZE_SECONDS"),
    "bad env choice": (GOOD, {"WINDOW_TYPE": "hopping"}, "WINDOW_TYPE"),
    "bad breakdown": (GOOD + ["--breakdown", "amount"], {}, "--breakdown"),
    "bad sink": (GOOD[:-4] + ["--sink", "parquet"], {}, "--sink"),
    "bigquery sink with --output": (GOOD[:-4] + ["--sink", "bigquery", "--output", "out/w"], {},
                                    "BIGQUERY_TABLE_ID"),
    "malformed subscription": (["--source", "pubsub", "--subscription", "nonsense", "--sink",
                                "jsonl", "--output", "out/w"], {}, "--subscription"),
    "malformed dead-letter topic": (["--source", "pubsub", "--subscription",
                                     "projects/p/subscriptions/s", "--dead-letter-topic",
                                     "nonsense", "--sink", "jsonl", "--output", "out/w"], {},
                                    "--dead-letter-topic"),
    "--input with pubsub": (["--source", "pubsub", "--input", "in.txt", "--sink", "jsonl",
                             "--output", "out/w"], {}, "--input"),
    "dead-letter topic in batch": (GOOD + ["--dead-letter-topic", "projects/p/topics/t"], {},
                                   "--dead-letter-topic"),
}


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory):
    """Every mistake, each in a directory of its own, all started at once."""
    procs = {}
    for name, (args, env, _) in MISTAKES.items():
        work = tmp_path_factory.mktemp("mistake")
        (work / "in.txt").write_text(
            '{"transaction_id": "a", "amount": 1, "timestamp": "2026-11-27T10:00:00Z"}\n')
        (work / "a-file").write_text("a file, not a directory\n")
        (work / "out").mkdir()
        procs[name] = (work, txpipe_run(args, work, **env))
    return {name: (work, *finish(proc)) for name, (work, proc) in procs.items()}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistake_is_one_line_and_exit_2(mistakes, name):
    work, code, out, err = mistakes[name]
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("txpipe run: error: ")
    assert MISTAKES[name][2] in lines[0]
    assert "Traceback" not in err
    assert out == ""
    assert os.listdir(work / "out") == []  # nothing was written


def test_the_event_time_attribute_is_a_setting_and_can_be_turned_off(tmp_path, monkeypatch):
    """Publishers whose ``event_ts`` cannot be trusted: read by publish time instead."""
    from txpipe.cli import plan

    monkeypatch.chdir(tmp_path)
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    base = ["--sink", "duckdb", "--output", "w.duckdb"]
    assert plan(base).source.timestamp_attribute == "event_ts"
    assert plan([*base, "--timestamp-attribute", "ts_ms"]).source.timestamp_attribute == "ts_ms"
    assert plan([*base, "--timestamp-attribute", ""]).source.timestamp_attribute is None
    monkeypatch.setenv("PUBSUB_TIMESTAMP_ATTRIBUTE", "")
    assert plan(base).source.timestamp_attribute is None
