"""A command run in this process, as ``python -m ...`` would run it in a fresh one: its own
working directory and environment, stdout and stderr captured, the exit status returned.

A whole process pays Python's and Beam's start-up (seconds) per call; the few tests that
check what only a process shows (exit status, no traceback, signals) still start one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str | bytes  # bytes from ``capsysbinary``
    stderr: str | bytes


def run_in_process(capture: pytest.CaptureFixture, main: Callable[[list[str]], int | None],
                   argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    """``main(argv)`` with ``cwd`` as working directory and exactly ``env`` (default: this
    process's) as environment, its output read from ``capture`` (``capsys``/``capsysbinary``);
    the logging set up by the command is undone afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with pytest.MonkeyPatch.context() as patch:
        if env is not None:
            for name in set(os.environ) - set(env):
                patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
        patch.chdir(cwd)
        capture.readouterr()
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors and --help
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
        finally:
            out, err = capture.readouterr()
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
    return Ran(int(code or 0), out, err)
