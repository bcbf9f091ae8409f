"""cli.py and config.py: options, environment, precedence, validation, exit 2, log formats."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hf_support import WAIT, Daemon, Server, spawn

from hiperfifo import __version__
from hiperfifo.cli import resolve
from hiperfifo.config import EXCLUSIVE, OPTIONS, Config, ConfigError
from hiperfifo.engine import Easy
from hiperfifo.jobs import easy_options


def test_defaults_match_the_spec() -> None:
    """No flags, no environment: docs/daemon.md's defaults (json off a terminal)."""
    config = resolve([], {}, stdout_is_tty=False)
    assert config == Config()
    assert (config.max_total_connections, config.max_host_connections) == (64, 8)
    assert (config.connect_timeout, config.timeout, config.shutdown_timeout) == (300, 0, 30)
    assert (config.fifo, config.fifo_mode, config.output) == (Path("hiper.fifo"), 0o600, None)
    assert (config.log_format, config.log_level, config.max_url_length) == ("json", "info", 8192)


def test_console_format_on_a_terminal() -> None:
    """On a TTY the default format is console; with --log-file it stays json."""
    assert resolve([], {}, stdout_is_tty=True).log_format == "console"
    assert resolve(["--log-file", "x.log"], {}, stdout_is_tty=True).log_format == "json"


def test_every_option_reads_its_environment_variable() -> None:
    """Each option has HIPERFIFO_<NAME>; the command line wins over it."""
    env = {
        "HIPERFIFO_MAX_TOTAL_CONNECTIONS": "5",
        "HIPERFIFO_TIMEOUT": "2.5",
        "HIPERFIFO_OUTPUT": "/tmp/o",
        "HIPERFIFO_FIFO_MODE": "0620",
    }
    config = resolve(["--timeout", "7"], env, stdout_is_tty=False)
    assert config.max_total_connections == 5
    assert config.timeout == 7.0
    assert config.output == Path("/tmp/o")
    assert config.fifo_mode == 0o620
    assert {o.env for o in OPTIONS} >= {
        "HIPERFIFO_FIFO",
        "HIPERFIFO_LOG_FORMAT",
        "HIPERFIFO_SHUTDOWN_TIMEOUT",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-total-connections", "0"], "at least 1"),
        (["--max-host-connections", "x"], "not an integer"),
        (["--timeout", "-1"], "not be negative"),
        (["--connect-timeout", "nan"], "finite"),
        (["--fifo-mode", "999"], "octal"),
        (["--log-format", "xml"], "not one of"),
        (["--log-level", "loud"], "not one of"),
    ],
)
def test_bad_values_are_readable_config_errors(args: list[str], message: str) -> None:
    """Each bad value raises ConfigError naming the option and the problem."""
    with pytest.raises(ConfigError, match=message) as info:
        resolve(args, {}, stdout_is_tty=False)
    assert args[0] in str(info.value)


def test_bad_flag_and_bad_env_exit_2(tmp_path: Path) -> None:
    """A bad value from the command line or the environment: exit 2 with a message."""
    proc = spawn(["--fifo", str(tmp_path / "f"), "--max-total-connections", "0"])
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert b"--max-total-connections" in err
    proc = spawn(["--fifo", str(tmp_path / "f")], env={"HIPERFIFO_TIMEOUT": "abc"})
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert (
        err.decode().strip()
        == "hiperfifo: error: HIPERFIFO_TIMEOUT: not a number of seconds: 'abc'"
    )
    proc = spawn(["--no-such-flag"])
    proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HIPERFIFO_TIMEOUT": "abc"}, "HIPERFIFO_TIMEOUT: not a number of seconds: 'abc'"),
        ({"HIPERFIFO_MAX_TOTAL_CONNECTIONS": "0"}, "HIPERFIFO_MAX_TOTAL_CONNECTIONS: must be at"),
        ({"HIPERFIFO_TIMEOUT": "-1"}, "HIPERFIFO_TIMEOUT: must not be negative, got -1.0"),
        ({"HIPERFIFO_LOG_LEVEL": "loud"}, "HIPERFIFO_LOG_LEVEL: 'loud' is not one of"),
        ({"HIPERFIFO_FAIL": "maybe"}, "HIPERFIFO_FAIL: not a boolean (true/false): 'maybe'"),
        ({"HIPERFIFO_PROXY": "ftp://x:1"}, "HIPERFIFO_PROXY: only http:// proxies"),
        ({"HIPERFIFO_MAX_FILESIZE": "1T"}, "HIPERFIFO_MAX_FILESIZE: not a size in bytes"),
        ({"HIPERFIFO_DENY_NETWORK": "10.0.0.0/33"}, "HIPERFIFO_DENY_NETWORK: not a network"),
    ],
)
def test_a_bad_environment_variable_is_named_in_the_error(
    env: dict[str, str], message: str
) -> None:
    """A bad value read from the environment names the variable, not the flag."""
    with pytest.raises(ConfigError) as info:
        resolve([], env, stdout_is_tty=False)
    assert str(info.value).startswith(message)


