"""Which addresses a transfer may connect to: a guard against request forgery (SSRF).

A NetworkPolicy is a small frozen value: networks to deny and, if any are
given, the only networks to allow. It is checked on every resolved address
before a connect (so on every redirect hop, and on the proxy's address), and
on an IP-literal target reached through a proxy. IPv4-mapped IPv6 addresses
are judged as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from hiperfifo.engine.codes import caused

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Everything that is not the public internet (RFC 6890 special-purpose blocks and friends).
NON_PUBLIC = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
    "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings to networks; raises ValueError naming the bad one."""
    networks = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError as exc:
            raise caused(ValueError(f"not a network in CIDR form: {spec!r} ({exc})"), exc)
    return tuple(networks)


@dataclass(frozen=True)
class NetworkPolicy:
    """Deny these networks; when `allow` is not empty, allow only those."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def from_cidrs(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> NetworkPolicy:
        return cls(parse_networks(allow), parse_networks(deny))

    @classmethod
    def public_internet_only(cls) -> NetworkPolicy:
        """The preset for a daemon that must never reach private or local networks."""
        return cls(deny=parse_networks(NON_PUBLIC))

    def refusal(self, ip: str) -> str:
        """Why `ip` may not be reached, or "" when it may."""
        try:
            address: Address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return f"{ip} is not an IP address"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for network in self.deny:
            if address.version == network.version and address in network:
                return f"{address} is in denied network {network}"
        if self.allow and not any(
            address.version == net.version and address in net for net in self.allow
        ):
            return f"{address} is not in an allowed network"
        return ""
