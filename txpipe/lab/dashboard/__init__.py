"""``python -m txpipe dashboard --warehouse FILE [--port N]``: a live page over a DuckDB warehouse.

Serves the page (:mod:`.app`) over any warehouse, a stream's or a replay's, and prints one line
``DASHBOARD http://127.0.0.1:PORT/`` as soon as it listens. ``make demo`` starts one beside its
pipeline (:func:`beside`), in a process of its own: the page's work never takes the pipeline's
interpreter, and it reads the file only in brief read-only looks (:mod:`.data`).
See docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from txpipe.errors import OneLineParser, UsageError, command

DEFAULT_PORT = 8050
LINE_PREFIX = "DASHBOARD "


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m txpipe dashboard",
        description="Serve a live page over a DuckDB warehouse (a stream's or a replay's): its "
                    "latest run's windows and panes, dead letters by reason, anomalies, and the "
                    "stream's watermark lag and backlog when the run records them. Refreshes "
                    "every 2 s; works offline.")
    parser.add_argument("--warehouse",
                        help="the DuckDB file (it may not exist yet: the page waits for it)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--looker-url", action="store_true",
                        help="print the Looker Studio Linking API URL of the report over the "
                             "BigQuery views of PROJECT_ID / BIGQUERY_DATASET_ID, and exit "
                             "(docs/looker-studio.md)")
    parser.add_argument("--looker-report-id", help="with --looker-url: the saved report to "
                                                   "open as the template")
    parser.add_argument("--exit-with", type=int, help=argparse.SUPPRESS)  # the demo's pid
    return parser


def check_warehouse(path: str) -> None:
    """A missing file is fine (the pipeline has not written yet) if its folder exists; an
    existing one must be a DuckDB database. Raises UsageError with one line."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--warehouse {path} is a directory, not a DuckDB file")
    if not target.exists():
        if not target.parent.resolve().is_dir():
            raise UsageError(f"--warehouse {path}: no folder {target.parent}")
        return
    with open(target, "rb") as f:
        header = f.read(16)
    # A DuckDB file carries its magic bytes "DUCK" at offset 8.
    if header[8:12] != b"DUCK":
        raise UsageError(f"--warehouse {path} is not a DuckDB database")


def _bind_check(port: int) -> None:
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0-65535 (got {port})")
    if port == 0:
        return
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(f"--port {port} is in use on 127.0.0.1: pick another "
                             "(or --port 0 for any free one)") from None


def _exit_with(pid: int) -> None:
    """End this process when ``pid`` (the demo that started it) is gone."""
    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except OSError:
                os._exit(0)
            time.sleep(1.0)

    threading.Thread(target=watch, name="txpipe-dashboard-parent", daemon=True).start()


@command("txpipe dashboard")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.looker_url:
        if not args.warehouse:
            raise UsageError("--warehouse FILE is required (or --looker-url)")
        check_warehouse(args.warehouse)
        _bind_check(args.port)
    from txpipe.config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise UsageError(exc) from None
    if args.looker_url:
        from txpipe.lab.dashboard import looker

        print(looker.settings_url(settings, args.looker_report_id))
        return 0
    if args.exit_with:  # beside a run: the page yields the processor to the pipeline
        _exit_with(args.exit_with)
        os.nice(10)
    # A page in a process of its own: Dash's Jupyter support would import IPython (1.5 s+).
    sys.modules.setdefault("IPython", None)
    from txpipe.lab.dashboard import app, data

    page = app.make_app(args.warehouse, data.TableNames.from_settings(settings))
    try:
        app.serve(page, port=args.port, ready=lambda url: print(LINE_PREFIX + url, flush=True))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port was taken between the check and the bind
        raise UsageError(f"cannot listen on port {args.port}: {exc.strerror}") from None
    return 0


# --- beside a run (make demo) -----------------------------------------------------------------


def _free(port: int) -> bool:
    try:
        _bind_check(port)
        return True
    except UsageError:
        return False


class Beside:
    """A dashboard process over a running pipeline's warehouse, and the run's progress
    recorder; both end with :meth:`stop` or with this process."""

    def __init__(self, warehouse: str, recorder, say: Callable[[str], None] = print):
        self.recorder = recorder
        text = os.environ.get("DEMO_DASHBOARD_PORT") or str(DEFAULT_PORT)
        wanted = int(text) if text.isdigit() else -1
        if wanted < 0:
            say(f"dashboard: DEMO_DASHBOARD_PORT={text!r} is not a port number: any free one")
        port = wanted if wanted >= 0 and _free(wanted) else 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "txpipe", "dashboard", "--warehouse", warehouse,
             "--port", str(port), "--exit-with", str(os.getpid())],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url: str | None = None
        threading.Thread(target=self._relay, args=(say,), name="txpipe-dashboard-relay",
                         daemon=True).start()
        atexit.register(self.stop)

    def _relay(self, say: Callable[[str], None]) -> None:
        for line in self.process.stdout:
            line = line.rstrip()
            if line.startswith(LINE_PREFIX) and self.url is None:
                self.url = line[len(LINE_PREFIX):]
                say(line)
            elif line:
                say(f"dashboard: {line}")

    def stop(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()
            self.recorder = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def beside(warehouse: str, run, published: Callable[[], int] | None = None,
           say: Callable[[str], None] = print) -> Beside | None:
    """Record the progress of ``run`` (a ``txpipe.lab.live.LiveRun``) and serve the page over
    ``warehouse`` (``DEMO_DASHBOARD=0``: neither). The DASHBOARD line is said as soon as the
    page serves."""
    if os.environ.get("DEMO_DASHBOARD", "1") == "0":
        return None
    from txpipe.lab import progress

    return Beside(warehouse, progress.follow(warehouse, run, published), say)