def test_the_command_line_wins_and_is_named_when_it_is_bad() -> None:
    """A good flag over a bad variable is fine; a bad flag is named as the flag."""
    assert resolve(["--timeout", "3"], {"HIPERFIFO_TIMEOUT": "abc"}, False).timeout == 3.0
    with pytest.raises(ConfigError, match=r"^--timeout: not a number of seconds: 'x'"):
        resolve(["--timeout", "x"], {"HIPERFIFO_TIMEOUT": "3"}, stdout_is_tty=False)
    with pytest.raises(ConfigError, match=r"^--max-queued: must be at least 1, got 0"):
        resolve(["--max-queued", "0"], {}, stdout_is_tty=False)


@pytest.mark.parametrize(("first", "second"), EXCLUSIVE)
@pytest.mark.parametrize("where", ["flags", "env", "first from env", "second from env"])
def test_options_that_exclude_each_other_are_named_as_given(
    first: str, second: str, where: str
) -> None:
    """Every mutually exclusive pair (both switches): the error names each side as the user
    gave it, the flag or the HIPERFIFO_ variable, as for a bad value."""
    one, other = (next(o for o in OPTIONS if o.name == name) for name in (first, second))
    assert (one.is_switch, other.is_switch) == (True, True)
    env_first = where in ("env", "first from env")
    env_second = where in ("env", "second from env")
    argv = [o.flag for o, env in ((one, env_first), (other, env_second)) if not env]
    environ = {o.env: "true" for o, env in ((one, env_first), (other, env_second)) if env}
    named = (other.env if env_second else other.flag, one.env if env_first else one.flag)
    with pytest.raises(ConfigError) as info:
        resolve(argv, environ, stdout_is_tty=False)
    assert str(info.value) == f"{named[0]}: cannot be combined with {named[1]}"


def test_http1_1_and_prior_knowledge_from_the_environment_exit_2_naming_both(
    tmp_path: Path,
) -> None:
    """The whole daemon: one stderr line naming both variables, exit 2, no FIFO made."""
    env = {"HIPERFIFO_HTTP1_1": "1", "HIPERFIFO_HTTP2_PRIOR_KNOWLEDGE": "1"}
    proc = spawn(["--fifo", str(tmp_path / "f")], env=env)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert err.decode().strip().splitlines()[-1] == (
        "hiperfifo: error: HIPERFIFO_HTTP2_PRIOR_KNOWLEDGE: cannot be combined with "
        "HIPERFIFO_HTTP1_1"
    )
    assert not (tmp_path / "f").exists()


def test_version_and_help() -> None:
    """--version prints the version, --help lists every option and its variable; both exit 0."""
    proc = spawn(["--version"])
    out, _ = proc.communicate(timeout=20)
    assert (proc.returncode, out.decode().strip()) == (0, f"hiperfifo {__version__}")
    proc = spawn(["--help"])
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    for option in OPTIONS:
        assert option.flag in out.decode()
        assert option.env in out.decode()


def test_env_sets_limits_of_a_running_daemon(
    run_daemon: Callable[..., Daemon], http_server: Server
) -> None:
    """HIPERFIFO_MAX_TOTAL_CONNECTIONS=2 limits the real daemon; the flag overrides it."""
    env = {"HIPERFIFO_MAX_TOTAL_CONNECTIONS": "2"}
    daemon = run_daemon(env=env)
    assert daemon.events("daemon.started")[0]["max_total_connections"] == 2
    daemon.write("".join(f"{http_server.url(f'/slow/0.2?{i}')}\n" for i in range(6)).encode())
    daemon.wait_for("transfer.done", 6)
    assert http_server.peak <= 2
    daemon.write(b"stop\n")
    assert daemon.wait() == 0
    other = run_daemon("--max-total-connections", "3", env=env)
    assert other.events("daemon.started")[0]["max_total_connections"] == 3


def _run_with_format(tmp_path: Path, fmt: str, server: Server) -> list[str]:
    """Run the daemon logging to stdout in `fmt`; feed one URL, one junk token, stop."""
    fifo = tmp_path / f"{fmt}.fifo"
    proc = spawn(["--fifo", str(fifo), "--log-format", fmt])
    try:
        deadline = time.monotonic() + WAIT
        while not fifo.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with open(fifo, "wb") as writer:
            writer.write(f"{server.url('/a')} gopher://x\x1b[2J\nstop\n".encode())
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    return out.decode().splitlines()


