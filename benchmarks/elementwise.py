"""CPU per transaction of the element-wise route on the FnApiRunner — the SDK harness that
Dataflow's Python workers run — and what it means in Dataflow vCPU-hours and money.

    python -m benchmarks.elementwise [--only NAME,...] [--repeats N]

Each variant runs Read -> TransactionStats(element-wise) -> count in a fresh process, on two
input sizes; the difference of the two processes' CPU time divided by the difference of their
sizes is the marginal cost per transaction (imports, pipeline construction and start-up
cancel out). The input is a foreign producer's file (benchmarks.foreign: unsorted over a day).
On a shared machine the difference is noisy: ``--repeats N`` runs each size N times, in turns,
and takes the median CPU time of each.

Variants:
- ``dataflow``: what the exported streaming job runs — Dedupe only counts, because Dataflow's
  Pub/Sub read drops repeated ``id_label`` values itself (txpipe.dedupe);
- ``dataflow-sliding``: the same with 30 s windows sliding every 10 s;
- ``replay``: what a replay with ``--route element-wise`` runs — a bounded input in a batch
  pipeline dedupes by a shuffle of id buckets (txpipe.dedupe.ShuffleDeduplicated);
- ``per-id-state``: Beam's DeduplicatePerKey (a dedupe horizon longer than Dataflow's 10
  minutes, or a runner without source dedupe), with the harness's state cache as it ships
  (100 MB: every state write is measured by objsize);
- ``per-id-state-no-cache``: the same with the cache off (``--max_cache_memory_usage_mb=0``
  on Dataflow's harness; here the embedded worker's setting).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import foreign

#: Dataflow list prices, us-central1, streaming workers, as published on
#: cloud.google.com/dataflow/pricing (last checked 2025; verify before budgeting).
STREAMING_VCPU_HOUR_USD = 0.069
STREAMING_GB_HOUR_USD = 0.003557
N1_STANDARD_2 = {"vcpus": 2, "memory_gb": 7.5}
PRICES_AS_OF = "2025"

VARIANTS = {
    "dataflow": {"dedupe": "source", "window": "fixed", "sizes": (20_000, 100_000)},
    "dataflow-sliding": {"dedupe": "source", "window": "sliding", "sizes": (20_000, 100_000)},
    "replay": {"dedupe": "replay", "window": "fixed", "sizes": (20_000, 100_000)},
    "per-id-state": {"dedupe": "state", "window": "fixed", "cache_mb": 100,
                     "sizes": (2_000, 6_000)},
    "per-id-state-no-cache": {"dedupe": "state", "window": "fixed", "cache_mb": 0,
                              "sizes": (20_000, 100_000)},
}


def _child(path: str, variant: dict) -> None:
    """Run one pipeline in this process; print its CPU seconds (user + system) as JSON."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers

    from txpipe import batch
    from txpipe.config import Route, WindowType
    from txpipe.dedupe import DropDuplicates, SourceDeduplicated
    from txpipe.dedupe import for_source as dedupe_for_source
    from txpipe.pipeline import TransactionStats
    from txpipe.sources import FileSource
    from txpipe.windowing import WindowSpec

    if "cache_mb" in variant:
        worker_handlers.STATE_CACHE_SIZE_MB = variant["cache_mb"]
    spec = (WindowSpec(kind=WindowType.SLIDING, size_seconds=30, period_seconds=10)
            if variant["window"] == "sliding" else WindowSpec())
    source = FileSource(path)
    dedupe = {"source": SourceDeduplicated,
              "replay": lambda: dedupe_for_source(
                  source, 600, streaming=False,
                  buckets=batch.buckets_for(source.estimated_bytes())),
              "state": lambda: DropDuplicates(600)}[variant["dedupe"]]()
    with beam.Pipeline(runner=FnApiRunner()) as p:
        result = (p | "Read" >> source.transform()
                  | TransactionStats(spec, dedupe=dedupe, route=Route.ELEMENTWISE))
        (result.windows | beam.WindowInto(beam.window.GlobalWindows())
         | beam.combiners.Count.Globally())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime}))


def cpu_seconds(path: Path, name: str) -> float:
    code = ("import json, sys; from benchmarks.elementwise import _child, VARIANTS; "
            f"_child({str(path)!r}, VARIANTS[{name!r}])")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root),
                                                                      os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True, timeout=3600)
    return json.loads(proc.stdout.strip().splitlines()[-1])["cpu"]


def measure(name: str, workdir: Path, sizes: tuple[int, int] | None = None,
            repeats: int = 1) -> dict:
    small, large = sizes or VARIANTS[name]["sizes"]
    paths = [foreign.write(workdir / f"foreign-{n}.jsonl", n) for n in (small, large)]
    runs = [[cpu_seconds(path, name) for path in paths] for _ in range(repeats)]
    cpus = [statistics.median(run[i] for run in runs) for i in (0, 1)]
    per_tx = (cpus[1] - cpus[0]) / (large - small)
    return {"variant": name, "sizes": (small, large), "cpu_s": cpus,
            "us_per_tx": per_tx * 1e6, **dataflow_cost(per_tx)}


def dataflow_cost(cpu_seconds_per_tx: float) -> dict:
    """vCPU-hours and list-price cost per million transactions on n1-standard-2 streaming
    workers, counting the worker's memory in proportion to the vCPU time used."""
    vcpu_hours = cpu_seconds_per_tx * 1e6 / 3600
    per_vcpu_hour = (STREAMING_VCPU_HOUR_USD + STREAMING_GB_HOUR_USD
                     * N1_STANDARD_2["memory_gb"] / N1_STANDARD_2["vcpus"])
    return {"vcpu_hours_per_million": vcpu_hours,
            "usd_per_million": vcpu_hours * per_vcpu_hour}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.elementwise",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated variants (default: all)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--repeats", type=_positive, default=1,
                        help="runs of each size; the median CPU time of each is used")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(VARIANTS)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="txpipe-elementwise-"))
    for name in names:
        r = measure(name, workdir, repeats=args.repeats)
        print(f"{name:24s} {r['us_per_tx']:8.1f} µs CPU/tx  "
              f"{r['vcpu_hours_per_million']:.3f} vCPU-h/M tx  ${r['usd_per_million']:.4f}/M tx"
              f"  (sizes {r['sizes'][0]:,} / {r['sizes'][1]:,}: {r['cpu_s'][0]:.1f} / "
              f"{r['cpu_s'][1]:.1f} s CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
