"""The SSRF guard: NetworkPolicy over every non-public range and every spelling of an address,
on the first hop, on a redirect hop and on the proxy's address.

Pure tables first (`refusal()`), then real transfers: a refused address never gets a
socket (no connection socket is announced, the listening server accepts nothing), and
each spelling is also fetched without a policy, to show it really reaches the server it
is refused for. Names resolve through the test's `names` (the Multi's `getaddrinfo`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import pytest
from names import Names
from servers import HTTPServer, redirect, respond

from hiperfifo.engine import Code, Easy, NetworkPolicy
from hiperfifo.engine.policy import NON_PUBLIC

Serve = Callable[[HTTPServer], HTTPServer]
PUBLIC_ONLY = NetworkPolicy.public_internet_only()

# One address inside each non-public range, named for what it is.
INSIDE = {
    "this network 0/8": "0.0.0.1",
    "private 10/8": "10.1.2.3",
    "CGNAT 100.64/10": "100.64.0.1",
    "Alibaba metadata (CGNAT)": "100.100.100.200",
    "loopback 127/8": "127.0.0.1",
    "loopback, not .1": "127.255.255.254",
    "link-local 169.254/16": "169.254.0.1",
    "cloud metadata": "169.254.169.254",
    "private 172.16/12": "172.16.0.1",
    "private 172.31": "172.31.255.255",
    "IETF protocol 192.0.0/24": "192.0.0.170",
    "TEST-NET-1": "192.0.2.1",
    "6to4 relay anycast": "192.88.99.1",
    "private 192.168/16": "192.168.1.1",
    "benchmarking 198.18/15": "198.19.255.255",
    "TEST-NET-2": "198.51.100.7",
    "TEST-NET-3": "203.0.113.9",
    "multicast 224/4": "224.0.0.1",
    "multicast, last": "239.255.255.255",
    "reserved 240/4": "240.0.0.1",
    "broadcast": "255.255.255.255",
    "IPv6 unspecified": "::",
    "IPv6 loopback": "::1",
    "NAT64 of metadata": "64:ff9b::a9fe:a9fe",
    "NAT64 local-use": "64:ff9b:1::1",
    "discard-only 100::/64": "100::1",
    "Teredo (2001::/32)": "2001::1",
    "ORCHIDv2 (2001:20::/28)": "2001:20::1",
    "IPv6 documentation": "2001:db8::1",
    "6to4 of metadata": "2002:a9fe:a9fe::1",
    "6to4 of loopback": "2002:7f00:1::",
    "ULA fc00::/7": "fc00::1",
    "ULA fd00, AWS metadata": "fd00:ec2::254",
    "link-local fe80::/10": "fe80::1",
    "link-local with a zone": "fe80::1%lo",
    "IPv6 multicast": "ff02::1",
    "mapped loopback": "::ffff:127.0.0.1",
    "mapped loopback, long": "0:0:0:0:0:ffff:7f00:1",
    "mapped metadata": "::ffff:169.254.169.254",
    "mapped private": "::ffff:10.0.0.1",
}

# Just outside each range's edges (and well-known public resolvers): never refused.
OUTSIDE = [
    "1.0.0.0", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0",
    "126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0", "172.15.255.255",
    "172.32.0.0", "192.0.1.0", "192.0.3.0", "192.88.98.255", "192.88.100.0",
    "192.167.255.255", "192.169.0.0", "198.17.255.255", "198.20.0.0", "198.51.99.255",
    "198.51.101.0", "203.0.112.255", "203.0.114.0", "223.255.255.255", "8.8.8.8",
    "::2", "64:ff9b::1:0:0", "2001:200::", "2001:4860:4860::8888", "2001:db7:ffff::",
    "2001:db9::", "2003::", "2606:4700::1111", "fbff:ffff::", "fec0::", "::ffff:8.8.8.8",
]  # fmt: skip


@pytest.mark.parametrize("address", INSIDE.values(), ids=list(INSIDE))
def test_public_only_refuses_every_non_public_range(address: str) -> None:
    """public_internet_only() refuses an address inside each special-purpose range."""
    assert "denied network" in PUBLIC_ONLY.refusal(address)


@pytest.mark.parametrize("network", NON_PUBLIC)
def test_public_only_refuses_both_ends_of_each_listed_network(network: str) -> None:
    """The first and the last address of every listed network are refused."""
    net = ipaddress.ip_network(network)
    for address in (net.network_address, net.broadcast_address):
        assert PUBLIC_ONLY.refusal(str(address)), address


@pytest.mark.parametrize("address", OUTSIDE)
def test_public_only_allows_what_is_just_outside(address: str) -> None:
    """Addresses one past each range's edges (and public resolvers) are allowed."""
    assert PUBLIC_ONLY.refusal(address) == ""


