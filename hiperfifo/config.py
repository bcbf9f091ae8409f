"""Config: every option of the daemon, its default, how it is parsed and validated.

Owns the table of options (shared by the command line and the environment)
and the frozen `Config` value. Reads neither argv nor the environment itself:
cli.py hands it strings; a bad value raises ConfigError with a readable message.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hiperfifo.redact import redact

if TYPE_CHECKING:
    from hiperfifo.retry import RetryPolicy

LOG_FORMATS = ("json", "logfmt", "console")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ENV_PREFIX = "HIPERFIFO_"


class ConfigError(ValueError):
    """A bad option value; the message names the option and the problem.

    `option` and `problem` are set when the check knew which option it judged, so
    build() can name it as the user gave it (the flag, or the HIPERFIFO_ variable).
    """

    def __init__(
        self, message: str, option: str | None = None, problem: str = "", other: str = ""
    ) -> None:
        super().__init__(message)
        self.option = option
        self.problem = problem or message
        self.other = other  # the option `option` cannot be combined with (EXCLUSIVE)


def _flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _exclusive(name: str, other: str) -> ConfigError:
    """`name` was given with `other` (a pair of EXCLUSIVE); build() names both as given."""
    problem = f"cannot be combined with {_BY_NAME[other].flag}"
    return ConfigError(f"{_BY_NAME[name].flag}: {problem}", name, problem, other)


def _bad(name: str, problem: str) -> ConfigError:
    """The error for option `name` (as its flag; build() may name the variable instead)."""
    return ConfigError(f"{_flag_of(name)}: {problem}", option=name, problem=problem)


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ConfigError(f"not an octal mode: {text!r}") from None
    if not 0 <= value <= 0o7777:
        raise ConfigError(f"mode out of range: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"not an integer: {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"not a finite number of seconds: {text!r}")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ConfigError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"not a boolean (true/false): {text!r}")


def _path(text: str) -> Path:
    if not text or "\x00" in text:
        raise ConfigError(f"not a usable path: {text!r}")
    return Path(text)


def _output(text: str) -> Path | None:
    return None if text == "discard" else _path(text)


def _ca_file(text: str) -> Path:
    path = _path(text)
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError(f"cannot load CA certificates from {text!r}: {reason}") from None
    return path


def _proxy(text: str) -> str:
    """http://host:port or host:port ("" = no proxy at all, not even from the environment)."""
    text = text.strip()
    if not text:
        return ""
    scheme, sep, _ = text.partition("://")
    if sep and scheme.lower() != "http":
        raise ConfigError(f"only http:// proxies are supported, got {text!r}")
    host = urlsplit(text if sep else f"http://{text}")
    try:
        host.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"bad proxy URL {text!r}: {exc}") from None
    if not host.hostname:
        raise ConfigError(f"bad proxy URL {text!r}: no host")
    return text


def _redis_url(text: str) -> str:
    """redis://[user:password@]host[:port][/db], rediss:// (TLS) or unix:///path/to/socket."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redact(text)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"a Redis URL starts with redis://, rediss:// or unix://, got {redact(text)!r}"
        )
    if scheme != "unix" and not parts.hostname:
        raise ConfigError(f"bad Redis URL {redact(text)!r}: no host")
    if scheme == "unix" and not parts.path:
        raise ConfigError(f"bad Redis URL {redact(text)!r}: no socket path")
    return text


def _name(text: str) -> str:
    """A Redis key, group or consumer name: any non-empty text."""
    if not text:
        raise ConfigError("must not be empty")
    return text


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(text: str) -> int:
    """Bytes, with curl's k/M/G suffixes (powers of 1024)."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in ("k", "m", "g") else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise ConfigError(f"not a size in bytes (N, Nk, NM, NG): {text!r}")
    return int(number) * _SIZE_UNITS[unit]


