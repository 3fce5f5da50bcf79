"""The runtime stands apart from the lab: what Dataflow workers install (``pip install txpipe``,
no extras) runs and exports jobs without the lab's packages, never imports ``txpipe.lab``, and
its modules import each other without cycles."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "txpipe"
#: What only the lab (notebooks, demo, local stack) may need.
LAB_ONLY = ("rich", "matplotlib", "pandas", "IPython", "ipywidgets", "jupyterlab",
            "notebook", "nbconvert", "psutil", "facets_overview", "txpipe.lab", "simulator")


def runtime_modules() -> dict[str, Path]:
    modules = {}
    for path in RUNTIME.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        if rel.parts[:2] == ("txpipe", "lab"):
            continue
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    return modules


def imports_of(path: Path) -> set[str]:
    """Every module an ``import`` statement names, at any depth (function-level included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


#: The one place the runtime looks for the lab: an import guarded by ``except ImportError``.
LAB_LOOKUP = "txpipe.runners"


def _is_lab_module(name: str | None) -> bool:
    return bool(name) and (name == "txpipe.lab" or name.startswith("txpipe.lab."))


def _is_lab(name: str) -> bool:
    return any(name == lab or name.startswith(lab + ".") for lab in LAB_ONLY)


def test_runtime_modules_never_import_the_lab_or_its_packages():
    offenders = {}
    for name, path in runtime_modules().items():
        bad = {i for i in imports_of(path) if _is_lab(i)}
        if name == LAB_LOOKUP:
            bad = {i for i in bad if not _is_lab_module(i) and not i.startswith("txpipe.lab.")}
        if bad:
            offenders[name] = sorted(bad)
    assert not offenders


def test_the_lab_is_looked_up_by_one_guarded_import():
    tree = ast.parse(runtime_modules()[LAB_LOOKUP].read_text())
    guarded = [node for node in ast.walk(tree) if isinstance(node, ast.Try)
               and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError"
                       for h in node.handlers)
               and any(isinstance(i, ast.ImportFrom) and _is_lab_module(i.module)
                       for i in node.body)]
    lab_imports = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and node.module and _is_lab_module(node.module)]
    assert len(guarded) == 1 and all(i in guarded[0].body for i in lab_imports)


def test_runtime_modules_import_each_other_without_cycles():
    modules = runtime_modules()
    graph = {name: {i for i in imports_of(path) if i in modules and i != name}
             for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    for name in graph:
        graph[name] = {d for d in graph[name] if not d.startswith(name + ".")}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(node):] + [node]))
        if node in done:
            return
        for dep in sorted(graph[node]):
            visit(dep, [*trail, node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])


def test_the_runtime_dependency_list_holds_none_of_the_labs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    for package in ("jupyterlab", "matplotlib", "rich", "pandas", "interactive", "nbval"):
        assert package not in runtime, package
    assert "txpipe[lab]" in project["optional-dependencies"]["dev"]


_BLOCKER = """
import importlib.abc, runpy, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: lab only)")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["txpipe", *{argv!r}]
runpy.run_module("txpipe", run_name="__main__")
"""


def _runtime_only(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = _BLOCKER.format(blocked=LAB_ONLY, argv=argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PUBSUB_EMULATOR_HOST", None)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.subprocess
def test_run_and_export_job_work_without_the_lab(tmp_path):
    lines = [b'{"transaction_id": "a", "amount": 12.5, "timestamp": "2026-11-27T10:00:01Z"}',
             b'{"transaction_id": "b", "amount": 7, "timestamp": "2026-11-27T10:00:31+00:00"}',
             b'not json']
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    proc = _runtime_only(["run", "--source", "file", "--input", "in.jsonl", "--sink", "jsonl",
                          "--output", "out/windows"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "read=3 valid=2" in proc.stdout
    rows = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("windows-replay-")]
    assert sum(len(p.read_text().splitlines()) for p in rows) == 2

    proc = _runtime_only(["export-job", "--output", "job", "--streaming"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "job" / "template.json").is_file()
    # What workers pip-install: the staged sdist asks for the runtime's dependencies only.
    with tarfile.open(tmp_path / "job" / "workflow.tar.gz") as sdist:
        (info,) = [m for m in sdist.getmembers() if m.name.count("/") == 1
                   and m.name.endswith("/PKG-INFO")]
        metadata = sdist.extractfile(info).read().decode()
    required = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert required and not any(p in " ".join(required).lower()
                                for p in ("jupyterlab", "matplotlib", "rich", "pandas"))
