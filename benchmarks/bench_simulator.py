"""How fast the simulator publishes to the local Pub/Sub emulator, generation included.

    python benchmarks/bench_simulator.py                  # 50,000 messages, 3 runs
    python benchmarks/bench_simulator.py --count 2000 --runs 1 --verify   # smoke test

Uses the emulator at PUBSUB_EMULATOR_HOST, or starts one on a free port (stopped at the end).
Each run publishes to a fresh topic with a subscription attached, as in real use (the emulator
stores nothing for a topic without subscriptions); ``--verify`` pulls everything back.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from simulator import SimulationConfig, generate, publish
from txpipe.config import load_settings
from txpipe.lab.local import PubSubEmulator
from txpipe.resources import ensure_pubsub


@contextlib.contextmanager
def emulator_host() -> Iterator[str]:
    existing = os.environ.get("PUBSUB_EMULATOR_HOST")
    if existing:
        yield existing
        return
    with PubSubEmulator() as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.emulator_host
        try:
            yield emulator.emulator_host
        finally:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)


def count_received(subscription_path: str, expected: int, timeout: float = 300.0) -> int:
    """Distinct message ids pulled back from the subscription (acked as they come)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from emulator import pull_all

    return len(pull_all(subscription_path, expected, timeout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50_000, help="messages per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    parser.add_argument("--duplicate-rate", type=float, default=0.0)
    parser.add_argument("--verify", action="store_true", help="pull every message back")
    parser.add_argument("--min-rate", type=float, default=0.0,
                        help="exit 1 when the best run is slower (msg/s)")
    args = parser.parse_args(argv)
    cfg = SimulationConfig(count=args.count, rate=0, malformed_rate=args.malformed_rate,
                           duplicate_rate=args.duplicate_rate)

    started = time.perf_counter()
    generated = sum(1 for _ in generate(cfg))
    print(f"generation only: {generated / (time.perf_counter() - started):,.0f} msg/s")

    rates = []
    with emulator_host() as host:
        for run in range(1, args.runs + 1):
            tag = uuid.uuid4().hex[:8]
            settings = load_settings(env_file=None, project_id="txpipe-bench",
                                     pubsub_topic_id=f"bench-{tag}",
                                     pubsub_subscription_id=f"bench-{tag}-sub")
            ensure_pubsub(settings)
            stats = publish(cfg, settings.topic_path)
            rates.append(stats.rate_msg_s)
            line = (f"run {run}: {stats.published:,} published, {stats.failed:,} failed in "
                    f"{stats.elapsed_s:.2f} s = {stats.rate_msg_s:,.0f} msg/s")
            if args.verify:
                received = count_received(settings.subscription_path, stats.published)
                line += f"; {received:,} received"
                if received != stats.published or stats.failed:
                    print(line)
                    print("FAILED: not every message arrived", file=sys.stderr)
                    return 1
            print(line)
    best, median = max(rates), statistics.median(rates)
    print(f"simulator -> Pub/Sub emulator at {host}: best {best:,.0f} msg/s, median "
          f"{median:,.0f} msg/s ({args.count:,} messages per run, generation included)")
    return 1 if best < args.min_rate else 0


if __name__ == "__main__":
    sys.exit(main())