def _networks(text: str) -> tuple[str, ...]:
    """Comma-separated CIDRs (a repeated option arrives joined by commas)."""
    networks = []
    for spec in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(str(ipaddress.ip_network(spec, strict=False)))
        except ValueError:
            raise ConfigError(f"not a network in CIDR form: {spec!r}") from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class Option:
    """One option: its flag, parser, default (as text, parsed like user input) and help."""

    name: str
    parse: Callable[[str], Any]
    default: str | None
    metavar: str
    help: str
    repeat: bool = False  # may be given several times; the values are joined by commas
    spelled: str = ""  # the flag when it is not the name with dashes (curl's --http1.1)

    @property
    def is_switch(self) -> bool:
        """A boolean: `--fail` on the command line, HIPERFIFO_FAIL=true in the environment."""
        return self.parse is _flag

    @property
    def flag(self) -> str:
        return "--" + (self.spelled or self.name.replace("_", "-"))

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("fifo", _path, "hiper.fifo", "PATH", "the named pipe to read URLs from"),
    Option("fifo_mode", _mode, "0600", "MODE", "octal mode of a FIFO the daemon creates"),
    Option("output", _output, "discard", "discard|DIR", "where bodies go"),
    Option("max_total_connections", _count, "64", "N", "open connections at once"),
    Option("max_host_connections", _count, "8", "N", "open connections per host:port"),
    Option("connect_timeout", _seconds, "300", "S", "connect phase limit, seconds"),
    Option("timeout", _seconds, "0", "S", "whole-transfer limit, seconds (0: none)"),
    Option("max_url_length", _count, "8192", "N", "longer tokens are rejected"),
    Option(
        "token_timeout",
        _seconds,
        "0.2",
        "S",
        "a token without whitespace after it is complete once no byte came for S seconds "
        "(0: wait for whitespace)",
    ),
    Option("fail", _flag, "false", "", "HTTP status >= 400 fails the transfer (22), as curl -f"),
    Option("shutdown_timeout", _seconds, "30", "S", "drain bound on stop, seconds"),
    Option("log_format", _choice(LOG_FORMATS), None, "FORMAT", "json|logfmt|console"),
    Option("log_level", _choice(LOG_LEVELS), "info", "LEVEL", "|".join(LOG_LEVELS)),
    Option("log_file", _path, None, "PATH", "append logs to PATH instead of stdout"),
    Option("state_dir", _path, None, "DIR", "keep the queue in DIR/queue.sqlite3 across restarts"),
    Option("max_queued", _count, "100000", "N", "accepted URLs waiting; past it the FIFO waits"),
    Option("speed_limit", _count, "0", "BYTES", "abort below BYTES/s for --speed-time (28)"),
    Option("speed_time", _count, "30", "S", "seconds below --speed-limit before aborting"),
    Option(
        "deny_network",
        _networks,
        None,
        "CIDR",
        "never connect into CIDR (repeatable)",
        repeat=True,
    ),
    Option(
        "allow_network",
        _networks,
        None,
        "CIDR",
        "connect only into CIDR (repeatable)",
        repeat=True,
    ),
    Option("public_only", _flag, "false", "", "deny every non-public network (SSRF guard)"),
    Option(
        "strict",
        _flag,
        "false",
        "",
        "refuse to start on warnings (FIFO writable by all, state dir open to others)",
    ),
    Option("proxy", _proxy, None, "URL", "HTTP proxy (http://host:port; '' for none)"),
    Option("noproxy", str, None, "LIST", "hosts reached directly, as no_proxy"),
    Option("cacert", _ca_file, None, "FILE", "CA certificates (PEM) to verify servers with"),
    Option("insecure", _flag, "false", "", "do not verify TLS certificates, as curl -k"),
    Option("compressed", _flag, "false", "", "ask for gzip/deflate and decode, as curl"),
    Option(
        "http1_1", _flag, "false", "", "HTTP/1.1 only (no h2 in ALPN), as curl", spelled="http1.1"
    ),
    Option(
        "http2_prior_knowledge",
        _flag,
        "false",
        "",
        "HTTP/2 without asking first, also on http://, as curl",
    ),
    Option("max_filesize", _size, "0", "BYTES", "larger bodies fail (63); k/M/G; 0: no limit"),
    Option("max_redirs", _count, "30", "N", "redirects followed at most (47 beyond)"),
    Option("retry", _count, "0", "N", "retries of a transient failure, as curl --retry"),
    Option("retry_delay", _seconds, "0", "S", "fixed wait between retries (0: 1 s doubling)"),
    Option("retry_max_time", _seconds, "0", "S", "no retry starts after S seconds (0: no bound)"),
    Option("redis", _redis_url, None, "URL", "also take URLs from a Redis stream (redis://...)"),
    Option("redis_stream", _name, "hiperfifo:urls", "KEY", "the stream of URLs (field url)"),
    Option("redis_group", _name, "hiperfifo", "NAME", "consumer group shared by the daemons"),
    Option("redis_consumer", _name, None, "NAME", "this daemon's consumer name"),
    Option("redis_results", _name, "hiperfifo:results", "KEY", "the stream results go to"),
    Option("redis_results_maxlen", _count, "1000000", "N", "results kept (approximate MAXLEN)"),
    Option("redis_claim_idle", _seconds, "60", "S", "take over entries pending this long"),
    Option(
        "redis_cacert",
        _ca_file,
        None,
        "FILE",
        "CA certificates (PEM) to verify a rediss:// server with (not --cacert's)",
    ),
)

