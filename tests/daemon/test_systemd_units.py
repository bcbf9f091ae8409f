"""The systemd units, checked offline by systemd-analyze (no systemd as PID 1 needed).

`.ci/systemd-check` does the work (`make systemd-check` runs it too): `verify`
must print nothing, the service's exposure must stay <= 2.0. It needs Debian's
`systemd` package for `systemd-analyze`; without it the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package: systemd)",
)


@needs_systemd_analyze
def test_units_verify_clean_and_exposure_at_most_2() -> None:
    """systemd-analyze verify prints nothing on both units; security rates the service <= 2.0."""
    hiperfifo = Path(sys.executable).parent / "hiperfifo"
    assert hiperfifo.exists(), f"{hiperfifo} missing: the console script of this install"
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "systemd-check")],
        env={**os.environ, "HIPERFIFO_BIN": str(hiperfifo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "systemd-analyze verify: clean" in done.stdout
    assert "Overall exposure level for hiperfifo.service" in done.stdout
