"""The mypyc build (`make compiled`, `make test-compiled`): what runs is the build we think.

`make test` runs the pure package; `make test-compiled` the same suite against the compiled
one (HIPERFIFO_TEST_COMPILED=1). Either way every module of build-support/mypyc.txt is of
one kind, the daemon a test starts gets the same kind, and the compiled modules keep the
one rule mypyc needs of their source.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "build-support" / "mypyc.txt"


def listed() -> list[str]:
    """The compiled modules' paths, as setup.py reads them."""
    lines = (line.strip() for line in LIST.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def is_compiled(name: str) -> bool:
    origin = importlib.import_module(name).__file__ or ""
    return origin.endswith(tuple(EXTENSION_SUFFIXES))


def test_the_list_names_engine_modules_that_exist() -> None:
    """Every listed path is an engine module (a stale line would silently compile nothing)."""
    paths = listed()
    assert len(paths) > 10
    for path in paths:
        assert path.startswith("hiperfifo/engine/"), path
        assert (ROOT / path).is_file(), path


def test_every_listed_module_is_of_the_build_under_test() -> None:
    """All compiled under `make test-compiled`, all pure otherwise: never a mix."""
    kinds = {module_name(path): is_compiled(module_name(path)) for path in listed()}
    want = os.environ.get("HIPERFIFO_TEST_COMPILED") == "1"
    assert kinds == dict.fromkeys(kinds, want)


def test_a_daemon_started_from_the_repository_gets_the_same_build() -> None:
    """`python -m hiperfifo` run from the source tree (as the daemon tests start it) imports
    the engine the tests import, not the .py files of the tree beside a compiled install."""
    code = "import hiperfifo.engine.runner as m; print(m.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == importlib.import_module("hiperfifo.engine.runner").__file__


def test_compiled_modules_chain_exceptions_with_caused() -> None:
    """No `raise X from Y` in a compiled module: mypyc drops the `from` (the cause is lost);
    they write `raise caused(X, Y)` (engine/codes.py), which works compiled and pure."""
    found = []
    for path in listed():
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.cause is not None:
                found.append(f"{path}:{node.lineno}")
    assert found == []
