"""What one request is, decided in pure code: where it goes and what it says.

The proxy and pool key of a URL (curl's url.c: environment proxies chosen
again for every hop, no_proxy, one proxy connection for every http URL, a
tunnel bound to its target), the header lines a request carries (curl's
http.c defaults, credentials kept for the origin they were given for), and
where a redirect leads and what it changes in the method. No I/O, no
clock, no state.
"""

from __future__ import annotations

from typing import NamedTuple

from hiperfifo.engine.codes import Code, TransferError
from hiperfifo.engine.connection import Origin
from hiperfifo.engine.decoding import accept_header
from hiperfifo.engine.handle import Handle
from hiperfifo.engine.proxy import bypasses, parse_proxy, proxy_from_environ
from hiperfifo.engine.resolver import numeric_addresses
from hiperfifo.engine.url import Target, parse, redirect_target

Headers = tuple[tuple[str, str], ...]
_PRIVATE = ("authorization", "cookie")  # kept for the origin they were given for (curl)


# Where a URL's request goes: its target, the proxy if any, and the pool key (a plain
# tuple: compiled with mypyc, it is returned unboxed, no object made per request).
Aim = tuple[Target, Target | None, Origin]


def aim(easy: Handle, url: str) -> Aim:
    """Parse `url` and choose its proxy and pool key; TransferError for what cannot go."""
    target = parse(url)
    tls_profile = f"{easy.verify}:{easy.ca_file}" if target.scheme == "https" else ""
    proxy_url, noproxy = easy.proxy, easy.noproxy
    if proxy_url is None and easy.proxy_env is not None:
        proxy_url, env_noproxy = proxy_from_environ(target.scheme, easy.proxy_env)
        noproxy = env_noproxy if noproxy is None else noproxy
    proxy = None
    if proxy_url and not bypasses(target.host, noproxy or ""):
        proxy = parse_proxy(proxy_url)
        check_proxied_target(easy, target)
    origin: Origin
    if proxy is None:
        origin = (target.scheme, target.host, target.port, tls_profile)
    elif target.scheme == "http":  # one connection to the proxy serves every http URL
        origin = ("http", proxy.host, proxy.port, "proxy")
    else:  # a tunnel is bound to its target
        origin = (
            target.scheme,
            target.host,
            target.port,
            f"{tls_profile}|via {proxy.host}:{proxy.port}",
        )
    return target, proxy, origin


def check_proxied_target(easy: Handle, target: Target) -> None:
    """Through a proxy we never see the target's address: judge a literal one at least."""
    policy = easy.network_policy
    literal = numeric_addresses(target.host, target.port)
    if policy is None or literal is None:
        return
    for _family, sockaddr in literal:
        denied = policy.refusal(str(sockaddr[0]))
        if denied:
            raise TransferError(
                Code.COULDNT_CONNECT, f"Failed to connect to {target.host}: {denied}"
            )


def proxy_auth(proxy: Target | None) -> list[tuple[str, str]]:
    """The Proxy-Authorization line for `proxy`'s credentials, if it has any."""
    if proxy is None or proxy.authorization is None:
        return []
    return [("Proxy-Authorization", proxy.authorization)]


def request_parts(
    easy: Handle,
    target: Target,
    proxy: Target | None,
    given_headers: Headers,
    body: bytes | None,
    first_origin: tuple[str, str, int],
) -> tuple[str, list[tuple[str, str]], bytes | None]:
    """The request target, header lines and body of one request (curl's defaults)."""
    given = {name.lower() for name, _value in given_headers}
    headers: list[tuple[str, str]] = []
    request_target = target.target
    if proxy is not None and target.scheme == "http":
        request_target = f"http://{target.host_header}{target.target}"
        headers.extend(proxy_auth(proxy))
    if "host" not in given:
        headers.append(("Host", target.host_header))
    if target.authorization and "authorization" not in given:
        headers.append(("Authorization", target.authorization))
    if "accept" not in given:
        headers.append(("Accept", "*/*"))
    if easy.accept_encoding is not None and "accept-encoding" not in given:
        headers.append(("Accept-Encoding", accept_header(easy.accept_encoding)))
    if (target.scheme, target.host, target.port) == first_origin:
        headers.extend(given_headers)
    else:  # credentials stay with the scheme, host and port they were given for (curl)
        headers.extend((k, v) for k, v in given_headers if k.lower() not in _PRIVATE)
    if body is not None and "content-length" not in given:
        headers.append(("Content-Length", str(len(body))))
    return request_target, headers, body


class Hop(NamedTuple):
    """The next request of a redirect chain."""

    url: str
    method: str
    body: bytes | None
    headers: Headers


def follow(
    easy: Handle, status: int, location: bytes, method: str, body: bytes | None, headers: Headers
) -> Hop:
    """The request a redirect asks for, as curl's FOLLOWLOCATION does: TOO_MANY_REDIRECTS
    past max_redirs; 303 (not HEAD), and 301/302 of a POST, become a GET without a body
    or Content-Type."""
    if 0 <= easy.max_redirs <= easy.redirect_count:  # -1: no limit, as in curl
        raise TransferError(
            Code.TOO_MANY_REDIRECTS, f"Maximum ({easy.max_redirs}) redirects followed"
        )
    url = redirect_target(easy.effective_url, location)
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        headers = tuple((k, v) for k, v in headers if k.lower() != "content-type")
        return Hop(url, "GET", None, headers)
    return Hop(url, method, body, headers)