def test_json_lines_each_load_with_timestamp_level_event(
    tmp_path: Path, http_server: Server
) -> None:
    """--log-format json on stdout: every line is a JSON object with timestamp, level, event."""
    lines = _run_with_format(tmp_path, "json", http_server)
    events = [json.loads(line) for line in lines]
    assert events[0]["event"] == "daemon.started"
    assert {"transfer.added", "transfer.done", "input.rejected", "daemon.stopped"} <= {
        e["event"] for e in events
    }
    for e in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", e["timestamp"])
        assert e["level"] in {"debug", "info", "warning", "error"}


@pytest.mark.parametrize("fmt", ["logfmt", "console"])
def test_text_formats_escape_control_characters(
    tmp_path: Path, http_server: Server, fmt: str
) -> None:
    """logfmt and console: one line per event, and an ESC from the FIFO is shown as \\x1b."""
    lines = _run_with_format(tmp_path, fmt, http_server)
    text = "\n".join(lines)
    assert "\x1b[2J" not in text
    assert "\\x1b" in text
    assert sum("transfer.done" in line for line in lines) == 1
    if fmt == "logfmt":
        assert all(
            line.startswith("timestamp=") and " level=" in line and " event=" in line
            for line in lines
        )


def test_journald_stream_gets_syslog_priority_prefixes(tmp_path: Path) -> None:
    """When $JOURNAL_STREAM names the log stream, lines start <6> (info) / <4> (warning)."""
    log = tmp_path / "journal.log"
    log.touch()
    st = log.stat()
    fifo = tmp_path / "j.fifo"
    env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    proc = spawn(["--fifo", str(fifo), "--log-file", str(log)], env=env)
    deadline = time.monotonic() + WAIT
    while not fifo.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(fifo, "wb") as writer:
        writer.write(b"gopher://x stop\n")
    proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    lines = log.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<6>", "<4>", "<6>", "<6>"]
    assert json.loads(lines[1][3:])["event"] == "input.rejected"


@pytest.mark.parametrize(
    ("argv", "env", "limit", "seconds"),
    [
        ([], {}, 0, 30),
        (["--speed-time", "7"], {}, 1, 7),
        ([], {"HIPERFIFO_SPEED_TIME": "7"}, 1, 7),
        (["--speed-time", "7", "--speed-limit", "100"], {}, 100, 7),
        (["--speed-limit", "100"], {}, 100, 30),
    ],
)
def test_speed_time_alone_means_a_limit_of_one_byte_a_second(
    argv: list[str], env: dict[str, str], limit: int, seconds: int
) -> None:
    """As curl's --speed-time: "If --speed-limit is not used, this option uses a speed limit
    of 1"; the default 30 s alone checks nothing."""
    config = resolve(argv, env, stdout_is_tty=False)
    assert (config.speed_limit, config.speed_time) == (limit, seconds)
    options = easy_options(config, {}, None)
    assert options.get("low_speed_limit", 0) == limit
    assert options.get("low_speed_time", 0) == (seconds if limit else 0)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--speed-time", "7"],
        ["--timeout", "2.5", "--fail", "--insecure", "--compressed", "--max-filesize", "9"],
        ["--http1.1"],
        ["--http2-prior-knowledge"],
        ["--speed-limit", "100", "--speed-time", "7"],
    ],
)
def test_easy_options_leave_out_only_what_equals_the_engine_defaults(argv: list[str]) -> None:
    """Every attempt's Easy ends up with every option of the command line, defaults included
    (--speed-time only with a --speed-limit: without one libcurl checks neither)."""
    config = resolve(argv, {}, stdout_is_tty=False)
    url = "http://127.0.0.1/"
    given = Easy(url, **easy_options(config, {}, None))
    full = Easy(
        url,
        follow_location=True,
        max_redirs=config.max_redirs,
        fail_on_error=config.fail,
        connect_timeout_ms=config.connect_timeout_ms,
        timeout_ms=config.timeout_ms,
        low_speed_limit=config.speed_limit,
        low_speed_time=config.speed_time if config.speed_limit else 0,
        verify=not config.insecure,
        ca_file=None,
        accept_encoding="" if config.compressed else None,
        max_filesize=config.max_filesize,
        proxy=config.proxy,
        noproxy=config.noproxy,
        proxy_env=None,  # an empty proxy environment is none
        network_policy=None,
        http_version=config.http_version,
    )
    names = [n for n in dir(full) if not n.startswith("_") and not callable(getattr(full, n))]
    names.remove("info")  # each Easy's own Handle (its attributes are compared as the Easy's)
    assert {n: getattr(given, n) for n in names} == {n: getattr(full, n) for n in names}