@pytest.mark.parametrize("text", ["0x7f.1", "127.1", "2130706433", "localhost", "", "1.2.3.4.5"])
def test_what_is_not_an_ip_address_is_refused(text: str) -> None:
    """refusal() judges resolved addresses; anything else is refused, never waved through."""
    assert PUBLIC_ONLY.refusal(text).endswith("is not an IP address")
    assert NetworkPolicy().refusal(text).endswith("is not an IP address")


def test_deny_wins_over_allow() -> None:
    """An address both allowed and denied is refused; allowed-only passes; others are not
    in an allowed network."""
    policy = NetworkPolicy.from_cidrs(allow=["127.0.0.0/8"], deny=["127.0.0.1/32"])
    assert policy.refusal("127.0.0.1") == "127.0.0.1 is in denied network 127.0.0.1/32"
    assert policy.refusal("::ffff:127.0.0.1") == "127.0.0.1 is in denied network 127.0.0.1/32"
    assert policy.refusal("127.0.0.2") == ""
    assert policy.refusal("10.0.0.1") == "10.0.0.1 is not in an allowed network"
    assert policy.refusal("::1") == "::1 is not in an allowed network"


def test_from_cidrs_names_the_bad_network() -> None:
    """A bad CIDR is a ValueError naming it (host bits set are accepted, as ip_network does)."""
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        NetworkPolicy.from_cidrs(deny=["10.0.0.0/33"])
    assert NetworkPolicy.from_cidrs(deny=["10.1.2.3/8"]).refusal("10.9.9.9")


# --- real transfers -------------------------------------------------------------------


def has_loopback(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def transfer_sockets(drv: Any) -> list[tuple[Any, ...]]:
    """Socket callback calls for transfers' sockets (the resolver's has easy None)."""
    return [c for c in drv.calls if c[0] == "socket" and c[1] is not None]


def run(drv: Any, url: str, **options: Any) -> Easy:
    easy = Easy(url, **options)
    drv.perform(easy, timeout=20)
    return easy


FIRST_HOP = {k: v for k, v in INSIDE.items() if "%" not in v}


@pytest.mark.parametrize("address", FIRST_HOP.values(), ids=list(FIRST_HOP))
def test_first_hop_to_any_non_public_range_is_7_before_any_socket(drv: Any, address: str) -> None:
    """http://<address>/ under public_internet_only: 7 at once, the error names the range,
    and no socket is ever opened for the transfer."""
    easy = run(drv, f"http://{url_host(address)}:9/", network_policy=PUBLIC_ONLY)
    assert easy.result == Code.COULDNT_CONNECT
    assert "denied by network policy" in easy.error
    assert transfer_sockets(drv) == []


# Spellings of 127.0.0.1 (and names) that reach a server on 127.0.0.1 without a policy.
LOOPBACK_SPELLINGS = {
    "dotted": "127.0.0.1",
    "hex, two parts": "0x7f.1",
    "one decimal number": "2130706433",
    "two parts": "127.1",
    "octal": "0177.0.0.1",
    "hex dotted": "0x7f.0x0.0x0.0x1",
    "localhost": "localhost",
    "LOCALHOST.": "LOCALHOST.",
    "a subdomain of localhost": "x.localhost",
    "mapped": "[::ffff:127.0.0.1]",
    "mapped, hex": "[::ffff:7f00:1]",
    "mapped, long": "[0:0:0:0:0:ffff:7f00:1]",
    "a name (test resolver)": "loop.test",
    "a name with a public address first": "mixed.test",
}


@pytest.fixture
def loopback_names(names: Names) -> Names:
    names["loop.test"] = ["127.0.0.1"]
    names["mixed.test"] = ["192.0.2.1", "127.0.0.1"]  # TEST-NET: refused, never reached
    names["metadata.test"] = ["169.254.169.254"]
    return names


def needs_v4_mapped(host: str) -> None:
    if host.startswith("[") and not has_loopback("::1"):
        pytest.skip("no IPv6 loopback on this machine")


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS.values(), ids=list(LOOPBACK_SPELLINGS))
def test_every_spelling_of_loopback_reaches_it_without_a_policy(
    drv: Any, http_server: HTTPServer, loopback_names: Names, host: str
) -> None:
    """The control: each spelling really reaches the server on 127.0.0.1 (so refusing it
    below is the policy's doing, not a typo's)."""
    needs_v4_mapped(host)
    easy = run(drv, f"http://{host}:{http_server.port}/", connect_timeout_ms=2000)
    assert (easy.result, easy.response_code) == (Code.OK, 200)
    assert http_server.accepted == 1


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS.values(), ids=list(LOOPBACK_SPELLINGS))
def test_every_spelling_of_loopback_is_refused_on_the_first_hop(
    drv: Any, http_server: HTTPServer, loopback_names: Names, host: str
) -> None:
    """Under public_internet_only every spelling ends with 7 and the server accepts nothing."""
    needs_v4_mapped(host)
    easy = run(drv, f"http://{host}:{http_server.port}/", network_policy=PUBLIC_ONLY)
    assert easy.result == Code.COULDNT_CONNECT
    assert "127.0.0.0/8" in easy.error or "192.0.2.0/24" in easy.error
    assert http_server.accepted == 0


