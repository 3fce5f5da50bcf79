"""``make bench``: every figure against its baseline, measured in the same run on this machine.

    python -m benchmarks.run [--transactions 1000000] [--large 4000000]
                             [--notebook-transactions 20000]
                             [--skip replay,elementwise,startup,simulator,streaming,notebook,
                                     anomaly]
                             [--output benchmarks/README.md]
                             [--streaming-seconds 60] [--streaming-rates 1000,3000]

Replay ratios are speed-ups, pandas' wall time ÷ txpipe's (above 1: txpipe is faster).

Prints the table and writes it (with the machine, the load and the commands) into
``--output`` between its ``make bench`` markers; rows of skipped sections stay from the earlier
run, marked so.
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

from benchmarks import data, elementwise, foreign, replay, startup
from benchmarks.measure import run

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"replay": 1.5, "other_windows": 1.0, "elementwise_us": 50.0, "simulator": 30_000,
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
#: unsorted over 24 h) with 5 % re-sends and 1 % bad lines.
def replay_inputs(workdir: Path, transactions: int) -> list[tuple[str, Path]]:
    return [
        ("foreign, 5 % re-sends, 1 % bad", foreign.write(
            workdir / f"foreign-dirty-{transactions}.jsonl", transactions, duplicates=0.05,
            bad=0.01)),
        ("simulator", data.replay_file(workdir / f"replay-{transactions}.jsonl", transactions)),
    ]


def _measured(m, lines: int) -> str:
    return (f"{m.wall_seconds:.1f} s wall, {m.cpu_seconds:.1f} s CPU "
            f"({m.cpu_seconds / lines * 1e6:.1f} µs/line), peak {mib(m.peak_rss_bytes)}")


def _replay_row(figure: str, ours, base, base_name: str, target: float | None, command: str,
                memory: bool = True) -> dict:
    lines = ours.counts.get("read", 0)
    m, b = ours.measured, base.measured
    speedup = b.wall_seconds / m.wall_seconds
    met = None if target is None else (
        speedup >= target and (not memory or m.peak_rss_bytes <= b.peak_rss_bytes))
    return {
        "figure": figure,
        "value": _measured(m, lines),
        "baseline": f"{base_name}: {_measured(b, lines)}; counted {base.counts.get('unique')}"
                    f" of txpipe's {ours.counts.get('unique')}",
        "ratio": speedup,
        "target": "—" if target is None else (
            f"{base_name} ÷ txpipe ≥ {target:g}" + (", peak below it" if memory else "")),
        "met": met,
        "command": command,
    }


def bench_replay(workdir: Path, sizes: list[int]) -> list[dict]:
    rows = []
    command = ("python -m txpipe run --source file --input FILE --sink jsonl --output OUT "
               "--window-size 30")
    for transactions in sizes:
        for name, path in replay_inputs(workdir, transactions):
            if name == "simulator" and transactions != sizes[0]:
                continue  # the simulator's file at the first size only
            ours = replay.txpipe_replay(path, workdir)
            bases = {script: replay.pandas_replay(path, workdir, script)
                     for script in replay.BASELINES}
            problems = replay.disagreements(ours, bases["baseline_pandas"])
            if problems:
                raise SystemExit(f"{name}: txpipe and pandas disagree: " + "; ".join(problems[:5]))
            lines = ours.counts.get("read", 0)
            for script, label in replay.BASELINES.items():
                target = TARGETS["replay"] if script == "plain_pandas" else None
                rows.append(_replay_row(
                    f"Replay {lines:,} lines, {name} → 30 s window stats, vs {label}", ours,
                    bases[script], label, target,
                    f"{command}; python -m benchmarks.{script} FILE OUT"))
            if name.startswith("foreign") and transactions == sizes[0]:
                rows += _other_windows(path, workdir, bases["plain_pandas"], command)
                rows.append(_two_workers(path, workdir, ours, bases["plain_pandas"], command))
    return rows + _hard_inputs(workdir, command)


#: Lines of the inputs that stress what a day's file does not.
HARD_LINES = 200_000


def _hard_inputs(workdir: Path, command: str) -> list[dict]:
    """A producer whose every line breaks the contract (ten kinds, every one a dead letter),
    and a sparse one (a year of events: a window, hence a row, per transaction)."""
    rows = []
    for name, path in (
            ("every line bad (10 kinds)", foreign.write(
                workdir / f"foreign-bad-{HARD_LINES}.jsonl", HARD_LINES, bad=1.0)),
            ("over a year (a window per transaction)", foreign.write(
                workdir / f"foreign-year-{HARD_LINES}.jsonl", HARD_LINES, hours=365 * 24))):
        ours = replay.txpipe_replay(path, workdir)
        problems = replay.disagreements(ours, replay.pandas_replay(path, workdir))
        if problems:
            raise SystemExit(f"{name}: txpipe and pandas disagree: " + "; ".join(problems[:5]))
        rows.append(_replay_row(f"Replay {HARD_LINES:,} lines, foreign, {name}", ours,
                                replay.pandas_replay(path, workdir, "plain_pandas"),
                                "plain pandas script", None,
                                f"{command}; python -m benchmarks.plain_pandas FILE OUT"))
    return rows


def _other_windows(path: Path, workdir: Path, base, command: str) -> list[dict]:
    """Sliding and session windows against the plain script's fixed-window time."""
    rows = []
    for kind, flags in (("sliding 60 s every 30 s", ["--window-type", "sliding",
                                                    "--window-size", "60",
                                                    "--window-period", "30"]),
                        ("sessions, 60 s gap", ["--window-type", "session"])):
        ours = replay.txpipe_replay(path, workdir, flags, name="txpipe-other")
        rows.append(_replay_row(f"Replay {ours.counts.get('read', 0):,} lines, foreign, {kind} "
                                "(plain pandas: fixed 30 s)", ours, base, "plain pandas script",
                                TARGETS["other_windows"],
                                f"{command.replace(' --window-size 30', '')} {' '.join(flags)}",
                                memory=False))
    return rows


