"""The plan of the house: imports flow one way (import-linter contracts in
.importlinter), no project import hides inside a function, and the CLI
starts without loading torch."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestration", "tasks", "worker", "monitoring")
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / ".importlinter"), "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=300)


def test_import_contracts_are_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("worker/io.py", "import orchestration.cli", "commands > tools"),           # compute importing the CLI
    ("orchestration/jobs.py", "import tasks.canvas", "commands > tools"),      # infrastructure importing an executor
    ("worker/mask.py", "import worker.pipeline.graph", "worker: the pipeline"),  # compute importing the core
    ("worker/pipeline/steps.py", "import boto3", "knows no executor"),          # the core reaching for S3
    ("worker/registry.py", "import worker.inpaint", "No import cycles"),        # a cycle
])
def test_contracts_catch_a_violation(tmp_path, module, line, broken):
    """Control: the same contracts fail on a copy of the tree with one bad import."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout
    assert broken in result.stdout.split("Broken contracts")[-1], result.stdout[-3000:]


def _function_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            names = ([inner.module or ""] if isinstance(inner, ast.ImportFrom) and not inner.level
                     else [a.name for a in inner.names] if isinstance(inner, ast.Import) else [])
            if isinstance(inner, ast.ImportFrom) and inner.level:
                names = ["(relative)"]
            found += [f"{path.relative_to(ROOT)}:{inner.lineno} {n}" for n in names
                      if n.split(".")[0] in PACKAGES or n == "(relative)"]
    return found


def test_no_project_import_inside_a_function():
    """Heavy third-party libraries (torch, spandrel, diffusers) may be imported
    lazily; the project's own modules never are: the dependency graph is the
    one import-linter sees."""
    hidden = [hit for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
              for hit in _function_imports(path)]
    assert hidden == []


def test_cli_starts_without_torch():
    code = ("import sys, orchestration.cli as cli; cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'spandrel', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
