"""Detection quality: precision and recall of ``run --anomalies`` against the simulator's truth.

    python -m benchmarks.anomaly [--hours 4] [--rate 20] [--seed 7] [--breakdown FIELD]
                                 [--spike-dimension FIELD] [--json]

A seeded stream with the default anomaly scenario (a volume spike, an amount burst and a
drop-out in turn, one window in twenty after a 10-minute warm-up) is written to a file with its
truth manifest, replayed through ``python -m txpipe run --source file --sink jsonl
--anomalies``, and the anomaly rows are scored with ``Truth.score_anomalies``.

The baseline, on the very window rows the pipeline wrote, is the seed system's "spike
detection with a moving average": a point is an anomaly when it is more than three standard
deviations from the mean of the same series' previous windows (the same history and warm-up as
the detector's defaults), in pandas.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.measure import Measured, run

START = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
HISTORY, WARMUP, SIGMAS = 120, 20, 3.0


def simulate(path: Path, hours: float, rate: float, seed: int, spike_dimension: str):
    from simulator import SimulationConfig, TruthBuilder, write

    cfg = SimulationConfig(seed=seed, rate=rate, duration=hours * 3600, start=START,
                           duplicate_rate=0.05, malformed_rate=0.02, late_rate=0.01,
                           jitter_seconds=2.0, anomalies=("default",),
                           anomaly_dimension=spike_dimension)
    builder = TruthBuilder(cfg.window_size)
    stats = write(cfg, path, truth=builder)
    return builder.build(stats.config), stats.published


def _rows(pattern: str) -> list[dict]:
    return [json.loads(line) for f in sorted(glob.glob(pattern))
            for line in Path(f).read_text().splitlines()]


def moving_average_baseline(windows: list[dict], by_dimension: list[dict]) -> list[dict]:
    """The seed's rule on the pipeline's window rows: |x - mean| > 3 sd of the previous
    HISTORY windows of the series, once it has WARMUP of them."""
    import pandas as pd

    frames = [pd.DataFrame(windows).assign(dimension=None, dimension_value=None)]
    if by_dimension:
        frames.append(pd.DataFrame(by_dimension))
    table = pd.concat(frames, ignore_index=True)
    table = table[table["pane_timing"] == "ON_TIME"].sort_values("window_start_time")
    found = []
    for metric in ("total_transactions", "total_amount_sum"):
        table[metric] = table[metric].astype(float)
        groups = table.groupby(["dimension", "dimension_value"], dropna=False, sort=False)
        for (dimension, value), series in groups:
            past = series[metric].shift(1).rolling(HISTORY, min_periods=WARMUP)
            z = (series[metric] - past.mean()).abs() / past.std()
            for start in series.loc[z > SIGMAS, "window_start_time"]:
                found.append({"window_start_time": start, "metric": metric,
                              "dimension": None if pd.isna(dimension) else dimension,
                              "dimension_value": None if pd.isna(value) else value})
    return found


def measure(workdir: Path, hours: float, rate: float, seed: int, breakdown: str | None,
            spike_dimension: str) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{seed}-{hours:g}h-{rate:g}-{breakdown or 'stream'}-{spike_dimension}"
    stream = workdir / f"anomalies-{tag}.jsonl"
    truth, published = simulate(stream, hours, rate, seed, spike_dimension)
    out = workdir / f"anomalies-{tag}-out"
    command = [sys.executable, "-m", "txpipe", "run", "--source", "file", "--input", str(stream),
               "--sink", "jsonl", "--output", str(out / "windows"), "--anomalies"]
    if breakdown:
        command += ["--breakdown", breakdown]
    measured: Measured = run(command).check()
    found = _rows(str(out / "windows-anomalies-*.anomalies.jsonl"))
    windows = _rows(str(out / "windows-*-of-*[0-9].jsonl"))  # PREFIX-<run id>-NNNNN-of-NNNNN
    by_dim = _rows(str(out / f"windows-by-{breakdown}-*.jsonl")) if breakdown else []
    ours = truth.score_anomalies(found)
    base = truth.score_anomalies(moving_average_baseline(windows, by_dim))
    return {
        "messages": published, "hours": hours, "rate": rate, "seed": seed,
        "breakdown": breakdown, "spike_dimension": spike_dimension,
        "seconds": measured.wall_seconds, "rows": len(found),
        "precision": ours.precision, "recall": ours.recall, "summary": ours.summary(),
        "found": ours.found, "injected": ours.injected, "by_scenario": ours.by_scenario,
        "baseline_precision": base.precision, "baseline_recall": base.recall,
        "baseline_summary": base.summary(),
        "command": " ".join(["python -m txpipe run --source file --input FILE --sink jsonl "
                             "--output OUT --anomalies"] + ([f"--breakdown {breakdown}"]
                                                            if breakdown else [])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.anomaly")
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--breakdown", default=None)
    parser.add_argument("--spike-dimension", default="category")
    parser.add_argument("--workdir", default="/tmp/txpipe-bench")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(Path(args.workdir), args.hours, args.rate, args.seed, args.breakdown,
                     args.spike_dimension)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"txpipe:   {result['summary']}\nbaseline: {result['baseline_summary']}\n"
              f"({result['messages']:,} messages, replay {result['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