_BY_NAME = {option.name: option for option in OPTIONS}
# switches that cannot be given together (the second one is named as the culprit)
EXCLUSIVE: tuple[tuple[str, str], ...] = (("http1_1", "http2_prior_knowledge"),)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the daemon needs to know, validated on construction."""

    fifo: Path = Path("hiper.fifo")
    fifo_mode: int = 0o600
    output: Path | None = None
    max_total_connections: int = 64
    max_host_connections: int = 8
    connect_timeout: float = 300.0
    timeout: float = 0.0
    max_url_length: int = 8192
    token_timeout: float = 0.2  # seconds of quiet that end a token left open by a writer
    fail: bool = False
    shutdown_timeout: float = 30.0
    log_format: str = "json"
    log_level: str = "info"
    log_file: Path | None = None
    state_dir: Path | None = None
    max_queued: int = 100_000
    speed_limit: int = 0
    speed_time: int = 30
    deny_network: tuple[str, ...] = ()
    allow_network: tuple[str, ...] = ()
    public_only: bool = False
    strict: bool = False
    proxy: str | None = None  # None: from the environment; "": none at all
    noproxy: str | None = None  # None: from the environment (no_proxy)
    cacert: Path | None = None
    insecure: bool = False
    compressed: bool = False
    http1_1: bool = False
    http2_prior_knowledge: bool = False
    max_filesize: int = 0
    max_redirs: int = 30
    retry: int = 0
    retry_delay: float = 0.0
    retry_max_time: float = 0.0
    redis: str | None = None  # None: no Redis stream, the FIFO only
    redis_stream: str = "hiperfifo:urls"
    redis_group: str = "hiperfifo"
    redis_consumer: str | None = None  # None: the host name
    redis_results: str = "hiperfifo:results"
    redis_results_maxlen: int = 1_000_000
    redis_claim_idle: float = 60.0
    redis_cacert: Path | None = None  # None: the system's CAs verify a rediss:// server
    # http_proxy, https_proxy, all_proxy, no_proxy (either case) as cli.py found them
    proxy_environ: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _at_least("max_total_connections", self.max_total_connections, 1)
        _at_least("max_host_connections", self.max_host_connections, 1)
        _at_least("max_url_length", self.max_url_length, 16)
        _at_least("max_queued", self.max_queued, 1)
        _at_least("speed_limit", self.speed_limit, 0)
        _at_least("speed_time", self.speed_time, 1)
        _not_negative("connect_timeout", self.connect_timeout)
        _not_negative("timeout", self.timeout)
        _not_negative("shutdown_timeout", self.shutdown_timeout)
        _not_negative("token_timeout", self.token_timeout)
        _at_least("max_redirs", self.max_redirs, 0)
        self.retry_policy  # noqa: B018 - the retry bounds are RetryPolicy's
        _at_least("redis_results_maxlen", self.redis_results_maxlen, 1)
        if not self.redis_claim_idle >= 0.1:
            raise _bad("redis_claim_idle", f"must be at least 0.1, got {self.redis_claim_idle}")
        for first, second in EXCLUSIVE:
            if getattr(self, first) and getattr(self, second):
                raise _exclusive(second, first)
        if self.log_format not in LOG_FORMATS:
            raise _bad("log_format", f"{self.log_format!r} is not one of {LOG_FORMATS}")
        if self.log_level not in LOG_LEVELS:
            raise _bad("log_level", f"{self.log_level!r} is not one of {LOG_LEVELS}")

    @property
    def retry_policy(self) -> RetryPolicy:
        """--retry, --retry-max-time, --retry-delay as the policy (validated by it)."""
        # retry.py brings the engine's result codes: imported when a Config is built, not
        # when `hiperfifo send` imports this module
        from hiperfifo.retry import RetryPolicy, RetryPolicyError

        try:
            return RetryPolicy(self.retry, self.retry_max_time, self.retry_delay)
        except RetryPolicyError as exc:
            raise _bad(exc.option, exc.problem) from None

    @property
    def http_version(self) -> str:
        """The engine's http_version option (curl's CURLOPT_HTTP_VERSION) from the flags."""
        if self.http1_1:
            return "1.1"
        return "2-prior-knowledge" if self.http2_prior_knowledge else "2"

    @property
    def connect_timeout_ms(self) -> int:
        return _ms(self.connect_timeout)

    @property
    def timeout_ms(self) -> int:
        return _ms(self.timeout)

    def summary(self) -> dict[str, object]:
        """The settings worth one log line at start."""
        return {
            "output": str(self.output) if self.output else "discard",
            "max_total_connections": self.max_total_connections,
            "max_host_connections": self.max_host_connections,
            "connect_timeout": self.connect_timeout,
            "timeout": self.timeout,
            "fail": self.fail,
            "shutdown_timeout": self.shutdown_timeout,
            "state_dir": str(self.state_dir) if self.state_dir else None,
            "max_queued": self.max_queued,
            "public_only": self.public_only,
            "deny_network": list(self.deny_network),
            "allow_network": list(self.allow_network),
            "proxy": redact(self.proxy) if self.proxy else self.proxy,
            "verify": not self.insecure,
            "compressed": self.compressed,
            "http_version": self.http_version,
            "max_redirs": self.max_redirs,
            "retry": self.retry,
        }


def _ms(seconds: float) -> int:
    return 0 if seconds <= 0 else max(1, round(seconds * 1000))


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise _bad(name, f"must be at least {low}, got {value}")


def _not_negative(name: str, value: float) -> None:
    if value < 0:
        raise _bad(name, f"must not be negative, got {value}")


def build(
    raw: dict[str, str | None],
    proxy_environ: tuple[tuple[str, str], ...] = (),
    from_env: Collection[str] = (),
) -> Config:
    """Parse option texts (missing or None: the default) into a validated Config.

    A bad value's error names the option as it was given: its HIPERFIFO_ variable for
    the names in `from_env` (cli.py read them from the environment), else its flag.
    """

    def given_as(option: Option) -> str:
        return option.env if option.name in from_env else option.flag

    values: dict[str, Any] = {}
    for option in OPTIONS:
        text = raw.get(option.name)
        if text is None:
            text = option.default
        if text is None:
            continue
        try:
            values[option.name] = option.parse(text)
        except ConfigError as exc:
            raise ConfigError(f"{given_as(option)}: {exc}", option.name, str(exc)) from None
    if raw.get("speed_time") is not None and raw.get("speed_limit") is None:
        values["speed_limit"] = 1  # curl: --speed-time alone means a limit of 1 byte/s
    try:
        return Config(**values, proxy_environ=proxy_environ)
    except ConfigError as exc:
        judged = _BY_NAME.get(exc.option or "")
        if judged is None:
            raise
        problem = exc.problem
        if exc.other:
            problem = f"cannot be combined with {given_as(_BY_NAME[exc.other])}"
        raise ConfigError(f"{given_as(judged)}: {problem}", judged.name, problem) from None
