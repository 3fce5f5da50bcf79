"""Run a command and measure it as a user would feel it: wall time, CPU time and peak memory
of the whole process tree (Beam's multi-process mode starts workers of its own)."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Measured:
    command: list[str]
    wall_seconds: float
    cpu_seconds: float  # user + system, the process and every child it waited for
    peak_rss_bytes: int  # highest sum of RSS over the process tree, sampled every 50 ms
    stdout: str
    stderr: str
    returncode: int

    def check(self) -> Measured:
        if self.returncode:
            raise RuntimeError(f"{' '.join(self.command)} exited {self.returncode}:\n"
                               f"{self.stderr[-2000:]}")
        return self


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker may exit meanwhile
            total += p.memory_info().rss
    return total


def run(command: list[str], cwd: str | None = None, env: dict | None = None) -> Measured:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        proc = psutil.Process(child.pid)
        while not done.is_set():
            try:
                peak = max(peak, _tree_rss(proc))
            except psutil.Error:
                return
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = child.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(command, wall, cpu, peak, out.decode(errors="replace"),
                    err.decode(errors="replace"), child.returncode)
