"""The notebook figure: ``ib.collect`` of the window stats of N transactions, in a fresh kernel-
like process (InteractiveRunner, ``PipelineOptions([])``), timed around the collect call.

    python -m benchmarks.notebook INPUT --plan stats|stepwise [--json]

``stats`` collects ``TransactionStats(..., route=BATCHED).windows`` (what the CLI uses for a
bounded input);
``stepwise`` chains the element-wise transforms one by one, as a notebook does to look at each
step — the baseline. Prints seconds, rows and the total count; ``--json`` prints one object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def build(plan: str, messages: tuple[bytes, ...], window_seconds: int):
    """The pipeline and the PCollection of window rows to collect."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.interactive.interactive_runner import InteractiveRunner
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from txpipe.aggregate import AggregateWindows
    from txpipe.config import Route
    from txpipe.dedupe import DropDuplicates
    from txpipe.parse import VALID, ParseTransactions
    from txpipe.pipeline import TransactionStats
    from txpipe.sources import MessagesSource
    from txpipe.windowing import WindowSpec, WindowTransactions

    spec = WindowSpec(size_seconds=window_seconds)
    # The FnApiRunner underneath, as the notebooks do: the stateful dedupe's processing-time
    # timer would otherwise send the DirectRunner to its bundle-based engine.
    runner = InteractiveRunner(underlying_runner=FnApiRunner()) if plan == "stepwise" else (
        InteractiveRunner())
    p = beam.Pipeline(runner, options=PipelineOptions([]))
    raw = p | "Read" >> MessagesSource(messages).transform()
    if plan == "stats":
        return p, (raw | "TransactionStats" >> TransactionStats(spec, route=Route.BATCHED)).windows
    parsed = raw | "Parse" >> ParseTransactions()
    unique = parsed[VALID] | "Dedupe" >> DropDuplicates()
    windowed = unique | "Window" >> WindowTransactions(spec)
    return p, windowed | "Aggregate" >> AggregateWindows()


def measure(plan: str, path: str, window_seconds: int = 30) -> dict:
    from apache_beam.runners.interactive import interactive_beam as ib

    with open(path, "rb") as f:
        messages = tuple(line.rstrip(b"\r\n") for line in f)
    _, windows = build(plan, messages, window_seconds)
    started = time.perf_counter()
    frame = ib.collect(windows)
    seconds = time.perf_counter() - started
    return {"plan": plan, "seconds": round(seconds, 3), "messages": len(messages),
            "rows": len(frame), "transactions": int(frame["total_transactions"].sum()),
            "sums": sorted(str(v) for v in frame["total_amount_sum"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notebook")
    parser.add_argument("input")
    parser.add_argument("--plan", choices=["stats", "stepwise"], default="stats")
    parser.add_argument("--window-size", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.plan, args.input, args.window_size)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['plan']}: ib.collect of {result['rows']} window rows over "
              f"{result['messages']} messages in {result['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