def _two_workers(path: Path, workdir: Path, one, base, command: str) -> dict:
    """The same replay on Beam's own way to a second core, two SDK worker processes (each
    imports Beam; every chunk crosses gRPC to the runner and back): checked against the
    one-process run, shown beside the plain script."""
    ours = replay.txpipe_replay(path, workdir, replay.MULTI_PROCESS, name="txpipe-two")
    if (ours.windows, ours.counts) != (one.windows, one.counts):
        raise SystemExit(f"two SDK workers and one process disagree: {ours.counts} vs "
                         f"{one.counts}")
    lines = ours.counts.get("read", 0)
    row = _replay_row(f"Replay {lines:,} lines, foreign, 30 s windows, two SDK worker "
                      "processes (one per core)", ours, base, "plain pandas script", None,
                      f"{command} {' '.join(replay.MULTI_PROCESS)}")
    row["baseline"] += f" (one process: {one.measured.wall_seconds:.1f} s wall)"
    return row


def bench_startup(workdir: Path) -> list[dict]:
    """Start-up (benchmarks/startup.py, median of 5 fresh processes each): `--help`, a refused
    flag value and a 10-line replay beside `import apache_beam` alone; and how much of txpipe
    the replay imports."""
    measured = {what: (wall, cpu) for what, wall, cpu in startup.startup(5)}
    beam_wall, beam_cpu = measured.pop("import apache_beam")
    targets = {"run --help": (1.5, False), "run --route nonsense (refused)": (1.5, False),
               "10-line replay": (1.0, True)}
    rows = []
    for what, (wall, cpu) in measured.items():
        target, after_beam = targets[what]
        limit = beam_wall + target if after_beam else target
        rows.append({"figure": f"Start-up: {what} (median of 5)",
                     "value": f"{wall:.2f} s wall, {cpu:.2f} s CPU",
                     "baseline": f"`import apache_beam` alone: {beam_wall:.2f} s wall, "
                                 f"{beam_cpu:.2f} s CPU",
                     "ratio": None,
                     "target": (f"≤ import apache_beam + {target:g} s" if after_beam
                                else f"≤ {target:g} s"),
                     "met": wall <= limit, "command": "python -m benchmarks.startup"})
    modules = startup.replay_modules()
    rows.append({"figure": "Start-up: txpipe modules a 10-line replay imports",
                 "value": f"{len(modules)} modules, {sum(modules.values()):,} lines",
                 "baseline": "", "ratio": None, "target": "—", "met": None,
                 "command": "python -m benchmarks.startup --modules"})
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
        if "line" in r:  # a row kept from an earlier run
            lines.append(r["line"])
            continue
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—"
        met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['figure']} | {r['value']} | {r['baseline']} | {ratio} | "
                     f"{r['target']} | {met} |")
    return "\n".join(lines)


