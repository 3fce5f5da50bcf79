"""``python -m txpipe COMMAND``: one entry point, each command in the module of its concern."""

from __future__ import annotations

import gc
import importlib
import sys

# command -> (module, one-line help). Modules are imported only when their command runs,
# so `python -m txpipe config` does not pay for importing Beam.
COMMANDS = {
    "run": ("txpipe.cli", "run the pipeline: streaming from Pub/Sub or a replay of files"),
    "demo": ("txpipe.lab.demo", "the local end-to-end demo (simulator -> pipeline -> DuckDB)"),
    "dashboard": ("txpipe.lab.dashboard", "a live page over a DuckDB warehouse (docs/dashboard.md)"),
    "config": ("txpipe.config", "print the loaded settings and validate them"),
    "local": ("txpipe.lab.local", "start / stop / inspect the local Pub/Sub emulator"),
    "setup": ("txpipe.resources", "create topics, subscription, dataset and tables (idempotent)"),
    "export-job": ("txpipe.export", "write the Dataflow job offline (template.json + pipeline.pb)"),
}


def usage() -> str:
    lines = ["usage: python -m txpipe COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<11} {text}" for name, (_, text) in COMMANDS.items()]
    lines.append("\n`python -m txpipe COMMAND --help` describes a command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"txpipe: unknown command {name!r} (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    code = int(module.main(rest) or 0)
    if argv is None:  # the process's own command line: it ends here
        # Spare the interpreter's last collection, a scan of everything start-up made (after
        # Beam's import, slower than building and running a short replay).
        gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
