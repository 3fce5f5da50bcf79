"""The local stack: the Pub/Sub emulator (and, for tests, a BigQuery emulator) on this machine.

``python -m txpipe local up | down | status | env``. The emulator is started through its direct
launcher, which ``exec``s the JVM, so the PID we record is the server itself: stopping that PID
stops everything (``gcloud beta emulators pubsub start`` would leave its java child serving).
Runtime state lives under ``.local/``: the PID file ``pubsub-emulator.json`` and the log.

The same classes serve pytest fixtures, the demo and notebooks::

    with PubSubEmulator() as emulator:          # a free port, stopped on exit
        emulator.ensure_resources(settings)     # topic, subscription, dead-letter topic
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.emulator_host
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from txpipe.errors import OneLineParser, command

LOCAL_DIR = Path(".local")
STATE_FILE = "pubsub-emulator.json"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8085
INSTALL_HINT = (
    "the Pub/Sub emulator is not installed: run `gcloud components install pubsub-emulator` "
    "(or install the distro package google-cloud-cli-pubsub-emulator); it also needs Java 11+"
)
_LAUNCHER = Path("platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")


class EmulatorError(RuntimeError):
    """The local stack cannot start or answer; the message is one line for the user."""


class EmulatorNotInstalled(EmulatorError):
    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def find_pubsub_launcher() -> Path | None:
    """The emulator launcher of the installed Google Cloud CLI, or None.

    Resolving the ``gcloud`` symlink finds the SDK root without running gcloud (≈0.4 s);
    ``gcloud info`` is the fallback for wrapper-script installs.
    """
    if shutil.which("java") is None:
        return None
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    candidate = Path(gcloud).resolve().parent.parent / _LAUNCHER
    if candidate.is_file():
        return candidate
    try:
        root = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True, text=True, check=False, timeout=60,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    candidate = Path(root) / _LAUNCHER
    return candidate if root and candidate.is_file() else None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a running (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate(pid: int, proc: subprocess.Popen | None = None, grace: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace`` s, then SIGKILL; return once the process is gone."""
    if not pid_alive(pid):
        if proc is not None:
            proc.poll()
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, proc, grace):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, proc, 10.0):
        raise EmulatorError(f"process {pid} survived SIGKILL")


