"""The address policy as data: every registry row at its edges, hand-checked addresses, and the
same decisions on every Python the project supports (pure functions, no traffic)."""

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from captioner import addresses
from captioner.addresses import IPV4_BLOCKS, IPV6_BLOCKS, METADATA, address_refusal

ROWS = IPV4_BLOCKS + IPV6_BLOCKS


def expected(address) -> bool:
    """Refused? Worked out independently of block_of(): every row holding the address, the longest
    prefix deciding, an IPv4 address carried inside an IPv6 one deciding first."""
    if address in METADATA:
        return True
    if address.version == 6:
        carried = addresses.embedded_ipv4(address)
        if any(expected(inner) for inner in carried):
            return True
    holding = [row for row in ROWS if row.network.version == address.version and address in row.network]
    return bool(holding) and not max(holding, key=lambda row: row.network.prefixlen).reachable


def edges():
    for row in ROWS:
        first, last = row.network[0], row.network[-1]
        yield row, first
        yield row, last
        if int(first) > 0:
            yield row, first - 1
        if int(last) < (2**32 if first.version == 4 else 2**128) - 1:
            yield row, last + 1


@pytest.mark.parametrize("row, address", list(edges()), ids=lambda value: str(value.network if hasattr(value, "network") else value))
def test_every_row_decides_at_its_first_and_last_address_and_one_beyond(row, address):
    refusal = address_refusal(address)
    assert (refusal is not None) == expected(address), (address, refusal)
    if refusal and address in row.network and address not in METADATA and not (address.version == 6 and addresses.embedded_ipv4(address)):
        assert f"in {addresses.block_of(address).network}, {addresses.block_of(address).name}" == refusal


# Hand-checked against the IANA registries (and the providers' documentation for metadata).
KNOWN = {
    "192.0.0.192": "Oracle Cloud Infrastructure's instance metadata service, in 192.0.0.0/24, IETF Protocol Assignments",
    "168.63.129.16": "Microsoft Azure's host service (WireServer)",  # ordinary space: no block to name
    "100.100.100.200": "Alibaba Cloud's metadata service, in 100.64.0.0/10, Shared Address Space",
    "fd00:ec2::254": "AWS's IPv6 instance metadata service, in fc00::/7, Unique-Local",
    "169.254.169.254": "the cloud instance metadata service (AWS, Google Cloud, Azure, Oracle Cloud, OpenStack and "
                       "others), in 169.254.0.0/16, Link Local",
    "192.0.0.1": "in 192.0.0.0/29, IPv4 Service Continuity Prefix",
    "192.0.0.100": "in 192.0.0.0/24, IETF Protocol Assignments",
    "192.88.99.1": "in 192.88.99.0/24, Deprecated (6to4 Relay Anycast)",
    "0.1.2.3": "in 0.0.0.0/8, This network",
    "100.64.0.1": "in 100.64.0.0/10, Shared Address Space",
    "198.19.255.255": "in 198.18.0.0/15, Benchmarking",
    "203.0.113.7": "in 203.0.113.0/24, Documentation (TEST-NET-3)",
    "239.255.255.250": "in 224.0.0.0/4, Multicast",
    "100::1": "in 100::/64, Discard-Only Address Block",
    "2001:2::1": "in 2001:2::/48, Benchmarking",
    "3fff::1": "in 3fff::/20, Documentation",
    "5f00::1": "in 5f00::/16, Segment Routing (SRv6) SIDs",
    "64:ff9b:1::808:808": "in 64:ff9b:1::/48, IPv4-IPv6 Translat. (local-use)",
    "::ffff:192.0.0.192": "carrying 192.0.0.192: Oracle Cloud Infrastructure's instance metadata service, in "
                          "192.0.0.0/24, IETF Protocol Assignments",
    "2002:c0a8:101::1": "carrying 192.168.1.1: in 192.168.0.0/16, Private-Use",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe": "carrying 10.0.0.1: in 10.0.0.0/8, Private-Use",  # Teredo client
    "::1.2.3.4": "in ::/0, outside global unicast 2000::/3 (reserved by the IETF)",
    "fec0::1": "in fec0::/10, Deprecated site-local",
    # Globally reachable, though inside blocks that are not:
    "192.0.0.9": None, "192.0.0.10": None, "192.31.196.1": None, "192.52.193.1": None, "192.175.48.1": None,
    "2001:1::1": None, "2001:3::1": None, "2001:20::1": None, "2620:4f:8000::1": None,
    # Ordinary public space, and public IPv4 carried in IPv6:
    "8.8.8.8": None, "1.1.1.1": None, "93.184.216.34": None, "2606:4700:4700::1111": None,
    "::ffff:8.8.8.8": None, "64:ff9b::808:808": None, "2002:808:808::1": None,
}


@pytest.mark.parametrize("address, reason", KNOWN.items())
def test_hand_checked_addresses(address, reason):
    assert address_refusal(ipaddress.ip_address(address)) == reason


def test_the_decision_does_not_use_the_running_pythons_tables():
    source = Path(addresses.__file__).read_text()
    for attribute in ("is_global", "is_private", "is_reserved", "is_link_local", "is_loopback", "is_multicast"):
        assert f".{attribute}" not in source


def other_pythons() -> list[str]:
    """Interpreters of each supported version found here (pyenv's versions too; not its shims)."""
    found: dict[str, str] = {}
    for version in ("3.11", "3.12", "3.13", "3.14"):
        candidates = [shutil.which(f"python{version}"), *sorted(Path.home().glob(f".pyenv/versions/{version}*/bin/python3"))]
        for candidate in filter(None, candidates):
            if "/shims/" in str(candidate) or version in found:
                continue
            if subprocess.run([str(candidate), "-c", "pass"], capture_output=True).returncode == 0:
                found[version] = str(candidate)
    return list(found.values())


@pytest.mark.skipif(len(other_pythons()) < 2, reason="fewer than two Python versions on this machine")
def test_the_same_decisions_on_every_python_here():
    sample = sorted({str(address) for _, address in edges()} | set(KNOWN))
    program = ("import importlib.util, ipaddress, json, sys; "
               f"spec = importlib.util.spec_from_file_location('addresses', {addresses.__file__!r}); "
               "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
               "print(json.dumps([m.address_refusal(ipaddress.ip_address(a)) for a in json.loads(sys.stdin.read())]))")
    ours = [address_refusal(ipaddress.ip_address(a)) for a in sample]
    versions = set()
    for python in other_pythons():
        done = subprocess.run([python, "-c", program], input=json.dumps(sample), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (python, done.stderr[-2000:])
        assert json.loads(done.stdout) == ours, python
        versions.add(subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                    text=True).stdout)
    assert len(versions) >= 2
