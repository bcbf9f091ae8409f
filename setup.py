"""The engine compiled by mypyc, only when asked: HIPERFIFO_MYPYC=1 on a non-editable build.

Everything else (`pip install -e .`, the README's two commands, a machine without a C
compiler) installs the pure-Python package, which is also the fallback: the compiled modules
are the same source. `make compiled` builds from a copy of the tree in build/ into its own
venv, so no .so ever sits beside a .py it would shadow (docs/engine.md, "Compiled with mypyc").
The module list is build-support/mypyc.txt.
"""

import os
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
EDITABLE = {"develop", "editable_wheel"}


def compiled_modules() -> list[str]:
    text = (HERE / "build-support" / "mypyc.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def ext_modules() -> list:  # type: ignore[type-arg]
    if os.environ.get("HIPERFIFO_MYPYC") != "1" or os.environ.get("HIPERFIFO_PURE") == "1":
        return []
    if EDITABLE & set(sys.argv):
        sys.exit("HIPERFIFO_MYPYC=1: refusing an editable install (the .so would shadow the .py)")
    from mypyc.build import mypycify

    return mypycify(compiled_modules(), opt_level="3")


setup(ext_modules=ext_modules())
