"""bench/ stays untangled (issue 14): no import cycle, no reassigned module globals, no
sys.path edits (the soak has its own servers), and the command line still parses."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
# The Redis bench (redis helper's, self-contained) borrows tests/daemon/redis_support.py for
# now; to be given its own Redis starter like soak's misbehaving.py. Nothing else may.
SYS_PATH_TOLERATED = {"redis_streams"}


def _trees() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(BENCH.glob("*.py"))}


def _bench_imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "bench":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("bench.")}
    return found


def test_bench_modules_import_each_other_without_a_cycle() -> None:
    graph = {name: _bench_imports(tree) for name, tree in _trees().items()}
    assert {"harness", "contenders", "report", "workspace"} <= set(graph)
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle in bench/: {' -> '.join((*path, name))}"
        if name in done:
            return
        for other in graph.get(name, ()):
            visit(other, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_bench_reassigns_no_module_global_and_leaves_sys_path_alone() -> None:
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            assert not isinstance(node, ast.Global), f"bench/{name}.py line {node.lineno}"
        if name in SYS_PATH_TOLERATED:
            continue
        assert "sys.path" not in ast.unparse(tree), f"bench/{name}.py edits sys.path"


def test_bench_command_line_parses_with_a_baseline() -> None:
    """In a process of its own, started as `make bench` starts it (from the repository)."""
    script = """if True:
        from pathlib import Path
        from bench import run
        args = run.parse(["--baseline", "HEAD", "--runs", "1", "--settle", "0"])
        assert (args.baseline, args.runs, args.settle) == ("HEAD", 1, 0), args
        here = Path(".")
        both = run.interleave(
            [run.Contender("engine-pyuv", here), run.Contender("aiohttp", here)],
            [run.Contender("engine-pyuv", here, "abc1234")],
        )
        print([c.name for c in both])
    """
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=99,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['engine-pyuv', 'engine-pyuv @abc1234', 'aiohttp']"
