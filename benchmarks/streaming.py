"""The local stack's rate search: ``python -m txpipe demo`` at rising DEMO_RATEs.

With a watermark that follows the data, a pipeline slower than its input does not lose data:
it falls behind, and its windows arrive later. So each rate is judged on two things: ``lost``
(must be 0) and whether the read *kept up* — caught up with the subscription within
KEEP_UP_SECONDS of the end of publishing. The search doubles the rate from START_RATE while
both hold, then halves the gap to the first rate that failed a few times (steps of STEP tx/s),
and reports every rate tried with its window end → warehouse latency and the machine's load
average around the run (the simulator shares the process and the cores with the pipeline, and
other work on the machine shows in every figure).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

START_RATE = 1000
MAX_RATE = 32000
STEP = 250
REFINE = 2
#: The read must have emptied the subscription this soon after publishing ended.
KEEP_UP_SECONDS = 10.0


@dataclass(frozen=True)
class Attempt:
    rate: int
    seconds: float
    fields: dict[str, int]  # the CONSERVATION line
    caught_up: float | None  # s after publishing ended
    latency: tuple[float, float, float] | None  # p50, p95, max (s), windows fired by the watermark
    windows: int
    took: float | None
    returncode: int
    load: tuple[float, float] | None = None  # 1-minute load average before and after the run

    @property
    def lost(self) -> int | None:
        return self.fields.get("lost")

    @property
    def kept_up(self) -> bool:
        return (self.lost == 0 and self.caught_up is not None
                and self.caught_up <= KEEP_UP_SECONDS)

    def describe(self) -> str:
        if self.lost is None:
            return f"no CONSERVATION line (exit {self.returncode})"
        f = self.fields
        text = (f"lost={self.lost}, counted={f.get('counted', 0):,}, "
                f"late_dropped={f.get('late_dropped', 0):,}")
        if self.caught_up is not None:
            text += f"; caught up {self.caught_up:.1f} s after publishing"
        if self.latency:
            p50, p95, most = self.latency
            text += (f"; window end → warehouse p50={p50:.1f} s p95={p95:.1f} s "
                     f"max={most:.1f} s ({self.windows} windows)")
        if self.load:
            text += f"; load average {self.load[0]:.1f} → {self.load[1]:.1f}"
        return text


def parse(stdout: str, rate: int, seconds: float, returncode: int = 0) -> Attempt:
    """An Attempt from the demo's output."""
    line = next((s for s in stdout.splitlines() if s.startswith("CONSERVATION")), "")
    fields = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    caught = re.search(r"^BACKLOG caught up ([\d.]+) s", stdout, re.MULTILINE)
    latency = re.search(r"^LATENCY .*?p50=([\d.]+)s p95=([\d.]+)s max=([\d.]+)s over (\d+)",
                        stdout, re.MULTILINE)
    took = re.search(r"run took (\d+) s", stdout)
    return Attempt(rate, seconds, fields, float(caught.group(1)) if caught else None,
                   tuple(float(latency.group(i)) for i in (1, 2, 3)) if latency else None,
                   int(latency.group(4)) if latency else 0,
                   float(took.group(1)) if took else None, returncode)


def demo(rate: int, seconds: float, root: Path) -> Attempt:
    """One ``python -m txpipe demo`` at ``rate`` for ``seconds`` of publishing."""
    from benchmarks.measure import run

    print(f"streaming: DEMO_RATE={rate} for {seconds:g} s ...", file=sys.stderr, flush=True)
    before = os.getloadavg()[0]
    result = run([sys.executable, "-m", "txpipe", "demo"], cwd=str(root),
                 env={"DEMO_RATE": str(rate), "DEMO_SECONDS": f"{seconds:g}"})
    attempt = replace(parse(result.stdout, rate, seconds, result.returncode),
                      load=(before, os.getloadavg()[0]))
    print(f"  {attempt.describe()}", file=sys.stderr, flush=True)
    return attempt


def search(attempt: Callable[[int], Attempt], start: int = START_RATE) -> list[Attempt]:
    """Every rate tried, in order: doubling from ``start`` while it keeps up, then narrowing the
    gap to the first rate that did not (or halving down from ``start`` if even it failed)."""
    tried: dict[int, Attempt] = {}

    def at(rate: int) -> Attempt:
        if rate not in tried:
            tried[rate] = attempt(rate)
        return tried[rate]

    good = bad = None
    rate = start
    while rate <= MAX_RATE:
        if at(rate).kept_up:
            good = rate
            if bad is not None:
                break
            rate *= 2
        else:
            bad = rate
            if good is not None or rate // 2 < STEP:
                break
            rate //= 2
    if good is not None and bad is not None:  # good < bad either way
        for _ in range(REFINE):
            mid = round((good + bad) / 2 / STEP) * STEP
            if mid in (good, bad):
                break
            if at(mid).kept_up:
                good = mid
            else:
                bad = mid
    return list(tried.values())


def best(attempts: list[Attempt]) -> Attempt | None:
    """The highest rate that kept up with lost=0."""
    return max((a for a in attempts if a.kept_up), key=lambda a: a.rate, default=None)
