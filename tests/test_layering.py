"""The dependency direction of docs/architecture.md, checked by reading the source (ast).

engine/ imports only the stdlib, h11 and h2 (h2 in engine/http2.py alone); sources/
imports neither the engine nor pyuv nor the daemon's rooms; only driver.py imports pyuv;
only logs.py configures structlog; only cli.py and config.py read the environment or argv.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hiperfifo"
ENGINE = PACKAGE / "engine"
SOURCES = PACKAGE / "sources"


def sources(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def rel(path: Path) -> str:
    try:
        return path.relative_to(PACKAGE.parent).as_posix()
    except ValueError:
        return path.as_posix()


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import in `path`, relative ones resolved."""
    package = ".".join(Path(rel(path)).with_suffix("").parts[:-1])
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from hiperfifo import daemon` imports a module
                yield node.lineno, f"{module}.{alias.name}"


def top(name: str) -> str:
    return name.split(".")[0]


def test_sources_found() -> None:
    """The scan sees the package and the engine (an empty scan would prove nothing)."""
    assert (ENGINE / "__init__.py") in sources()
    assert len(sources(ENGINE)) >= 5


def engine_import_violations(root: Path) -> list[str]:
    """Imports under `root` that are not the stdlib, h11, h2 or hiperfifo.engine."""
    allowed = set(sys.stdlib_module_names) | {"h11", "h2", "__future__"}
    bad = []
    for path in sources(root):
        for line, name in imported_modules(path):
            if name.startswith("hiperfifo."):
                if not (name == "hiperfifo.engine" or name.startswith("hiperfifo.engine.")):
                    bad.append(f"{rel(path)}:{line} imports {name}")
            elif name == "hiperfifo":
                bad.append(f"{rel(path)}:{line} imports hiperfifo")
            elif top(name) not in allowed:  # `from h11 import Request`: "h11" counts
                bad.append(f"{rel(path)}:{line} imports {name}")
    return bad


def test_engine_imports_only_stdlib_h11_and_h2() -> None:
    """Every import in hiperfifo/engine is the stdlib, h11, h2, or the engine itself."""
    assert engine_import_violations(ENGINE) == []


def test_only_http2_imports_h2() -> None:
    """h2 (and its hpack/hyperframe) is imported by engine/http2.py alone, as h11 by http1.py."""
    importers = {
        rel(path)
        for path in sources()
        for _line, name in imported_modules(path)
        if top(name) in ("h2", "hpack", "hyperframe")
    }
    assert importers == {"hiperfifo/engine/http2.py"}


def test_the_engine_imports_h2_only_when_a_connection_speaks_it() -> None:
    """`import hiperfifo.engine` (and the rooms an HTTP/1.1 transfer runs through) leave
    h2/hpack/hyperframe unimported: they cost ~40% of the engine's start-up. A Shared (an
    HTTP/2 connection) imports http2 when it is made."""
    code = (
        "import sys\n"
        "import hiperfifo.engine, hiperfifo.engine.transfer, hiperfifo.engine.runner\n"
        "import hiperfifo.engine.shared, hiperfifo.engine.stream\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('h2', 'hpack', 'hyperframe')"
        " or m == 'hiperfifo.engine.http2'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_engine_import_check_catches_a_violation(tmp_path: Path) -> None:
    """The check itself works: a planted `import structlog` and `from hiperfifo import daemon`
    in an engine module are reported."""
    planted = tmp_path / "engine"
    planted.mkdir()
    (planted / "bad.py").write_text("import structlog\nfrom hiperfifo import daemon\nimport ssl\n")
    found = engine_import_violations(planted)
    assert any("structlog" in hit for hit in found)
    assert any("hiperfifo.daemon" in hit for hit in found)
    assert not any("ssl" in hit for hit in found)


def source_import_violations(root: Path) -> list[str]:
    """Imports under `root` of the engine, the driver, pyuv, or the daemon's own rooms."""
    allowed = {"hiperfifo.sources", "hiperfifo.redact"}
    bad = []
    for path in sources(root):
        for line, name in imported_modules(path):
            inside = any(name == ok or name.startswith(ok + ".") for ok in allowed)
            if (name.startswith("hiperfifo.") and not inside) or top(name) == "pyuv":
                bad.append(f"{rel(path)}:{line} imports {name}")
    return bad


def test_sources_import_neither_the_engine_nor_the_daemon() -> None:
    """hiperfifo/sources imports no engine, no pyuv and no daemon room: a source hands
    items to an Inbox and gets the loop through a Protocol (sources/base.py)."""
    assert source_import_violations(SOURCES) == []


def test_source_import_check_catches_a_violation(tmp_path: Path) -> None:
    """The check itself works: the engine, pyuv and the jobs are reported, base is not."""
    planted = tmp_path / "sources"
    planted.mkdir()
    (planted / "bad.py").write_text(
        "from hiperfifo.engine import Code\nimport pyuv\nfrom hiperfifo import jobs\n"
        "from hiperfifo.sources.base import Url\n"
    )
    found = " ".join(source_import_violations(planted))
    for name in ("hiperfifo.engine", "pyuv", "hiperfifo.jobs"):
        assert f"imports {name}" in found
    assert "sources.base" not in found


def test_no_class_outside_the_engine_over_300_lines() -> None:
    """Every class in hiperfifo/ outside engine/ fits in 300 lines (issue 14: the Daemon was
    524; its rooms are intake, jobs, retry, systemd and the sources)."""
    sizes = {
        f"{rel(path)}:{node.lineno} {node.name}": node.end_lineno - node.lineno + 1
        for path in sources()
        if ENGINE not in path.parents
        for node in ast.walk(parse(path))
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None
    }
    assert {where: lines for where, lines in sizes.items() if lines > 300} == {}
    assert any(lines > 150 for lines in sizes.values())  # the scan saw real classes


def test_daemon_rooms_import_without_pyuv() -> None:
    """intake, jobs (easy_options), retry, journal, systemd and the FIFO source load where
    pyuv is absent: only driver.py (and daemon.py, which builds it) need it."""
    code = (
        "import sys\n"
        "sys.modules['pyuv'] = None\n"
        "import hiperfifo.intake, hiperfifo.jobs, hiperfifo.retry, hiperfifo.journal\n"
        "import hiperfifo.systemd, hiperfifo.sources.fifo, hiperfifo.cli\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_architecture_doc_names_every_daemon_room() -> None:
    """docs/architecture.md names every module of the daemon (hiperfifo/ outside engine/);
    a package below sources/ (sources/redis/) may be named as a whole."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rooms = {
        path.relative_to(PACKAGE).as_posix()
        if path.parent in (PACKAGE, SOURCES)
        else path.parent.relative_to(PACKAGE).as_posix() + "/"
        for path in sources()
        if ENGINE not in path.parents and path.name not in ("__init__.py", "__main__.py")
    }
    assert "sources/fifo.py" in rooms
    missing = [room for room in sorted(rooms) if f"`{room}`" not in doc]
    assert missing == []


def test_only_driver_imports_pyuv() -> None:
    """pyuv is imported by hiperfifo/driver.py and nowhere else."""
    users = {
        rel(path)
        for path in sources()
        for _, name in imported_modules(path)
        if top(name) == "pyuv"
    }
    assert users <= {"hiperfifo/driver.py"}


def _calls_structlog_configure(tree: ast.Module) -> bool:
    imported_configure = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "structlog"
        and any(alias.name == "configure" for alias in node.names)
        for node in ast.walk(tree)
    )
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "configure"
            and isinstance(func.value, ast.Name)
            and func.value.id == "structlog"
        ):
            return True
        if isinstance(func, ast.Name) and func.id == "configure" and imported_configure:
            return True
    return False


def test_only_logs_configures_structlog() -> None:
    """structlog.configure() is called in hiperfifo/logs.py only."""
    callers = {rel(path) for path in sources() if _calls_structlog_configure(parse(path))}
    assert callers <= {"hiperfifo/logs.py"}


def test_engine_does_not_use_structlog_or_logging_config() -> None:
    """The engine does not log: no structlog and no logging configuration in engine/."""
    for path in sources(ENGINE):
        names = {top(name) for _, name in imported_modules(path)}
        assert "structlog" not in names, rel(path)


ENVIRONMENT_READS = {("os", "environ"), ("os", "environb"), ("os", "getenv"), ("sys", "argv")}


def _reads_environment(path: Path) -> list[str]:
    tree = parse(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in ENVIRONMENT_READS:
                found.append(f"{rel(path)}:{node.lineno} {node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "sys"):
            for alias in node.names:
                if (node.module, alias.name) in ENVIRONMENT_READS:
                    found.append(
                        f"{rel(path)}:{node.lineno} from {node.module} import {alias.name}"
                    )
    return found


def test_only_cli_and_config_read_environment_or_argv() -> None:
    """os.environ, os.getenv and sys.argv appear in hiperfifo/cli.py and config.py only."""
    allowed = {"hiperfifo/cli.py", "hiperfifo/config.py"}
    found = [
        hit for path in sources() if rel(path) not in allowed for hit in _reads_environment(path)
    ]
    assert found == []


def test_engine_never_waits() -> None:
    """No sleep, select or selectors in the engine, except the test driver (testing.py);
    connection.py may ask select.poll whether its socket is readable, never waiting (every
    .poll() call there has the timeout 0)."""
    bad = []
    for path in sources(ENGINE):
        if path.name == "testing.py":
            continue
        may_poll = path.name == "connection.py" and _polls_without_waiting(path)
        for line, name in imported_modules(path):
            if top(name) in ("select", "selectors", "asyncio") and not (
                may_poll and name == "select"
            ):
                bad.append(f"{rel(path)}:{line} imports {name}")
        for node in ast.walk(parse(path)):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "sleep"
                and isinstance(node.value, ast.Name)
                and node.value.id == "time"
            ):
                bad.append(f"{rel(path)}:{node.lineno} time.sleep")
    assert bad == []


def _polls_without_waiting(path: Path) -> bool:
    """Every `.poll(...)` call in `path` (but making one: `select.poll()`) passes exactly
    the literal 0, and there is one."""
    calls = [
        node
        for node in ast.walk(parse(path))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "poll"
        and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "select")
    ]
    return bool(calls) and all(
        not call.keywords
        and len(call.args) == 1
        and isinstance(call.args[0], ast.Constant)
        and call.args[0].value == 0
        for call in calls
    )


def test_engine_imports_without_pyuv_or_structlog() -> None:
    """`import hiperfifo.engine` and its test driver work where pyuv and structlog are absent."""
    code = (
        "import sys\n"
        "for name in ('pyuv', 'structlog'): sys.modules[name] = None\n"
        "import hiperfifo.engine, hiperfifo.engine.testing\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('pyuv', 'structlog')"
        " and sys.modules[n] is not None))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# Rooms of the engine that decide in pure code: no sockets, no TLS, no threads, no clock read.
PURE_ENGINE = (
    "chunked",
    "deadlines",
    "http1_head",
    "limits",
    "pending",
    "pool",
    "request",
    "timer",
)
IMPURE = {"socket", "ssl", "threading", "selectors", "select", "time"}


def test_pure_engine_rooms_do_no_io() -> None:
    """The engine's pure rooms import nothing that does I/O, runs threads or reads a clock."""
    bad = [
        f"{rel(path)}:{line} imports {name}"
        for path in (ENGINE / f"{room}.py" for room in PURE_ENGINE)
        for line, name in imported_modules(path)
        if top(name) in IMPURE
    ]
    assert bad == []


def test_no_engine_class_over_300_lines() -> None:
    """Every class in hiperfifo/engine fits in 300 lines (issue 14: rooms a newcomer can hold)."""
    sizes = {
        f"{rel(path)}:{node.lineno} {node.name}": node.end_lineno - node.lineno + 1
        for path in sources(ENGINE)
        for node in ast.walk(parse(path))
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None
    }
    assert {where: lines for where, lines in sizes.items() if lines > 300} == {}
    assert any(lines > 100 for lines in sizes.values())  # the scan saw real classes
