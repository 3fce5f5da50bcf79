"""Start-up: what a user waits for before txpipe does anything — ``run --help``, a refused flag
value, a 10-line replay — beside ``import apache_beam`` alone, each a fresh process, the median
of ``--repeat`` runs (wall and CPU seconds); and how much of txpipe a 10-line replay passes
through (its modules in ``sys.modules`` after the run, and their lines).

``python -m benchmarks.startup [--repeat 5] [--modules]``; ``startup()`` and ``replay_modules()``
give the rows to a caller.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import Measured, run

TEN_LINES = [json.dumps({"transaction_id": f"t{i}", "amount": 10.5 + i,
                         "timestamp": f"2026-11-27T10:00:{3 * i:02d}+00:00"}) for i in range(10)]


def replay_args(workdir: Path) -> list[str]:
    return ["run", "--source", "file", "--input", str(workdir / "ten.jsonl"), "--sink", "jsonl",
            "--output", str(workdir / "out" / "x")]


def commands(workdir: Path) -> dict[str, list[str]]:
    txpipe = [sys.executable, "-m", "txpipe", "run"]
    return {
        "import apache_beam": [sys.executable, "-c", "import apache_beam"],
        "run --help": [*txpipe, "--help"],
        "run --route nonsense (refused)": [*txpipe, "--route", "nonsense"],
        "10-line replay": [sys.executable, "-m", "txpipe", *replay_args(workdir)],
    }


#: Run in a fresh process: the replay, then each txpipe module it imported and its lines.
_MODULES = """
import json, sys
from txpipe.__main__ import main
code = main(sys.argv[1:])
names = sorted(m for m in sys.modules if m == "txpipe" or m.startswith("txpipe."))
files = {m: getattr(sys.modules[m], "__file__", None) for m in names}
print(json.dumps({"code": code, "modules": {m: sum(1 for _ in open(f)) if f else 0
                                            for m, f in files.items()}}))
"""


def replay_modules() -> dict[str, int]:
    """The txpipe modules a 10-line replay imports, each with its number of lines."""
    with tempfile.TemporaryDirectory(prefix="txpipe-modules-") as tmp:
        workdir = Path(tmp)
        (workdir / "ten.jsonl").write_text("\n".join(TEN_LINES) + "\n")
        done = subprocess.run([sys.executable, "-c", _MODULES, *replay_args(workdir)], cwd=tmp,
                              env={**os.environ, "LOG_LEVEL": "WARNING"}, capture_output=True,
                              text=True, check=True)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["code"] == 0, done.stderr[-2000:]
    return answer["modules"]


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
    parser.add_argument("--modules", action="store_true",
                        help="list the txpipe modules a 10-line replay imports, with their lines")
    args = parser.parse_args(argv)
    if args.modules:
        modules = replay_modules()
        for name, lines in modules.items():
            print(f"{lines:6} {name}")
        print(f"a 10-line replay imports {len(modules)} txpipe modules, "
              f"{sum(modules.values()):,} lines")
        return 0
    rows = startup(args.repeat)
    print(f"start-up, median of {args.repeat} fresh processes (load average "
          f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    print(f"{'':34} {'wall s':>7} {'CPU s':>7}")
    for what, wall, cpu in rows:
        print(f"{what:34} {wall:7.2f} {cpu:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
