"""A live stats line on a terminal (stderr, so it never mixes with data on stdout).

Drawn with rich, which comes with the lab extra; without it the simulator runs silently
until its one-line summary."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from simulator.stats import PublishStats


def status_line(stats: PublishStats) -> Any:
    from rich.text import Text

    line = Text()
    line.append("published ", style="dim").append(f"{stats.published:,}", style="bold green")
    line.append("  failed ", style="dim").append(
        f"{stats.failed:,}", style="bold red" if stats.failed else "bold")
    line.append("  pending ", style="dim").append(f"{stats.pending:,}")
    line.append("  rate ", style="dim").append(f"{stats.rate_msg_s:,.0f} msg/s", style="bold cyan")
    line.append("  elapsed ", style="dim").append(f"{stats.elapsed_s:,.1f} s")
    if stats.retries:
        line.append("  retries ", style="dim").append(f"{stats.retries:,}", style="yellow")
    return line


class LiveStatus:
    """Context manager whose :meth:`update` is a stats callback; silent when not on a TTY."""

    def __init__(self, console: Any = None):
        try:
            from rich.console import Console
        except ImportError:  # runtime-only install: no live line
            Console = None  # noqa: N806
        self.console = console or (Console(stderr=True) if Console else None)
        self._live: Any = None

    def __enter__(self) -> LiveStatus:
        if self.console is not None and self.console.is_terminal:
            from rich.live import Live
            from rich.text import Text

            self._live = Live(Text(""), console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def update(self, stats: PublishStats) -> None:
        if self._live is not None:
            self._live.update(status_line(stats))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(kind, error, tb)
            self._live = None
