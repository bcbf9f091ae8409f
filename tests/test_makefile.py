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
