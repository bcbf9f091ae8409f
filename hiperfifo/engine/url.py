"""URLs as libcurl's URL parser takes them: only http and https, nothing smuggled.

Turns a URL string into what a request needs (origin, request target, Host
header, credentials) or a TransferError with URL_MALFORMAT or
UNSUPPORTED_PROTOCOL. Also resolves a redirect's Location against its base.
"""

from __future__ import annotations

import base64
import re
from typing import Final, NamedTuple
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

from hiperfifo.engine.codes import Code, TransferError, caused

SCHEMES: Final = {"http": 80, "https": 443}
_FORBIDDEN: Final = re.compile(r"[\x00-\x20\x7f]")  # controls, CR/LF and spaces never go out
_KEEP: Final = "!#$%&'()*+,/:;=?@[]~"  # reserved and already-encoded characters stay as they are


class Target(NamedTuple):
    """A parsed URL, ready to be requested."""

    url: str  # as libcurl's URL API shows it: CURLINFO_EFFECTIVE_URL (see _normalised)
    scheme: str
    host: str  # as resolved: IDNA-encoded, IPv6 without brackets
    port: int
    target: str  # request target: path and query
    host_header: str
    authorization: str | None


class _Origin(NamedTuple):
    """What a URL's scheme and authority say (its part before the path)."""

    scheme: str
    host: str
    port: int
    host_header: str
    authorization: str | None


_PARSED: Final[dict[str, Target]] = {}  # parse()'s cache
_PARSED_KEPT: Final = 1024
_ORIGINS: Final[dict[str, _Origin]] = {}  # _origin()'s cache
_ORIGINS_KEPT: Final = 256


def parse(url: str) -> Target:
    """Parse `url`; raises TransferError(URL_MALFORMAT | UNSUPPORTED_PROTOCOL).

    Cached (_PARSED, the last _PARSED_KEPT URLs at most; a plain dict, not an
    lru_cache: compiled, parse stays a native call): a Target is immutable, and a
    batch often repeats its URLs (or its redirect targets); a refusal is not
    cached and is raised afresh each time.
    """
    target = _PARSED.get(url)
    if target is None:
        target = _parse(url)
        if len(_PARSED) >= _PARSED_KEPT:
            _PARSED.clear()
        _PARSED[url] = target
    return target


def forget_parsed() -> None:
    """Empty parse()'s cache (the tests' fresh start)."""
    _PARSED.clear()
    _ORIGINS.clear()


def _parse(url: str) -> Target:
    """parse() without its cache. An http(s) URL with an authority is split here as
    urlsplit splits it (the authority ends at the first '/', '?' or '#'; the fragment
    starts at the first '#', the query at the first '?' before it), and its authority
    is parsed by urlsplit once per distinct scheme://authority (_origin, cached):
    unique URLs to one origin (`/item?id=N`) do not pay for urlsplit each.
    """
    if _forbidden(url):
        raise TransferError(Code.URL_MALFORMAT, "URL rejected: Malformed input to a URL function")
    if url.startswith("http://"):  # (most URLs: no scheme to find and fold)
        return _split_at(url, 7)
    if url.startswith("https://"):
        return _split_at(url, 8)
    colon = url.find(":")
    scheme = url[:colon]
    fast = colon > 0 and scheme.isascii() and scheme.lower() in SCHEMES
    if fast and url.startswith("//", colon + 1):
        return _split_at(url, colon + 3)
    return parse_by_urlsplit(url)


def _split_at(url: str, start: int) -> Target:
    """The Target of an http(s) `url` whose authority starts at `start`: it ends at the
    first '/', '?' or '#'; the fragment starts at the first '#', the query at the first
    '?' before it."""
    slash = url.find("/", start)
    question = url.find("?", start)
    hash_at = url.find("#", start)
    end = len(url)
    if 0 <= slash < end:
        end = slash
    if 0 <= question < end:
        end = question
    if 0 <= hash_at < end:
        end = hash_at
    origin = _origin(url[:end])
    stop = hash_at if hash_at >= 0 else len(url)
    if 0 <= question < stop:  # (the first '?' is at or after the authority's end)
        return _target(url, origin, end - start, url[end:question], url[question + 1 : stop])
    return _target(url, origin, end - start, url[end:stop], "")


def _forbidden(url: str) -> bool:
    """Whether `url` has a control, a space or DEL (_FORBIDDEN): for an ASCII URL, by
    str.isprintable and one find (C loops) rather than the regex."""
    if url.isascii():
        return not url.isprintable() or url.find(" ") >= 0
    return _FORBIDDEN.search(url) is not None


