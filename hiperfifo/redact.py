"""Secrets out of log lines: the password in a URL becomes `***`.

Used for every URL the daemon logs (accepted, effective, resumed) and for the
proxy in daemon.started. Stdlib only.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_HTTP = "http://"


def redact(url: str) -> str:
    """The URL with a password in it replaced by `***`, for logs.

    Without a scheme (a proxy given as user:password@host:port) it is read as http://.
    """
    if "@" not in url:  # no userinfo, so no password: the common case, without parsing
        return url
    if "://" not in url:
        return redact(_HTTP + url).removeprefix(_HTTP)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return parts._replace(netloc=f"{name}:***@{host}").geturl()
