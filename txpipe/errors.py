"""The one kind of error a command shows its user: one line on stderr, exit status 2."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints its usage and the message, then exits; ours raises a UsageError."""

    def error(self, message):
        raise UsageError(message)
