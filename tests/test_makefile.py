"""The Makefile's two commands: `make run` installs the runtime only, `make test` the tools too.

Read with `make -n` (what make would run, in order) into a venv path that does not exist,
so nothing is installed and the whole recipe chain shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def planned(target: str, venv: Path) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("needs make (Debian package make)")
    # Not the MAKEFLAGS of a `make test ARGS=...` running this test: its ARGS would leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, f"VENV={venv}", "ARGS="],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    return [line for line in done.stdout.splitlines() if not line.startswith("make")]


def test_make_run_installs_the_runtime_only(tmp_path: Path) -> None:
    """pyuv and the package with its runtime dependencies; no [dev] extra (pytest, mypy, ruff)."""
    steps = planned("run", tmp_path / "venv")
    installs = [step for step in steps if "pip install" in step]
    assert any('"pyuv==1.4.0"' in step for step in installs)
    assert any(step.endswith("pip install -e .") for step in installs)
    assert not any("[dev]" in step for step in installs)
    assert steps[-1].endswith("/bin/hiperfifo ")


def test_make_test_installs_the_dev_tools(tmp_path: Path) -> None:
    """make test builds on the runtime install and adds the [dev] extra before pytest."""
    steps = planned("test", tmp_path / "venv")
    dev = next(i for i, step in enumerate(steps) if "'.[dev]'" in step)
    runtime = next(i for i, step in enumerate(steps) if step.endswith("pip install -e ."))
    assert runtime < dev < len(steps) - 1
    assert "bin/pytest" in steps[-1]


def test_make_test_compiled_builds_out_of_the_tree_into_its_own_venv(tmp_path: Path) -> None:
    """The mypyc build: a copy of the tree under build/, a non-editable install into the
    venv's -mypyc sibling, then the suite with the source tree kept off sys.path."""
    venv = tmp_path / "venv"
    steps = planned("test-compiled", venv)
    build = next(step for step in steps if "HIPERFIFO_MYPYC=1" in step)
    assert build.startswith("cd build/mypyc-venv && ")
    assert f"{venv}-mypyc/bin/pip install --no-build-isolation --no-deps ." in build
    assert not any("HIPERFIFO_MYPYC=1" in step and "-e" in step.split() for step in steps)
    assert steps[-1] == f"HIPERFIFO_TEST_COMPILED=1 PYTHONSAFEPATH=1 {venv}-mypyc/bin/pytest "
