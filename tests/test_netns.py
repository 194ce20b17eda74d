"""Against real addresses without leaving the machine: each test runs in a network namespace of its
own (`unshare -n -m`, as root), whose only device is its own loopback, with the test addresses put
on it. Private, shared, link-local and metadata addresses must get no request, whether named
directly, by a name in /etc/hosts or through a redirect from a public address; and a local Ray,
watched by strace, must connect to loopback only."""

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SRC, photo

HERE = Path(__file__).resolve().parent
PRIVATE = ["10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.100.100.200", "100.64.0.1",
           "192.0.0.192", "192.0.0.8", "192.88.99.1", "198.18.0.1", "168.63.129.16", "fd00:ec2::254",
           "fd20:ce::254", "169.254.1.1", "2001:db8::1", "::ffff:10.0.0.1"]


def _namespaces_available() -> str | None:
    if os.geteuid() != 0:
        return "creating a network namespace needs root (CI runs as root)"
    if not (shutil.which("unshare") and shutil.which("ip")):
        return "needs unshare (util-linux) and ip (iproute2)"
    probe = subprocess.run(["unshare", "-n", "-m", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -n -m is not permitted here: {probe.stderr.strip()}"


pytestmark = pytest.mark.skipif(_namespaces_available() is not None, reason=str(_namespaces_available()))


def in_namespace(command: list[str], timeout: int = 300, **options) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(["unshare", "-n", "-m", *command], env=env, capture_output=True, text=True,
                          timeout=timeout, **options)


@pytest.fixture(scope="module")
def namespace_report():
    done = in_namespace([sys.executable, str(HERE / "netns_fetch.py"), json.dumps(PRIVATE)])
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("address", PRIVATE)
def test_a_private_or_metadata_address_gets_no_request_by_any_route(namespace_report, address):
    from captioner.addresses import address_refusal

    outcomes = namespace_report["private"][address]
    reason = address_refusal(ipaddress.ip_address(address))
    assert reason, address
    for route in ("direct", "name", "redirect"):
        assert outcomes[route].startswith("refused: ") and reason in outcomes[route], (route, outcomes[route])
    parsed = ipaddress.ip_address(address)
    served = str(getattr(parsed, "ipv4_mapped", None) or parsed)  # where the server sees it arrive
    assert namespace_report["hits_before_control"].get(served, 0) == 0
    # The control: asked to (an intranet app), the same link reaches the server in the namespace.
    assert namespace_report["allowed_when_asked"][address] == "fetched"
    assert namespace_report["hits"].get(served, 0) >= 1


def test_public_addresses_are_fetched_directly_and_by_name(namespace_report):
    for address, outcomes in namespace_report["public"].items():
        assert outcomes == ["fetched", "fetched"], (address, outcomes)


def test_the_oracle_cloud_metadata_address_is_named_in_the_refusal(namespace_report):
    assert "Oracle Cloud Infrastructure's instance metadata service" in namespace_report["private"]["192.0.0.192"]["direct"]


_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_a_local_ray_run_connects_to_loopback_only(tiny_checkpoint, tmp_path):
    """The CLI's own local Ray, started as a person starts it (no proxy settings of the tests'),
    inside a namespace where nothing could leave anyway; strace sees every connect and send."""
    pytest.importorskip("ray")
    photo(1, (24, 24)).save(tmp_path / "a.png")
    trace = tmp_path / "trace"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("RAY_")}
    env.update(PYTHONPATH=SRC, RAY_USAGE_STATS_ENABLED="0")
    # --seccomp-bpf: only the traced calls stop the process (the rest run at full speed).
    script = (f"ip link set lo up && exec strace -f --seccomp-bpf -qq -e trace=connect,sendto,sendmsg -o {trace} "
              f"{sys.executable} -m captioner caption --ray --actors 1 --model {tiny_checkpoint} --json {tmp_path / 'a.png'}")
    done = subprocess.run(["unshare", "-n", "-m", "sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["caption"]
    addresses = {a or b for a, b in _ADDRESS.findall(trace.read_text(errors="replace"))}
    assert addresses, "strace saw no inet traffic at all: the probe is broken"
    outside = {a for a in addresses if not _is_loopback(a)}
    assert not outside, f"a local Ray reached beyond loopback: {sorted(outside)}"
    assert "metadata.google.internal" not in trace.read_text(errors="replace")


def _is_loopback(text: str) -> bool:
    address = ipaddress.ip_address(text)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback or address.is_unspecified