def test_name_resolving_to_the_metadata_address_is_refused(
    drv: Any, loopback_names: Names
) -> None:
    """A host name whose address is 169.254.169.254 (through the test resolver): 7, no
    socket; the name went through the Multi's getaddrinfo."""
    easy = run(drv, "http://metadata.test/latest/meta-data/", network_policy=PUBLIC_ONLY)
    assert easy.result == Code.COULDNT_CONNECT
    assert "169.254.169.254 is in denied network 169.254.0.0/16" in easy.error
    assert transfer_sockets(drv) == []
    assert "metadata.test" in loopback_names.asked


# --- a redirect hop -------------------------------------------------------------------

# Spellings of 127.0.0.2: a second server listens there; the policy denies only it.
SECOND = "127.0.0.2"
SECOND_SPELLINGS = {
    "dotted": "127.0.0.2",
    "hex, two parts": "0x7f.2",
    "one decimal number": "2130706434",
    "two parts": "127.2",
    "octal": "0177.0.0.02",
    "mapped": "[::ffff:127.0.0.2]",
    "mapped, long": "[0:0:0:0:0:ffff:7f00:2]",
    "a name (test resolver)": "second.test",
}
DENY_SECOND = NetworkPolicy.from_cidrs(deny=[f"{SECOND}/32"])


@pytest.fixture
def second(serve: Serve, names: Names) -> HTTPServer:
    if not has_loopback(SECOND):
        pytest.skip(f"{SECOND} is not a loopback address here")
    names["second.test"] = [SECOND]
    return serve(HTTPServer(default=respond(b"second"), host=SECOND))


def redirecting(serve: Serve, host: str, port: int) -> HTTPServer:
    return serve(HTTPServer({"/go": redirect(f"http://{host}:{port}/there")}))


@pytest.mark.parametrize("host", SECOND_SPELLINGS.values(), ids=list(SECOND_SPELLINGS))
def test_redirect_hop_to_a_denied_address_in_any_spelling_is_7(
    drv: Any, serve: Serve, second: HTTPServer, host: str
) -> None:
    """A 302 from an allowed server to a denied one: 7 on the second hop, the denied server
    accepts nothing; without the policy the same redirect is followed to it."""
    needs_v4_mapped(host)
    first = redirecting(serve, host, second.port)
    easy = run(drv, first.url("/go"), follow_location=True, network_policy=DENY_SECOND)
    assert easy.result == Code.COULDNT_CONNECT
    assert f"{SECOND} is in denied network {SECOND}/32" in easy.error
    assert (first.paths(), second.accepted) == (["/go"], 0)
    easy = run(drv, first.url("/go"), follow_location=True, connect_timeout_ms=2000)
    assert (easy.result, easy.response_code) == (Code.OK, 200)
    assert second.paths() == ["/there"]


PUBLIC_BUT_LOOPBACK = NetworkPolicy(
    deny=tuple(n for n in PUBLIC_ONLY.deny if not n.overlaps(ipaddress.ip_network("127.0.0.0/8")))
)
REDIRECT_TARGETS = {k: v for k, v in FIRST_HOP.items() if PUBLIC_BUT_LOOPBACK.refusal(v)}


