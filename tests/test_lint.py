"""ruff and mypy over the project, as part of the test suite: CI runs the README's test command and
nothing else, so a lint finding or a type error fails the build there like any other test.

Both tools read their settings from pyproject.toml ([tool.ruff], [tool.mypy]); they run as the
venv's own executables from the project root, so the result does not depend on the caller's folder
or PATH.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / tool
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: run bin/setup (it installs the test extras)")
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    done = _run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, f"ruff check found problems:\n{done.stdout}{done.stderr}"


def test_mypy_finds_nothing():
    # the packages to check are listed in pyproject.toml ([tool.mypy] files); the cache lives in
    # the project's .mypy_cache, which keeps a second run quick
    done = _run("mypy")
    assert done.returncode == 0, f"mypy found problems:\n{done.stdout}{done.stderr}"
