"""Start-up: what a user waits for before txpipe does anything — ``run --help``, a refused flag
value, a 10-line replay — beside ``import apache_beam`` alone, each a fresh process, the median
of ``--repeat`` runs (wall and CPU seconds).

``python -m benchmarks.startup [--repeat 5]``; ``startup()`` gives the rows to a caller.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import Measured, run

TEN_LINES = [json.dumps({"transaction_id": f"t{i}", "amount": 10.5 + i,
                         "timestamp": f"2026-11-27T10:00:{3 * i:02d}+00:00"}) for i in range(10)]


def commands(workdir: Path) -> dict[str, list[str]]:
    txpipe = [sys.executable, "-m", "txpipe", "run"]
    return {
        "import apache_beam": [sys.executable, "-c", "import apache_beam"],
        "run --help": [*txpipe, "--help"],
        "run --route nonsense (refused)": [*txpipe, "--route", "nonsense"],
        "10-line replay": [*txpipe, "--source", "file", "--input", str(workdir / "ten.jsonl"),
                           "--sink", "jsonl", "--output", str(workdir / "out" / "x")],
    }


def startup(repeat: int = 5) -> list[tuple[str, float, float]]:
    """(what, median wall seconds, median CPU seconds) per command."""
    with tempfile.TemporaryDirectory(prefix="txpipe-startup-") as tmp:
        workdir = Path(tmp)
        (workdir / "ten.jsonl").write_text("\n".join(TEN_LINES) + "\n")
        rows = []
        for what, command in commands(workdir).items():
            runs: list[Measured] = [run(command, cwd=tmp, env={"LOG_LEVEL": "WARNING"})
                                    for _ in range(repeat)]
            if what.endswith("(refused)"):
                assert all(m.returncode == 2 for m in runs), runs[0].stderr
            else:
                assert all(m.returncode == 0 for m in runs), runs[0].stderr[-2000:]
            rows.append((what, statistics.median(m.wall_seconds for m in runs),
                         statistics.median(m.cpu_seconds for m in runs)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rows = startup(args.repeat)
    print(f"start-up, median of {args.repeat} fresh processes (load average "
          f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    print(f"{'':34} {'wall s':>7} {'CPU s':>7}")
    for what, wall, cpu in rows:
        print(f"{what:34} {wall:7.2f} {cpu:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
