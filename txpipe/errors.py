"""The one way a command refuses bad input: one line on stderr, exit status 2, no usage dump,
no traceback. Every command's parser is a :class:`OneLineParser` and its ``main`` is wrapped
in :func:`command`; the module imports nothing heavy, so a refusal is quick."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints its usage and the message, then exits; ours raises a UsageError."""

    def error(self, message):
        raise UsageError(message)


def refuse(prog: str, message: object) -> int:
    """Say what was wrong in one line on stderr; the exit status for it."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def command(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Wrap a command's ``main(argv)``: a UsageError it raises ends as one line and exit 2."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def guarded(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except UsageError as exc:
                return refuse(prog, exc)

        return guarded

    return wrap