#: Sections of the table, by the start of their rows' figure.
SECTIONS = {"replay": "Replay", "elementwise": "Element-wise", "startup": "Start-up",
            "simulator": "Simulator", "streaming": "Local streaming", "notebook": "Notebook",
            "anomaly": "Anomaly"}
BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"


def earlier_rows(page: str, skipped: set[str]) -> list[dict]:
    """The rows of skipped sections in the page's current table, marked as earlier."""
    if BEGIN not in page:
        return []
    prefixes = tuple(SECTIONS[name] for name in skipped if name in SECTIONS)
    kept = []
    for line in page.split(BEGIN, 1)[1].split(END, 1)[0].splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and cells[0][2:].lstrip("*").startswith(prefixes or ("\0",)):
            figure = cells[0][2:].removesuffix(" *(earlier run)*")
            kept.append({"line": " | ".join([f"| {figure} *(earlier run)*", *cells[1:]])})
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--large", type=int, default=4_000_000,
                        help="a second, larger replay size (0: none)")
    parser.add_argument("--notebook-transactions", type=int, default=20_000)
    parser.add_argument("--skip", default="", help="comma-separated: " + ",".join(SECTIONS))
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "txpipe-bench"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "README.md"),
                        help="the page whose table this run replaces")
    parser.add_argument("--streaming-seconds", type=float,
                        default=float(os.environ.get("DEMO_SECONDS") or 60),
                        help="publishing time of each local streaming run (default 60)")
    parser.add_argument("--streaming-rates", default=os.environ.get("DEMO_RATE", ""),
                        help="comma-separated DEMO_RATEs to try instead of searching")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    load_before = os.getloadavg()
    rows: list[dict] = []
    notes = []
    if "replay" not in skip:
        rows += bench_replay(workdir, [n for n in (args.transactions, args.large) if n])
    if "elementwise" not in skip:
        rows += bench_elementwise(workdir)
    if "startup" not in skip:
        rows += bench_startup(workdir)
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
    load_after = os.getloadavg()

    page_path = Path(args.output)
    page = page_path.read_text(encoding="utf-8") if page_path.exists() else ""
    rows += earlier_rows(page, skip)
    commands = "\n".join(f"- {r['figure']}: `{r['command']}`" for r in rows if "command" in r)
    body = (f"Machine: {machine()}. Load average (1 min) {load_before[0]:.1f} at the start, "
            f"{load_after[0]:.1f} at the end: other work on the machine slows wall times, "
            f"the CPU seconds less.\n\n{table(rows)}\n\n"
            f"CPU is user + system time of the whole process tree (imports and Beam's start "
            f"included); µs/line divides it by the input lines; peak memory is the highest RSS "
            f"sum over the process tree, sampled every 50 ms. Ratios are the baseline's wall "
            f"time ÷ txpipe's, from this run.\n\nCommands of this run:\n\n{commands}\n")
    if notes:
        body += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    if BEGIN in page:
        head, rest = page.split(BEGIN, 1)
        page = f"{head}{BEGIN}\n{body}{END}{rest.split(END, 1)[1] if END in rest else ''}"
    else:
        page = f"{page}\n{BEGIN}\n{body}{END}\n"
    page_path.write_text(page, encoding="utf-8")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
