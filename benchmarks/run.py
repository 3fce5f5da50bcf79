"""``make bench``: every figure against its baseline, measured in the same run on this machine.

    python -m benchmarks.run [--transactions 1000000] [--notebook-transactions 20000]
                             [--skip replay,elementwise,simulator,streaming,notebook]
                             [--output benchmarks/results.md]
                             [--streaming-seconds 60] [--streaming-rates 1000,3000]

Replay ratios are speed-ups, pandas' wall time ÷ txpipe's (above 1: txpipe is faster).

Prints the table and writes it (with the machine and the commands) to ``--output``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

from benchmarks import data, elementwise, foreign, replay
from benchmarks.measure import run

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"replay": 1.0, "other_windows": 0.5, "elementwise_us": 50.0, "simulator": 30_000,
           "streaming": 1_000, "notebook": 3.0, "anomaly": 0.9}


def machine() -> str:
    import apache_beam

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        import psutil

        memory = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()}, Python "
            f"{platform.python_version()}, apache-beam {apache_beam.__version__}")


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


#: The replay inputs: the simulator's file, and a foreign producer's (json.dumps spacing,
#: isoformat() microseconds and offsets, int / exponent amounts, fields in any order,
#: unsorted over 24 h), clean and with 5 % re-sends and 1 % bad lines.
def replay_inputs(workdir: Path, transactions: int) -> list[tuple[str, Path]]:
    return [
        ("simulator", data.replay_file(workdir / f"replay-{transactions}.jsonl", transactions)),
        ("foreign", foreign.write(workdir / f"foreign-{transactions}.jsonl", transactions)),
        ("foreign + 5 % re-sends + 1 % bad", foreign.write(
            workdir / f"foreign-dirty-{transactions}.jsonl", transactions, duplicates=0.05,
            bad=0.01)),
    ]


def _replay_row(figure: str, ours, base, target: float, command: str,
                memory: bool = True) -> dict:
    lines = ours.counts.get("read", 0)
    m, b = ours.measured, base.measured
    speedup = b.wall_seconds / m.wall_seconds
    met = speedup >= target and (not memory or m.peak_rss_bytes <= b.peak_rss_bytes)
    return {
        "figure": figure,
        "value": f"{m.wall_seconds:.1f} s, {m.cpu_seconds / lines * 1e6:.1f} µs CPU/tx, "
                 f"peak {mib(m.peak_rss_bytes)}",
        "baseline": f"pandas: {b.wall_seconds:.1f} s, {b.cpu_seconds / lines * 1e6:.1f} µs "
                    f"CPU/tx, peak {mib(b.peak_rss_bytes)}",
        "ratio": speedup,
        "target": f"pandas ÷ txpipe ≥ {target:g}" + (", peak ≤ pandas'" if memory else ""),
        "met": met,
        "command": command,
    }


def bench_replay(workdir: Path, transactions: int) -> list[dict]:
    rows = []
    command = ("python -m txpipe run --source file --input FILE --sink jsonl --output OUT "
               "--window-size 30")
    foreign_base = None
    for name, path in replay_inputs(workdir, transactions):
        base = replay.pandas_replay(path, workdir)
        ours = replay.txpipe_replay(path, workdir)
        problems = replay.disagreements(ours, base)
        if problems:
            raise SystemExit(f"{name}: txpipe and pandas disagree: " + "; ".join(problems[:5]))
        rows.append(_replay_row(f"Replay {ours.counts.get('read', 0):,} lines, {name} → window "
                                "stats", ours, base, TARGETS["replay"], command))
        if name == "foreign":
            foreign_base = (path, base)
    if foreign_base:  # sliding and session windows against pandas' fixed-window time
        path, base = foreign_base
        for kind, flags in (("sliding 30 s every 10 s", ["--window-type", "sliding",
                                                        "--window-period", "10"]),
                            ("sessions, 60 s gap", ["--window-type", "session"])):
            ours = replay.txpipe_replay(path, workdir, flags, name="txpipe-other")
            rows.append(_replay_row(f"Replay {ours.counts.get('read', 0):,} lines, foreign, "
                                    f"{kind} (pandas: fixed 30 s)", ours, base,
                                    TARGETS["other_windows"], f"{command} {' '.join(flags)}",
                                    memory=False))
    return rows


def bench_elementwise(workdir: Path) -> list[dict]:
    rows = []
    for name in elementwise.VARIANTS:
        r = elementwise.measure(name, workdir)
        rows.append({
            "figure": f"Element-wise route on the FnApiRunner (Dataflow's SDK harness): {name}",
            "value": f"{r['us_per_tx']:.0f} µs CPU/tx → {r['vcpu_hours_per_million']:.3f} "
                     f"vCPU-h and ${r['usd_per_million']:.4f} per million tx on Dataflow",
            "baseline": f"{r['sizes'][0]:,} vs {r['sizes'][1]:,} lines: {r['cpu_s'][0]:.1f} / "
                        f"{r['cpu_s'][1]:.1f} s CPU",
            "ratio": None,
            "target": f"≤ {TARGETS['elementwise_us']:.0f} µs/tx",
            "met": r["us_per_tx"] <= TARGETS["elementwise_us"],
            "command": f"python -m benchmarks.elementwise --only {name}",
        })
    return rows


def bench_simulator() -> list[dict]:
    script = ROOT / "benchmarks" / "bench_simulator.py"
    if not script.exists():
        return []
    result = run([sys.executable, str(script)], cwd=str(ROOT))
    best = re.search(r"best ([\d,]+) msg/s", result.stdout)
    generation = re.search(r"generation only: ([\d,]+) msg/s", result.stdout)
    if result.returncode or not best:
        return [{"figure": "Simulator → Pub/Sub emulator", "value": "failed",
                 "baseline": (result.stderr.strip().splitlines() or ["no output"])[-1][:80],
                 "ratio": None, "target": f"≥ {TARGETS['simulator']:,} msg/s", "met": False,
                 "command": "python benchmarks/bench_simulator.py"}]
    rate = float(best.group(1).replace(",", ""))
    return [{"figure": "Simulator → Pub/Sub emulator (publish rate)",
             "value": f"{rate:,.0f} msg/s",
             "baseline": f"generation alone: {generation.group(1)} msg/s" if generation else "",
             "ratio": None, "target": f"≥ {TARGETS['simulator']:,} msg/s",
             "met": rate >= TARGETS["simulator"], "command": "python benchmarks/bench_simulator.py"}]


def bench_streaming(seconds: float, rates: list[int] | None) -> list[dict]:
    """The local stack (``python -m txpipe demo``): the highest DEMO_RATE with lost=0 whose read
    kept up, searched (benchmarks/streaming.py) or at the rates given; a row per rate tried."""
    if importlib.util.find_spec("txpipe.lab.demo") is None:
        return []
    from benchmarks import streaming

    def attempt(rate: int) -> streaming.Attempt:
        return streaming.demo(rate, seconds, ROOT)

    attempts = ([attempt(r) for r in rates] if rates else streaming.search(attempt))
    if not any(a.lost is not None for a in attempts):
        return []
    rows = []
    for a in sorted(attempts, key=lambda a: a.rate):
        rows.append({
            "figure": f"Local streaming, simulator → emulator → pipeline → DuckDB, "
                      f"DEMO_RATE={a.rate:,} for {seconds:g} s",
            "value": a.describe(),
            "baseline": "", "ratio": None,
            "target": f"lost=0; caught up ≤ {streaming.KEEP_UP_SECONDS:g} s after publishing",
            "met": a.kept_up,
            "command": f"DEMO_RATE={a.rate} DEMO_SECONDS={seconds:g} python -m txpipe demo"})
    top = streaming.best(attempts)
    rows.append({
        "figure": "Local streaming: highest DEMO_RATE with lost=0 that kept up "
                  + ("(searched)" if not rates else "(of the rates given)"),
        "value": f"{top.rate:,} tx/s" if top else "none",
        "baseline": "wall-clock watermark: lost>0 from 1,500 tx/s; naive read ≈300 msg/s",
        "ratio": None, "target": f"≥ {TARGETS['streaming']:,} tx/s",
        "met": bool(top) and top.rate >= TARGETS["streaming"],
        "command": "python -m benchmarks.run --skip replay,simulator,notebook"})
    return rows


def bench_notebook(workdir: Path, transactions: int) -> list[dict]:
    path = data.replay_file(workdir / f"notebook-{transactions}.jsonl", transactions, rate=100)
    results = {}
    for plan in ("stats", "stepwise"):
        out = run([sys.executable, "-m", "benchmarks.notebook", str(path), "--plan", plan,
                   "--json"], cwd=str(ROOT)).check()
        results[plan] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, base = results["stats"], results["stepwise"]
    if (ours["transactions"], ours["sums"]) != (base["transactions"], base["sums"]):
        raise SystemExit(f"notebook plans disagree: {ours} vs {base}")
    return [{"figure": f"Notebook: ib.collect of window stats over {ours['messages']:,} messages",
             "value": f"{ours['seconds']:.1f} s ({ours['rows']} windows)",
             "baseline": f"element-wise steps: {base['seconds']:.1f} s",
             "ratio": ours["seconds"] / base["seconds"], "target": f"≤ {TARGETS['notebook']:.0f} s",
             "met": ours["seconds"] <= TARGETS["notebook"],
             "command": "python -m benchmarks.notebook FILE --plan stats|stepwise"}]


def bench_anomaly(workdir: Path) -> list[dict]:
    """Precision / recall of ``run --anomalies`` against the simulator's labelled truth
    (benchmarks/anomaly.py): the default scenario at the default settings on three seeds, then
    per category and per merchant."""
    from benchmarks import anomaly

    target = TARGETS["anomaly"]
    runs = [anomaly.measure(workdir, 4, 20, seed, None, "category") for seed in (7, 4, 5)]
    rows = [{
        "figure": "Anomaly detection, default scenario and settings (whole stream, IQR): "
                  "4 h at 20 tx/s, seeds 7 / 4 / 5",
        "value": "precision " + " / ".join(f"{r['precision']:.2f}" for r in runs)
                 + ", recall " + " / ".join(f"{r['recall']:.2f}" for r in runs)
                 + f" ({sum(r['found'] for r in runs)} of {sum(r['injected'] for r in runs)}"
                 + " injected anomalies found)",
        "baseline": "seed's moving-average 3σ rule: precision "
                    + " / ".join(f"{r['baseline_precision']:.2f}" for r in runs) + ", recall "
                    + " / ".join(f"{r['baseline_recall']:.2f}" for r in runs),
        "ratio": None, "target": f"≥ {target} both",
        "met": all(r["precision"] >= target and r["recall"] >= target for r in runs),
        "command": "python -m benchmarks.anomaly --hours 4 --rate 20 --seed 7",
    }]
    for breakdown, spikes in (("category", "category"), ("merchant_id", "merchant_id")):
        r = anomaly.measure(workdir, 4, 20, 7, breakdown, spikes)
        rows.append({
            "figure": f"Anomaly detection per {breakdown} (--breakdown {breakdown}; volume "
                      f"spikes on one {spikes}): 4 h at 20 tx/s, seed 7",
            "value": r["summary"],
            "baseline": f"moving-average 3σ: precision {r['baseline_precision']:.2f}, "
                        f"recall {r['baseline_recall']:.2f}",
            "ratio": None, "target": f"≥ {target} both",
            "met": r["precision"] >= target and r["recall"] >= target,
            "command": f"python -m benchmarks.anomaly --hours 4 --rate 20 --seed 7 "
                       f"--breakdown {breakdown} --spike-dimension {spikes}",
        })
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| figure | txpipe | baseline (same run) | ratio | target | met |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—"
        lines.append(f"| {r['figure']} | {r['value']} | {r['baseline']} | {ratio} | "
                     f"{r['target']} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--notebook-transactions", type=int, default=20_000)
    parser.add_argument("--skip", default="", help="comma-separated: replay,elementwise,"
                        "simulator,streaming,notebook,anomaly")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "txpipe-bench"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results.md"))
    parser.add_argument("--streaming-seconds", type=float,
                        default=float(os.environ.get("DEMO_SECONDS") or 60),
                        help="publishing time of each local streaming run (default 60)")
    parser.add_argument("--streaming-rates", default=os.environ.get("DEMO_RATE", ""),
                        help="comma-separated DEMO_RATEs to try instead of searching")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []
    notes = []
    if "replay" not in skip:
        rows += bench_replay(workdir, args.transactions)
    if "elementwise" not in skip:
        rows += bench_elementwise(workdir)
    if "simulator" not in skip:
        found = bench_simulator()
        rows += found
        if not found:
            notes.append("Simulator: benchmarks/bench_simulator.py is missing, row left out.")
    if "streaming" not in skip:
        rates = [int(r) for r in args.streaming_rates.split(",") if r.strip()]
        found = bench_streaming(args.streaming_seconds, rates or None)
        rows += found
        if not found:
            notes.append("Local streaming: `python -m txpipe demo` printed no CONSERVATION "
                         "line, row left out.")
    if "notebook" not in skip:
        rows += bench_notebook(workdir, args.notebook_transactions)
    if "anomaly" not in skip:
        rows += bench_anomaly(workdir)

    text = table(rows)
    commands = "\n".join(f"- {r['figure']}: `{r['command']}`" for r in rows)
    body = (f"Machine: {machine()}.\n\n{text}\n\n"
            f"CPU µs/tx is user + system time of the whole process (imports and Beam's start "
            f"included) per input line; peak memory is the highest RSS sum over the process "
            f"tree, sampled every 50 ms.\n\nCommands (regenerate all with `make bench`):\n\n"
            f"{commands}\n")
    if notes:
        body += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    Path(args.output).write_text("# Benchmark results\n\n" + body, encoding="utf-8")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
