"""Start-up and refusals: ``--help`` and a bad flag or value answer without importing Beam,
every command refuses bad input in one line with exit 2, and a local run names its runner
(the Beam internals that takes are checked here, so a Beam upgrade that moves them fails)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from txpipe.config import Settings

pytestmark = pytest.mark.subprocess  # start-up is measured in fresh interpreters
VARIABLES = {name.upper() for name in Settings.model_fields}
#: Runs a command's main in a fresh interpreter, then says whether Beam was imported.
PROBE = ("import sys\n"
         "from {module} import main\n"
         "code = main({argv!r})\n"
         "print('BEAM' if 'apache_beam' in sys.modules else 'NO BEAM')\n"
         "sys.exit(code)\n")


def probe(module: str, argv: list[str], cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
    return subprocess.run([sys.executable, "-c", PROBE.format(module=module, argv=argv)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


REFUSED_WITHOUT_BEAM = {
    "run: bad choice": ("txpipe.__main__", ["run", "--route", "nonsense"], "--route"),
    "run: bad number": ("txpipe.__main__", ["run", "--window-size", "abc"], "--window-size"),
    "run: out of range": ("txpipe.__main__", ["run", "--window-size", "0"],
                          "WINDOW_SIZE_SECONDS"),
    "run: underscored spelling": ("txpipe.__main__", ["run", "--window_size=60"],
                                  "--window-size"),
    "run: --late-firings takes no value": ("txpipe.__main__", ["run", "--late-firings=no"],
                                           "--late-firings"),
    "export-job: no --output": ("txpipe.__main__", ["export-job", "--streaming"], "--output"),
    "setup: unknown flag": ("txpipe.__main__", ["setup", "--no-such-flag"], "--no-such-flag"),
    "local: bad port": ("txpipe.__main__", ["local", "up", "--port", "x"], "--port"),
    "local: bad action": ("txpipe.__main__", ["local", "sideways"], "sideways"),
    "simulator: bad rate": ("simulator.cli", ["--rate", "fast"], "--rate"),
}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Every refusal, started at once (each is a fresh interpreter)."""
    procs = {}
    for name, (module, argv, _) in REFUSED_WITHOUT_BEAM.items():
        env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", PROBE.format(module=module, argv=argv)],
            cwd=tmp_path_factory.mktemp("refusal"), env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
    return {name: (p.wait(timeout=120), *p.communicate()) for name, p in procs.items()}


@pytest.mark.subprocess
@pytest.mark.parametrize("name", list(REFUSED_WITHOUT_BEAM))
def test_a_refusal_is_one_line_exit_2_and_imports_no_beam(refusals, name):
    code, out, err = refusals[name]
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err and "usage:" not in err, err
    assert ": error: " in err and REFUSED_WITHOUT_BEAM[name][2] in err, err
    assert out.strip() == "NO BEAM"


@pytest.mark.subprocess
@pytest.mark.parametrize("command", ["run", "export-job"])
def test_help_imports_no_beam(tmp_path, command):
    proc = probe("txpipe.__main__", [command, "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m txpipe ")
    assert "--window-size" in proc.stdout or command == "export-job"
    assert "--window_size" not in proc.stdout  # one spelling
    assert proc.stdout.strip().endswith("NO BEAM")


@pytest.mark.subprocess
def test_the_demo_refuses_zero_seconds_and_rate(tmp_path):
    for flag in ("--seconds", "--rate"):
        proc = probe("txpipe.__main__", ["demo", flag, "0"], tmp_path)
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert proc.stderr.strip() == "txpipe demo: --seconds and --rate must be > 0"
    proc = probe("txpipe.__main__", ["demo", "--seconds", "abc"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "txpipe demo: error: argument --seconds" in proc.stderr


@pytest.mark.subprocess
def test_a_local_replay_names_its_runner_and_never_imports_ipython(tmp_path):
    (tmp_path / "in.jsonl").write_text(
        '{"transaction_id": "a", "amount": 1.5, "timestamp": "2026-11-27T10:00:01Z"}\n')
    code = ("import sys\n"
            "from txpipe.cli import main\n"
            "code = main(['--source', 'file', '--input', 'in.jsonl', '--sink', 'jsonl',"
            " '--output', 'out/w', '--log-level', 'WARNING'])\n"
            "print('IPYTHON' if 'IPython' in sys.modules else 'NO IPYTHON')\n"
            "print('PRISM' if any('prism' in m for m in sys.modules) else 'NO PRISM')\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "read=1 valid=1" in proc.stdout
    assert proc.stdout.splitlines()[-2:] == ["NO IPYTHON", "NO PRISM"]


def test_the_fn_api_runner_gets_the_pipeline_options():
    """runners.runner_for builds the FnApiRunner as Beam's DirectRunner does, through the lab
    (txpipe.lab.fn_api — Beam internals: JobServiceHandle.encode_pipeline_options,
    fn_runner.ExtendedProvisionInfo)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from txpipe import runners

    options = PipelineOptions(["--runner", "FnApiRunner", "--direct_num_workers", "2"])
    runner = runners.runner_for(options)
    assert isinstance(runner, fn_runner.FnApiRunner)
    carried = runner._provision_info.provision_info.pipeline_options
    assert str(carried["beam:option:direct_num_workers:v1"]) == "2"
    assert runners.runner_for(PipelineOptions(["--runner", "DataflowRunner"])) is None


def test_outside_ipython_answers_no_and_leaves_nothing_behind():
    from apache_beam.utils import interactive_utils

    from txpipe import runners

    already = "IPython" in sys.modules
    with runners.outside_ipython():
        assert interactive_utils.is_in_ipython() is False
    assert ("IPython" in sys.modules) == already
    assert sys.modules.get("IPython", "absent") is not None
