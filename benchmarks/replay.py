"""The replay figures: ``python -m txpipe run --source file --sink jsonl`` beside what a user
would run instead on the same file — the strict pandas baseline (txpipe's contract in pandas),
a plain pandas script and DuckDB SQL — each in a fresh process, and a check that txpipe and the
strict baseline computed the same windows (so that comparison is between equal work)."""

from __future__ import annotations

import glob
import json
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from benchmarks.measure import Measured, run

#: Beam flags of the multi-process variant (two workers, one per core here).
MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


@dataclass(frozen=True)
class Outcome:
    measured: Measured
    counts: dict[str, int]
    windows: dict[str, dict]  # window start (RFC 3339) -> count / sum / min / max


def txpipe_replay(input_path: Path, workdir: Path, beam_args: list[str] | None = None,
                  name: str = "txpipe") -> Outcome:
    out = workdir / name
    for old in glob.glob(f"{out}*"):
        Path(old).unlink()
    command = [sys.executable, "-m", "txpipe", "run", "--source", "file",
               "--input", str(input_path), "--sink", "jsonl", "--output", str(out),
               "--window-size", "30", *(beam_args or [])]
    measured = run(command, env={"LOG_LEVEL": "WARNING"}).check()
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", measured.stdout)}
    windows = {}
    for path in sorted(glob.glob(f"{out}-*-of-*[0-9].jsonl")):  # PREFIX-<run id>-NNNNN-of-NNNNN
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                windows[row["window_start_time"]] = {
                    "count": row["total_transactions"],
                    "sum": Decimal(row["total_amount_sum"]),
                    "min": Decimal(row["min_amount"]), "max": Decimal(row["max_amount"])}
    return Outcome(measured, counts, windows)


#: The scripts a replay is compared with: module -> what it is.
BASELINES = {
    "baseline_pandas": "strict pandas (txpipe's contract)",
    "plain_pandas": "plain pandas script",
    "duckdb_sql": "DuckDB SQL",
}


def pandas_replay(input_path: Path, workdir: Path, script: str = "baseline_pandas") -> Outcome:
    """One of :data:`BASELINES` on the file, 30 s fixed windows."""
    out = workdir / f"{script}.jsonl"
    command = [sys.executable, "-m", f"benchmarks.{script}", str(input_path), str(out),
               "--window-size", "30"]
    measured = run(command).check()
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", measured.stdout)}
    windows = {}
    with open(out, encoding="utf-8") as f:
        for line in filter(str.strip, f):  # pandas writes an empty line for no windows
            row = json.loads(line, parse_float=Decimal)
            windows[row["window_start_time"]] = {
                "count": int(row["count"]), "sum": row["sum"],
                "min": row["min"], "max": row["max"]}
    return Outcome(measured, counts, windows)


def disagreements(txpipe: Outcome, pandas: Outcome) -> list[str]:
    """Where the two differ: counts exactly; money to the float's precision (pandas sums in
    float64, txpipe exactly — the sums agree to the cent, min / max exactly)."""
    problems = []
    if set(txpipe.windows) != set(pandas.windows):
        problems.append(f"windows differ: {sorted(set(txpipe.windows) ^ set(pandas.windows))[:5]}")
    for start in sorted(set(txpipe.windows) & set(pandas.windows)):
        ours, theirs = txpipe.windows[start], pandas.windows[start]
        if ours["count"] != theirs["count"]:
            problems.append(f"{start}: count {ours['count']} != {theirs['count']}")
        if abs(ours["sum"] - theirs["sum"]) > Decimal("0.005"):
            problems.append(f"{start}: sum {ours['sum']} != {theirs['sum']}")
        for key in ("min", "max"):  # a float's shortest text is the amount as published
            if ours[key] != Decimal(repr(float(theirs[key]))):
                problems.append(f"{start}: {key} {ours[key]} != {theirs[key]}")
    c, p = txpipe.counts, pandas.counts
    if (c.get("read"), c.get("valid"), c.get("unique"), c.get("dead_lettered")) != (
            p.get("read"), p.get("valid"), p.get("unique"), p.get("dead")):
        problems.append(f"counters differ: txpipe {c} pandas {p}")
    return problems
