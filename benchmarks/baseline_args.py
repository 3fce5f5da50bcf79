"""The command line every baseline script shares (standard library only, so it adds nothing
to the time a baseline is measured at): ``INPUT OUTPUT [--window-size SECONDS]``."""

from __future__ import annotations

import argparse


def parse(script: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{script}")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--window-size", type=int, default=30)
    return parser.parse_args(argv)