def parse_by_urlsplit(url: str) -> Target:
    """parse() all through urlsplit (what parse's split must agree with: the tests)."""
    if _FORBIDDEN.search(url):
        raise TransferError(Code.URL_MALFORMAT, "URL rejected: Malformed input to a URL function")
    origin, parts = _split(url)
    return _target(url, origin, len(parts.netloc), parts.path, parts.query)


def _origin(prefix: str) -> _Origin:
    """The scheme and authority of `prefix` (scheme://authority, nothing after), cached
    (_ORIGINS); a refusal is raised afresh each time."""
    origin = _ORIGINS.get(prefix)
    if origin is None:
        origin = _split(prefix)[0]
        if len(_ORIGINS) >= _ORIGINS_KEPT:
            _ORIGINS.clear()
        _ORIGINS[prefix] = origin
    return origin


def _split(url: str) -> tuple[_Origin, SplitResult]:
    """urlsplit's reading of `url`, its origin checked as libcurl checks it."""
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:
        raise caused(TransferError(Code.URL_MALFORMAT, f"URL rejected: {exc}"), exc)
    scheme = parts.scheme.lower()
    if not scheme:
        raise TransferError(Code.URL_MALFORMAT, "URL rejected: No scheme part")
    if scheme not in SCHEMES:
        raise TransferError(Code.UNSUPPORTED_PROTOCOL, f'Protocol "{scheme}" not supported')
    if not hostname:
        raise TransferError(Code.URL_MALFORMAT, "URL rejected: No host part in the URL")
    host = _ascii_host(hostname)
    port = port if port is not None else SCHEMES[scheme]
    if port == 0:
        raise TransferError(
            Code.URL_MALFORMAT, "URL rejected: Port number was not a decimal number"
        )
    auth = _basic_auth(parts.username, parts.password)
    return _Origin(scheme, host, port, _host_header(host, port, scheme), auth), parts


def _target(url: str, origin: _Origin, netloc_length: int, given: str, query: str) -> Target:
    """The Target of `url`, its origin parsed, its path `given` and its query split off."""
    path = _without_dot_segments(given or "/")
    target = f"{path}?{query}" if query else path
    if not target.isascii():  # raw UTF-8 in a path goes out percent-encoded, as curl sends it
        target = quote(target, safe=_KEEP)
    # tuple's own __new__ (C), not the NamedTuple's (Python, with keywords: ~6k instructions)
    fields = (
        _normalised(url, origin.scheme, netloc_length, given, path),
        origin.scheme,
        origin.host,
        origin.port,
        target,
        origin.host_header,
        origin.authorization,
    )
    return tuple.__new__(Target, fields)


def redirect_target(base: str, location: bytes) -> str:
    """The absolute URL a Location header points to, resolved against `base`."""
    text = location.strip().decode("utf-8", "surrogateescape")
    # curl percent-encodes spaces and bytes beyond ASCII in a Location; controls stay refused.
    encoded = quote(
        text, safe=_KEEP + "".join(map(chr, range(0x20))) + "\x7f", errors="surrogateescape"
    )
    return urljoin(base, encoded.split("#", 1)[0])


def _normalised(url: str, scheme: str, netloc_length: int, given: str, path: str) -> str:
    """`url` as libcurl's URL API gives it back (curl's `url_effective`): the scheme in
    lower case, the path as it is sent (`/` when empty, dot segments resolved); the host,
    credentials, query and fragment as written."""
    if path == given and url.startswith(scheme):
        return url
    start = len(scheme) + 3 + netloc_length  # `scheme://netloc`: a host is required above
    return f"{scheme}{url[len(scheme) : start]}{path}{url[start + len(given) :]}"


def _without_dot_segments(path: str) -> str:
    """`path` with its `.` and `..` segments resolved (RFC 3986 5.2.4), as libcurl sends it
    unless CURLOPT_PATH_AS_IS: `/a/../b` is `/b`, and `..` never climbs above the root."""
    if "/." not in path:
        return path
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")  # `/a/.` and `/a/b/..` name a directory: `/a/`
    return "/" + "/".join(kept)


def _ascii_host(hostname: str) -> str:
    if "%" in hostname:
        raise TransferError(Code.URL_MALFORMAT, "URL rejected: zone IDs are not supported")
    if hostname.isascii():
        return hostname.lower()
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise caused(TransferError(Code.URL_MALFORMAT, f"URL rejected: bad IDN host: {exc}"), exc)


def _host_header(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == SCHEMES[scheme] else f"{shown}:{port}"


def _basic_auth(username: str | None, password: str | None) -> str | None:
    if username is None:
        return None
    raw = f"{unquote(username)}:{unquote(password or '')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