def _wait_gone(pid: int, proc: subprocess.Popen | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def _die_with_parent() -> None:
    """In the child before exec: let the kernel SIGKILL it when the parent dies (Linux), so a
    test run or demo killed hard (timeout, os._exit) cannot leave a server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class EmulatorState:
    """What ``up`` records so that ``down``/``status`` in another process find the server."""

    pid: int
    host: str
    port: int
    started_at: float
    log: str

    @property
    def emulator_host(self) -> str:
        return f"{self.host}:{self.port}"


class _ServerProcess:
    """A local server started by us, known by PID, stopped by PID."""

    name = "server"

    def __init__(self, host: str = DEFAULT_HOST, log_path: str | Path | None = None,
                 ready_timeout: float = 60.0, die_with_parent: bool = True):
        self.host = host
        self.die_with_parent = die_with_parent
        self.port: int | None = None
        self.log_path = Path(log_path) if log_path else None
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    # subclasses: the command line and the readiness URL
    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def ready_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, port: int | None = None) -> _ServerProcess:
        """Start on ``port`` (else the one given at construction, else a free one) and return
        once the server answers."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        port = port or self.port or free_port(self.host)
        if port_in_use(self.host, port):
            raise EmulatorError(f"port {self.host}:{port} is already in use (choose another)")
        self.port = port
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it; closed below
        else:
            log = open(os.devnull, "wb")  # noqa: SIM115
        try:
            # A session of its own: Ctrl-C in a terminal reaches our process, which stops the
            # server in order, instead of the JVM dying half-way through a request.
            self.proc = subprocess.Popen(
                self.command(port), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        finally:
            log.close()
        self.started_at = time.time()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while not _http_answers(self.ready_url()):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise EmulatorError(f"the {self.name} exited with code {code} while starting"
                                    + (f" (see {self.log_path})" if self.log_path else ""))
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(f"the {self.name} did not answer within {self.ready_timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop by PID (SIGTERM, then SIGKILL); safe to call twice."""
        if self.proc is not None:
            terminate(self.proc.pid, self.proc)
            self.proc = None

    def __enter__(self):
        if self.proc is None:
            self.start(self.port)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class PubSubEmulator(_ServerProcess):
    """The Google Cloud CLI's Pub/Sub emulator; ``emulator_host`` is PUBSUB_EMULATOR_HOST.

    It dies with the process that started it unless ``die_with_parent=False`` (``local up``).
    """

    name = "Pub/Sub emulator"

    def __init__(self, host: str = DEFAULT_HOST, port: int | None = None,
                 log_path: str | Path | None = None, ready_timeout: float = 60.0,
                 die_with_parent: bool = True):
        super().__init__(host, log_path, ready_timeout, die_with_parent)
        self.port = port
        launcher = find_pubsub_launcher()
        if launcher is None:
            raise EmulatorNotInstalled()
        self.launcher = launcher

    def command(self, port: int) -> list[str]:
        return [str(self.launcher), f"--host={self.host}", f"--port={port}"]

    @property
    def emulator_host(self) -> str:
        if self.port is None:
            raise EmulatorError("the Pub/Sub emulator has not been started")
        return f"{self.host}:{self.port}"

    def ensure_resources(self, settings) -> list[str]:
        """Create topic, dead-letter topic and subscription if missing; return what was made."""
        from txpipe.resources import ensure_pubsub

        return ensure_pubsub(settings, emulator_host=self.emulator_host)

    def state(self) -> EmulatorState:
        assert self.pid is not None and self.port is not None
        return EmulatorState(self.pid, self.host, self.port, self.started_at,
                             str(self.log_path or ""))


class BigQueryEmulator(_ServerProcess):
    """``bqemulator`` (PyPI; DuckDB-backed, in memory) for testing the BigQuery sink offline.

    Clients find it through ``BIGQUERY_EMULATOR_HOST`` = :attr:`endpoint`. It does not dedupe
    insert ids nor enforce REQUIRED columns (see docs/local-bigquery.md).
    """

    name = "BigQuery emulator"

    def __init__(self, project: str, host: str = DEFAULT_HOST, port: int | None = None,
                 log_path: str | Path | None = None, ready_timeout: float = 60.0):
        super().__init__(host, log_path, ready_timeout)
        self.project = project
        self.port = port
        executable = Path(sys.executable).with_name("bqemulator")
        if not executable.is_file():
            raise EmulatorError("bqemulator is not installed: pip install -e '.[dev]'")
        self.executable = executable

    def command(self, port: int) -> list[str]:
        install_duckdb_spatial()
        return [str(self.executable), "start", f"--rest-host={self.host}", f"--rest-port={port}",
                f"--grpc-host={self.host}", f"--grpc-port={free_port(self.host)}",
                f"--project={self.project}", "--ephemeral", "--log-level=warning",
                "--log-format=console"]

    def ready_url(self) -> str:
        return f"{self.endpoint}/bigquery/v2/projects/{self.project}/datasets"

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise EmulatorError("the BigQuery emulator has not been started")
        return f"http://{self.host}:{self.port}"


def install_duckdb_spatial() -> None:
    """Install DuckDB's spatial extension from its PyPI wheel into DuckDB's extension directory.

    bqemulator runs ``INSTALL spatial`` at start, which downloads from DuckDB's own server
    unless the extension is already installed; installing the wheel's file first keeps the
    emulator offline. Idempotent and local.
    """
    import duckdb

    try:
        import duckdb_extension_spatial
    except ImportError as exc:
        raise EmulatorError("duckdb-extension-spatial is not installed: "
                            "pip install -e '.[dev]'") from exc
    folder = Path(duckdb_extension_spatial.__file__).parent / "extensions"
    files = sorted(folder.glob("v*/spatial.duckdb_extension"))
    if not files:
        raise EmulatorError(f"no spatial extension file inside {folder}")
    con = duckdb.connect()
    try:
        installed = con.execute(
            "SELECT installed FROM duckdb_extensions() WHERE extension_name = 'spatial'"
        ).fetchone()
        if not (installed and installed[0]):
            con.execute(f"INSTALL '{files[-1]}'")
    finally:
        con.close()


# --- the recorded emulator: `up` in one process, `down` / `status` in another ----------------


def state_path(local_dir: Path = LOCAL_DIR) -> Path:
    return local_dir / STATE_FILE


def read_state(local_dir: Path = LOCAL_DIR) -> EmulatorState | None:
    try:
        data = json.loads(state_path(local_dir).read_text())
        return EmulatorState(**data)
    except (OSError, ValueError, TypeError):
        return None


def running_state(local_dir: Path = LOCAL_DIR) -> EmulatorState | None:
    """The recorded emulator if its PID is still our emulator (not a reused PID)."""
    state = read_state(local_dir)
    if state is None or not pid_alive(state.pid):
        return None
    cmdline = _cmdline(state.pid)
    if cmdline and "pubsub-emulator" not in cmdline:
        return None
    return state


def up(settings, port: int = DEFAULT_PORT, local_dir: Path = LOCAL_DIR) -> tuple[EmulatorState, bool]:
    """Start the recorded emulator unless it runs; ensure its resources. -> (state, started)."""
    state = running_state(local_dir)
    started = state is None
    if state is None:
        emulator = PubSubEmulator(port=port or None, log_path=local_dir / "pubsub-emulator.log",
                                  die_with_parent=False)
        emulator.start(port or None)
        state = emulator.state()
        local_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_path(local_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        tmp.replace(state_path(local_dir))
        # Let this process exit without the Popen object reaping (or killing) the server.
        emulator.proc = None
    from txpipe.resources import ensure_pubsub

    ensure_pubsub(settings, emulator_host=state.emulator_host)
    return state, started


def down(local_dir: Path = LOCAL_DIR) -> EmulatorState | None:
    """Stop the recorded emulator by PID; the stopped state, or None if nothing ran."""
    state = running_state(local_dir)
    if state is not None:
        terminate(state.pid)
    with contextlib.suppress(FileNotFoundError):
        state_path(local_dir).unlink()
    return state


@command("txpipe local")
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m txpipe local",
        description="Start, stop or inspect the local Pub/Sub emulator (state in .local/).")
    parser.add_argument("action", choices=["up", "down", "status", "env"],
                        help="up: start + create topic/subscription; down: stop (idempotent); "
                             "status: print state; env: print `export PUBSUB_EMULATOR_HOST=...`")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port for `up` (default {DEFAULT_PORT}; 0 = any free port)")
    args = parser.parse_args(argv)

    from txpipe.config import ConfigError, load_settings
    from txpipe.resources import ResourceError

    try:
        if args.action == "up":
            settings = load_settings()
            state, started = up(settings, args.port)
            verb = "started" if started else "already running"
            print(f"Pub/Sub emulator {verb}: pid {state.pid} at {state.emulator_host}; "
                  f"topic {settings.pubsub_topic_id}, subscription {settings.pubsub_subscription_id}, "
                  f"dead-letter topic {settings.pubsub_dead_letter_topic_id} in project "
                  f"{settings.project_id}")
            print(f"export PUBSUB_EMULATOR_HOST={state.emulator_host}")
        elif args.action == "down":
            state = down()
            print(f"Pub/Sub emulator stopped (pid {state.pid})" if state
                  else "Pub/Sub emulator not running")
        else:
            state = running_state()
            if args.action == "env":
                if state is None:
                    print("txpipe local: the Pub/Sub emulator is not running "
                          "(python -m txpipe local up)", file=sys.stderr)
                    return 1
                print(f"export PUBSUB_EMULATOR_HOST={state.emulator_host}")
            elif state is None:
                installed = find_pubsub_launcher() is not None
                print("Pub/Sub emulator: not running" + ("" if installed else f" ({INSTALL_HINT})"))
                return 1
            else:
                uptime = time.time() - state.started_at
                answering = _http_answers(f"http://{state.emulator_host}/")
                print(f"Pub/Sub emulator: running, pid {state.pid}, {state.emulator_host}, "
                      f"up {uptime:.0f} s, {'answering' if answering else 'NOT answering'}, "
                      f"log {state.log}")
                return 0 if answering else 1
    except (EmulatorError, ConfigError, ResourceError) as exc:
        print(f"txpipe local: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
