"""Which proxy a URL goes through, decided in pure code (curl's proxy rules).

`proxy_from_environ` reads a mapping the application passes in (the engine
never reads the process environment itself): `http_proxy`, `https_proxy`
(either case; `HTTP_PROXY` upper-case is ignored, as curl does, because a
CGI server sets it from a request header), `all_proxy` and `no_proxy`.
`bypasses` applies a no_proxy list: "*", exact hosts, domain suffixes, and
IP networks in CIDR form.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from hiperfifo.engine.codes import Code, TransferError, caused
from hiperfifo.engine.url import Target, parse


def proxy_from_environ(scheme: str, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(proxy URL or None, no_proxy list) for a URL of `scheme`, as curl reads them."""
    names = (
        [f"{scheme}_proxy"] if scheme == "http" else [f"{scheme}_proxy", f"{scheme.upper()}_PROXY"]
    )
    names += ["all_proxy", "ALL_PROXY"]
    proxy = next((environ[name] for name in names if environ.get(name)), None)
    noproxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    return proxy, noproxy


def bypasses(host: str, noproxy: str) -> bool:
    """True when `host` is in the no_proxy list and must be reached directly."""
    host = host.lower().rstrip(".")
    for entry in (item.strip().lower() for item in noproxy.split(",")):
        if not entry:
            continue
        if entry == "*" or _matches(host, entry):
            return True
    return False


def parse_proxy(proxy: str) -> Target:
    """The proxy's own address; only http:// proxies are supported, as a scheme-less one is."""
    text = proxy if "://" in proxy else f"http://{proxy}"
    try:
        target = parse(text)
    except TransferError as exc:
        raise caused(
            TransferError(Code.COULDNT_RESOLVE_PROXY, f"Bad proxy {proxy!r}: {exc.text}"), exc
        )
    if target.scheme != "http":
        raise TransferError(Code.UNSUPPORTED_PROTOCOL, f"Unsupported proxy scheme in {proxy!r}")
    if "://" not in proxy:
        target = target._replace(port=target.port if ":" in proxy.rsplit("]", 1)[-1] else 1080)
    return target


def _matches(host: str, entry: str) -> bool:
    entry = entry.strip("[]")
    if "/" in entry:
        try:
            return ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(
                entry, strict=False
            )
        except ValueError:
            return False
    entry = entry.lstrip(".")
    return host == entry or host.endswith("." + entry)
