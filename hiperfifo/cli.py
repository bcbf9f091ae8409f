"""The command line: argv and HIPERFIFO_* environment → Config → daemon → exit status.

Owns the only reads of argv and os.environ (the daemon gets the mapping for
systemd's variables and removes LISTEN_* from it) and the mapping of startup
problems to exit status 2. It knows nothing about the loop or the engine.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from hiperfifo import __version__
from hiperfifo.config import OPTIONS, Config, ConfigError, build
from hiperfifo.send import PIPE_BUF, send

EXIT_USAGE = 2

_EPILOG = """\
Every option can also be set from the environment as HIPERFIFO_<NAME>
(e.g. HIPERFIFO_MAX_TOTAL_CONNECTIONS=16); the command line wins.
Write URLs (whitespace-separated) into the FIFO; the word `stop` drains and exits.
Several writers at once: `hiperfifo send [--fifo PATH] [URL ...]` (see --help there).
Exit status: 0 clean stop, 1 internal error, 2 bad usage or FIFO path, 130 aborted."""


def parser() -> argparse.ArgumentParser:
    """The argparse parser: every option of config.OPTIONS, defaults left to config."""
    p = argparse.ArgumentParser(
        prog="hiperfifo",
        description="Fetch the URLs written into a named pipe (libcurl's hiperfifo.c, as a "
        "daemon).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in OPTIONS:
        default = option.default if option.default is not None else _special_default(option.name)
        if option.is_switch:
            p.add_argument(
                option.flag,
                dest=option.name,
                action="store_const",
                const="true",
                default=None,
                help=f"{option.help} (env {option.env}=true)",
            )
            continue
        p.add_argument(
            option.flag,
            dest=option.name,
            metavar=option.metavar,
            default=None,
            action="append" if option.repeat else "store",
            help=f"{option.help} (default: {default}; env {option.env})",
        )
    p.add_argument("--version", action="version", version=f"hiperfifo {__version__}")
    return p


def _special_default(name: str) -> str:
    return {
        "log_format": "json, console on a terminal",
        "log_file": "stdout",
        "redis": "none, the FIFO only",
        "redis_consumer": "the host name",
        "cacert": "the system's CAs",
        "redis_cacert": "the system's CAs",
    }.get(name, "-")


def resolve(argv: Sequence[str] | None, environ: Mapping[str, str], stdout_is_tty: bool) -> Config:
    """Command line over environment over defaults; raises ConfigError, SystemExit(2)."""
    args = vars(parser().parse_args(argv))
    raw: dict[str, str | None] = {}
    env_given: set[str] = set()  # options whose value came from HIPERFIFO_*: errors name it
    for option in OPTIONS:
        from_env = environ.get(option.env) or None
        given = args[option.name]
        if isinstance(given, list):  # a repeatable option: every value, joined by commas
            given = ",".join(given)
        if given is None and from_env is not None:
            env_given.add(option.name)
        raw[option.name] = given if given is not None else from_env
    if raw["log_format"] is None:
        raw["log_format"] = "console" if stdout_is_tty and raw["log_file"] is None else "json"
    return build(raw, proxy_environ(environ), from_env=env_given)


PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
)


def proxy_environ(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The proxy variables curl reads (not HTTP_PROXY: a CGI server sets it from a header)."""
    return tuple((name, environ[name]) for name in PROXY_VARIABLES if environ.get(name))


def send_parser() -> argparse.ArgumentParser:
    """`hiperfifo send [--fifo PATH] [URL ...]`."""
    p = argparse.ArgumentParser(
        prog="hiperfifo send",
        description="Write URLs into the daemon's FIFO, whole lines only, each write at most "
        f"PIPE_BUF ({PIPE_BUF}) bytes: any number of writers at once never cut each other's "
        "URLs (two plain `cat`s can). Waits while the pipe is full.",
        epilog="Exit status: 0 all written, 1 the FIFO is missing or not a FIFO, a URL was "
        f"longer than {PIPE_BUF - 1} bytes (refused, the others are written), or the reader "
        "went away.",
    )
    p.add_argument(
        "--fifo",
        metavar="PATH",
        default=None,
        help="the daemon's named pipe (default: $HIPERFIFO_FIFO, else hiper.fifo)",
    )
    p.add_argument(
        "urls",
        nargs="*",
        metavar="URL",
        help="URLs (or `stop`) to write; none: read them from stdin, one or more per line",
    )
    return p


def main_send(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """`hiperfifo send`: the exit status."""
    args = send_parser().parse_args(argv)
    fifo = args.fifo or environ.get("HIPERFIFO_FIFO") or "hiper.fifo"
    return send(Path(fifo), list(args.urls), sys.stdin.fileno(), sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hiperfifo` and `python -m hiperfifo`; returns the exit status.

    `hiperfifo send ...` writes URLs into the FIFO; anything else runs the daemon.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["send"]:
        return main_send(args[1:], os.environ)
    try:
        config = resolve(args, os.environ, sys.stdout.isatty())
    except ConfigError as exc:
        print(f"hiperfifo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from hiperfifo.daemon import run  # the loop and the engine only once the options are good

    return run(config, os.environ)  # systemd's variables: NOTIFY_SOCKET, LISTEN_FDS...
