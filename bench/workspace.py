"""Where the measured code comes from: the repository, a commit, a frozen snapshot to run from."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "bench" / "README.md"


def git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return out.stdout.strip()


def resolve(ref: str) -> str:
    """The full commit id of REF (one commit for the snapshot and the text, whatever lands)."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", ref + "^{commit}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def describe(ref: str | None = None) -> str:
    """The commit measured, and whether hiperfifo/ in the work tree differs from it."""
    commit = git("rev-parse", "--short", ref or "HEAD") or "?"
    if ref is not None:
        return commit
    return commit + (" + local changes" if git("status", "--porcelain", "--", "hiperfifo") else "")


def snapshot(ref: str | None) -> Path:
    """A frozen copy of hiperfifo/ (the work tree's, or git REF's) and of bench/, to run from.

    Contenders import hiperfifo from it (they start with it as their working
    directory), so edits and commits made while the benchmark runs do not
    change what is measured half-way. bench/ always comes from the work tree:
    a baseline commit is driven by today's clients, so both sides run the
    same workloads the same way. Remove it with `shutil.rmtree` when done.
    """
    snap = Path(tempfile.mkdtemp(prefix="hiperfifo-bench-code-"))
    if ref is None:
        shutil.copytree(ROOT / "hiperfifo", snap / "hiperfifo")
    else:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "hiperfifo"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive.stdout, check=True)
    (snap / "bench").mkdir()
    for source in (ROOT / "bench").glob("*.py"):
        shutil.copy2(source, snap / "bench" / source.name)
    return snap