@pytest.mark.parametrize("address", REDIRECT_TARGETS.values(), ids=list(REDIRECT_TARGETS))
def test_redirect_hop_to_any_non_public_range_is_7_before_any_socket(
    drv: Any, serve: Serve, address: str
) -> None:
    """The preset (minus 127/8, so that the first hop runs): a redirect into any other range
    ends with 7, refused by the policy before a socket exists for it."""
    first = redirecting(serve, url_host(address), 80)
    easy = run(drv, first.url("/go"), follow_location=True, network_policy=PUBLIC_BUT_LOOPBACK)
    assert easy.result == Code.COULDNT_CONNECT
    assert "denied by network policy" in easy.error
    assert "is in denied network" in easy.error
    assert first.paths() == ["/go"]


# --- the proxy's address ----------------------------------------------------------------

PROXY_SPELLINGS = {
    "dotted": "127.0.0.1",
    "hex, two parts": "0x7f.1",
    "one decimal number": "2130706433",
    "localhost": "localhost",
    "mapped": "[::ffff:127.0.0.1]",
    "a name (test resolver)": "loop.test",
}


@pytest.fixture
def fake_proxy(serve: Serve) -> HTTPServer:
    """Answers anything, so a request that reaches it shows (as an absolute-form target)."""
    return serve(HTTPServer(default=respond(b"via the proxy")))


@pytest.mark.parametrize("host", PROXY_SPELLINGS.values(), ids=list(PROXY_SPELLINGS))
def test_a_proxy_at_a_denied_address_is_7_before_connecting(
    drv: Any, fake_proxy: HTTPServer, loopback_names: Names, host: str
) -> None:
    """--proxy on loopback under public_internet_only: 7 for http and https targets, the proxy
    accepts nothing; without the policy the proxy gets the request."""
    needs_v4_mapped(host)
    proxy = f"http://{host}:{fake_proxy.port}"
    for url in ("http://example.test/", "https://example.test/"):
        easy = run(drv, url, proxy=proxy, network_policy=PUBLIC_ONLY)
        assert easy.result == Code.COULDNT_CONNECT, url
        assert "127.0.0.1 is in denied network 127.0.0.0/8" in easy.error
    assert fake_proxy.accepted == 0
    easy = run(drv, "http://example.test/x", proxy=proxy, connect_timeout_ms=2000)
    assert (easy.result, easy.response_code) == (Code.OK, 200)
    assert fake_proxy.paths() == ["http://example.test/x"]


def test_a_proxy_name_resolving_to_the_metadata_address_is_refused(
    drv: Any, loopback_names: Names
) -> None:
    """A proxy host name whose address is 169.254.169.254: 7, no socket."""
    easy = run(
        drv, "http://example.test/", proxy="http://metadata.test:3128", network_policy=PUBLIC_ONLY
    )
    assert easy.result == Code.COULDNT_CONNECT
    assert "169.254.169.254 is in denied network" in easy.error
    assert transfer_sockets(drv) == []


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("target", ["10.1.2.3", "[::ffff:10.1.2.3]", "[fd00::1]"])
def test_a_denied_literal_target_through_an_allowed_proxy_is_7(
    drv: Any, fake_proxy: HTTPServer, scheme: str, target: str
) -> None:
    """Through a proxy the engine never resolves the target, but an IP literal it can judge:
    denied, 7, the proxy never hears of it (plain request or CONNECT alike)."""
    policy = NetworkPolicy.from_cidrs(deny=["10.0.0.0/8", "fc00::/7"])
    easy = run(drv, f"{scheme}://{target}/", proxy=fake_proxy.url(), network_policy=policy)
    assert easy.result == Code.COULDNT_CONNECT
    assert "denied network" in easy.error
    assert fake_proxy.accepted == 0


def test_a_name_target_through_a_proxy_is_the_proxys_to_resolve(
    drv: Any, fake_proxy: HTTPServer, loopback_names: Names
) -> None:
    """A host name behind a proxy is not looked up here (libcurl does the same): the policy
    cannot judge it, and the request goes to the proxy. The limit of the guard, pinned."""
    policy = NetworkPolicy.from_cidrs(deny=["169.254.0.0/16"])
    easy = run(drv, "http://metadata.test/", proxy=fake_proxy.url(), network_policy=policy)
    assert easy.result == Code.OK
    assert fake_proxy.paths() == ["http://metadata.test/"]
    assert "metadata.test" not in loopback_names.asked
