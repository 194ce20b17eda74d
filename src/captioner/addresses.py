"""Which addresses an image link may reach: IANA's registries as data, not the running Python's.

`ipaddress`'s `is_global` and `is_private` tables differ between Python versions (3.11 calls most
of 192.0.0.0/24 global, Oracle Cloud's metadata address 192.0.0.192 among them), so the policy is
this module's own table, copied from:
- the IANA IPv4 Special-Purpose Address Registry,
  https://www.iana.org/assignments/iana-ipv4-special-registry/ (RFC 6890 and later updates), and
- the IANA IPv6 Special-Purpose Address Registry,
  https://www.iana.org/assignments/iana-ipv6-special-registry/,
with each block's name as the registry gives it and its "Globally Reachable" column; the most
specific block that holds an address decides. Added to them: multicast (its own registries), the
IPv6 space outside global unicast 2000::/3, and cloud metadata services, which answer on ordinary
addresses too (Azure's 168.63.129.16). Addresses with an IPv4 address inside (IPv4-mapped, NAT64,
6to4, Teredo) are judged by that address.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Block(NamedTuple):
    network: Network
    name: str  # the registry's name: what a refusal says
    reachable: bool  # the registry's "Globally Reachable"; False (or N/A) is refused


def _blocks(rows: list[tuple[str, str, bool]]) -> tuple[Block, ...]:
    return tuple(Block(ipaddress.ip_network(prefix), name, reachable) for prefix, name, reachable in rows)


IPV4_BLOCKS = _blocks([
    ("0.0.0.0/8", "This network", False),
    ("0.0.0.0/32", "This host on this network", False),
    ("10.0.0.0/8", "Private-Use", False),
    ("100.64.0.0/10", "Shared Address Space", False),
    ("127.0.0.0/8", "Loopback", False),
    ("169.254.0.0/16", "Link Local", False),
    ("172.16.0.0/12", "Private-Use", False),
    ("192.0.0.0/24", "IETF Protocol Assignments", False),
    ("192.0.0.0/29", "IPv4 Service Continuity Prefix", False),
    ("192.0.0.8/32", "IPv4 dummy address", False),
    ("192.0.0.9/32", "Port Control Protocol Anycast", True),
    ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", True),
    ("192.0.0.170/32", "NAT64/DNS64 Discovery", False),
    ("192.0.0.171/32", "NAT64/DNS64 Discovery", False),
    ("192.0.2.0/24", "Documentation (TEST-NET-1)", False),
    ("192.31.196.0/24", "AS112-v4", True),
    ("192.52.193.0/24", "AMT", True),
    ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", False),
    ("192.168.0.0/16", "Private-Use", False),
    ("192.175.48.0/24", "Direct Delegation AS112 Service", True),
    ("198.18.0.0/15", "Benchmarking", False),
    ("198.51.100.0/24", "Documentation (TEST-NET-2)", False),
    ("203.0.113.0/24", "Documentation (TEST-NET-3)", False),
    ("240.0.0.0/4", "Reserved", False),
    ("255.255.255.255/32", "Limited Broadcast", False),
    ("224.0.0.0/4", "Multicast", False),  # the IPv4 Multicast Address Space Registry
])

IPV6_BLOCKS = _blocks([
    ("::/0", "outside global unicast 2000::/3 (reserved by the IETF)", False),  # IPv6 Address Space registry
    ("2000::/3", "Global Unicast", True),
    ("::1/128", "Loopback Address", False),
    ("::/128", "Unspecified Address", False),
    # The next four carry an IPv4 address, which decides first (a refused one is named); the
    # registry's own column is kept for the local-use prefix, which no public network routes.
    ("::ffff:0:0/96", "IPv4-mapped Address", True),  # registry: False, as an IPv6 destination
    ("64:ff9b::/96", "IPv4-IPv6 Translat.", True),
    ("64:ff9b:1::/48", "IPv4-IPv6 Translat. (local-use)", False),
    ("100::/64", "Discard-Only Address Block", False),
    ("100:0:0:1::/64", "Dummy IPv6 Prefix", False),
    ("2001::/23", "IETF Protocol Assignments", False),
    ("2001::/32", "TEREDO", True),  # N/A in the registry: judged by the IPv4 addresses inside
    ("2001:1::1/128", "Port Control Protocol Anycast", True),
    ("2001:1::2/128", "Traversal Using Relays around NAT Anycast", True),
    ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", True),
    ("2001:2::/48", "Benchmarking", False),
    ("2001:3::/32", "AMT", True),
    ("2001:4:112::/48", "AS112-v6", True),
    ("2001:10::/28", "Deprecated (previously ORCHID)", False),
    ("2001:20::/28", "ORCHIDv2", True),
    ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", True),
    ("2001:db8::/32", "Documentation", False),
    ("2002::/16", "6to4", True),  # N/A in the registry: judged by the IPv4 address inside
    ("2620:4f:8000::/48", "Direct Delegation AS112 Service", True),
    ("3fff::/20", "Documentation", False),
    ("5f00::/16", "Segment Routing (SRv6) SIDs", False),
    ("fc00::/7", "Unique-Local", False),
    ("fe80::/10", "Link-Local Unicast", False),
    ("fec0::/10", "Deprecated site-local", False),  # RFC 3879; outside 2000::/3 anyway
    ("ff00::/8", "Multicast", False),  # the IPv6 Multicast Address Space Registry
])

# Instance metadata services: credentials live there. Most sit in special blocks as well; naming
# the provider says why better than the block does, and Azure's host address is ordinary space.
METADATA = {
    ipaddress.ip_address("169.254.169.254"): "the cloud instance metadata service (AWS, Google Cloud, Azure, "
                                             "Oracle Cloud, OpenStack and others)",
    ipaddress.ip_address("169.254.170.2"): "AWS ECS's task metadata service",
    ipaddress.ip_address("169.254.0.23"): "Tencent Cloud's metadata service",
    ipaddress.ip_address("168.63.129.16"): "Microsoft Azure's host service (WireServer)",
    ipaddress.ip_address("100.100.100.200"): "Alibaba Cloud's metadata service",
    ipaddress.ip_address("192.0.0.192"): "Oracle Cloud Infrastructure's instance metadata service",
    ipaddress.ip_address("fd00:ec2::254"): "AWS's IPv6 instance metadata service",
    ipaddress.ip_address("fd20:ce::254"): "Google Cloud's IPv6 metadata service",
}

# Most specific first: the first block that holds an address is the one that decides.
_BY_SPECIFICITY = {
    4: sorted(IPV4_BLOCKS, key=lambda block: -block.network.prefixlen),
    6: sorted(IPV6_BLOCKS, key=lambda block: -block.network.prefixlen),
}
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def block_of(address: Address) -> Block | None:
    """The most specific registry block that holds `address` (None: ordinary IPv4 space)."""
    return next((b for b in _BY_SPECIFICITY[address.version] if address in b.network), None)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, NAT64 (the last 32 bits, as in the
    well-known /96 and the usual local-use /96s), 6to4, Teredo's server and client."""
    if address.ipv4_mapped:
        return [address.ipv4_mapped]
    if any(address in prefix for prefix in NAT64):
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour:
        return [address.sixtofour]
    if address.teredo:
        return list(address.teredo)
    return []


def address_refusal(address: Address) -> str | None:
    """Why a link may not be fetched from `address`, or None for a globally reachable one.

    >>> address_refusal(ipaddress.ip_address("192.0.0.192"))
    "Oracle Cloud Infrastructure's instance metadata service, in 192.0.0.0/24, IETF Protocol Assignments"
    >>> address_refusal(ipaddress.ip_address("10.1.2.3"))
    'in 10.0.0.0/8, Private-Use'
    >>> address_refusal(ipaddress.ip_address("93.184.216.34")) is None
    True
    """
    if address in METADATA:
        block = block_of(address)
        inside = f", in {block.network}, {block.name}" if block and not block.reachable else ""
        return METADATA[address] + inside
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%")[0])
        for ipv4 in embedded_ipv4(address):
            reason = address_refusal(ipv4)
            if reason:
                return f"carrying {ipv4}: {reason}"
    block = block_of(address)
    if block is None or block.reachable:
        return None
    return f"in {block.network}, {block.name}"
