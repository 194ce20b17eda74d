"""Images by URL, fetched safely: the one downloader behind the app, the API, MCP, the CLI and bulk.

A URL someone else chose must not turn the server into a proxy into its own network (SSRF), nor
hold a worker or memory without bound. So:
- http and https only; the host is resolved once and every address it resolves to must be globally
  reachable by IANA's special-purpose registries and no cloud metadata service (addresses.py). The
  connection goes to an address that was checked, never through a second lookup that could be
  rebound;
- each redirect is checked the same way, and there are at most a few;
- the body is streamed with a size cap (a missing or false Content-Length changes nothing), under a
  connect timeout and a total deadline, and only a few fetches run at once;
- what arrives is judged by its bytes (images.load_image), never by its Content-Type.
`allow_private` lifts the address check, for intranets and for tests on loopback.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from .addresses import address_refusal
from .errors import InvalidImage

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
REDIRECTS = (301, 302, 303, 307, 308)
_slots = threading.BoundedSemaphore(4)  # fetches at once, per process
log = logging.getLogger("captioner.fetch")
# WHATWG URL: the characters a browser leaves as they are in a path and in a query; the rest
# (spaces, quotes, angle brackets, non-ASCII) it percent-encodes as UTF-8 before sending.
_PATH_SAFE = "!$%&'()*+,/:;=@[]^|-._~"
_QUERY_SAFE = "!$%&()*+,/:;=?@[]^`{|}-._~"
_LINK = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")
_HOST = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$")


class URLRefused(InvalidImage):
    """The URL is not fetched, or its download was stopped; the message says why."""


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 20 * 1024 * 1024
    allow_private: bool = False
    connect_timeout_s: float = 5.0
    deadline_s: float = 20.0
    max_redirects: int = 3


def is_url(value) -> bool:
    """Whether `value` reads as a link (`scheme://...`). Every such value goes to fetch_bytes,
    which fetches http and https only and refuses the rest with a message: an `ftp://` or
    `file://` link is never mistaken for a file name."""
    return isinstance(value, str) and _LINK.match(value) is not None


def normalise_url(url: str) -> str:
    """The link as a browser sends it: tabs and newlines dropped, a non-ASCII host IDNA-encoded,
    spaces and non-ASCII in path and query percent-encoded, backslashes read as slashes, the
    fragment (never sent) dropped. A link that cannot be read is refused with what is wrong with it.

    >>> normalise_url("http://Example.com/café ☕ photo.png?q=a b#top")
    'http://example.com/caf%C3%A9%20%E2%98%95%20photo.png?q=a%20b'
    """
    text = re.sub("[\t\n\r]", "", url.strip(" \x00-\x1f"))
    before, mark, query = text.partition("?")
    text = before.replace("\\", "/") + mark + query  # a browser reads \ as / before the query
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise URLRefused("the link contains control characters; copy it again from the address bar")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:  # "Invalid IPv6 URL", or a port that is not a number
        reason = "its port is not a number from 1 to 65535" if "port" in str(error).lower() else "its host is malformed"
        raise URLRefused(f"the link cannot be read: {reason}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise URLRefused(f"only http and https image links are fetched; got {parts.scheme or 'no'} scheme")
    host = _host(parts.hostname or "")
    if port == 0:
        raise URLRefused("the link cannot be read: its port is not a number from 1 to 65535")
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    path = quote(parts.path, safe=_PATH_SAFE) or "/"
    return urlunsplit((scheme, netloc, path, quote(parts.query, safe=_QUERY_SAFE), ""))


def _host(host: str) -> str:
    if not host:
        raise URLRefused("the link has no host")
    try:
        return str(ipaddress.ip_address(host.split("%")[0]))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise URLRefused(f"the link's host {host!r} is not a valid host name") from None
    if not _HOST.match(ascii_host):
        raise URLRefused(f"the link's host {host!r} is not a valid host name")
    return ascii_host


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise URLRefused(f"the host {host} could not be found") from None
    return [info[4][0] for info in infos]


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[Address, ...]


def check_url(url: str, policy: FetchPolicy, resolver: Resolver = system_resolver) -> Target:
    """Parse `url`, resolve its host once and check every address; the connection uses these."""
    parts = urlsplit(normalise_url(url))
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in dict.fromkeys(resolver(host, port))]
    if not addresses:
        raise URLRefused(f"the host {host} could not be found")
    if not policy.allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                shown = host if str(address) == host else f"{host} ({address})"
                raise URLRefused(f"{shown} is {reason}: links to it are refused")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, tuple(addresses))


def redirect_target(current: str, location: str | None, policy: FetchPolicy,
                    resolver: Resolver = system_resolver) -> tuple[str, Target]:
    """Where a redirect leads, checked like the first link."""
    if not location:
        raise URLRefused("the server redirected without saying where")
    url = urljoin(current, location)
    return url, check_url(url, policy, resolver)


def fetch_bytes(url: str, policy: FetchPolicy = FetchPolicy(), resolver: Resolver = system_resolver) -> bytes:
    """Download an image link under `policy`; every refusal is a URLRefused with a clear message."""
    deadline = time.monotonic() + policy.deadline_s
    if not _slots.acquire(timeout=policy.deadline_s):
        raise URLRefused("too many image links are being fetched right now; try again shortly")
    try:
        target = check_url(url, policy, resolver)
        for _ in range(policy.max_redirects + 1):
            connection = _connect(target, policy, deadline)
            try:
                response = _get(connection, target, deadline)
                if response.status in REDIRECTS:
                    url, target = redirect_target(url, response.getheader("Location"), policy, resolver)
                    continue
                if response.status != 200:
                    raise URLRefused(f"the server answered {response.status} {response.reason}".rstrip())
                return _read_capped(connection, response, policy, deadline)
            finally:
                connection.close()
        raise URLRefused(f"the link redirected more than {policy.max_redirects} times")
    finally:
        _slots.release()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to a checked address while naming the host in the request (and in TLS)."""

    def __init__(self, target: Target, address: Address, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self.address), self.port), self.timeout)
        self.pinned_sock = self.sock  # http.client drops self.sock once the response owns it

    def set_timeout(self, seconds: float) -> None:
        self.pinned_sock.settimeout(max(0.1, seconds))


class _PinnedHTTPS(_PinnedHTTP):
    context = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self.pinned_sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


def _connect(target: Target, policy: FetchPolicy, deadline: float) -> _PinnedHTTP:
    kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    failure: Exception | None = None
    for address in target.addresses:
        timeout = min(policy.connect_timeout_s, max(0.1, deadline - time.monotonic()))
        connection = kind(target, address, timeout)
        try:
            connection.connect()
            return connection
        except (OSError, ssl.SSLError) as error:
            connection.close()
            failure = error
    raise URLRefused(f"could not connect to {target.host}: {_why(failure, target.host)}")


def _get(connection: _PinnedHTTP, target: Target, deadline: float) -> http.client.HTTPResponse:
    try:
        connection.set_timeout(deadline - time.monotonic())
        connection.request("GET", target.path, headers={
            "User-Agent": "captioner (image captioning)", "Accept": "image/*", "Accept-Encoding": "identity"})
        return connection.getresponse()
    except (OSError, http.client.HTTPException) as error:
        raise URLRefused(f"{target.host} did not send the image: {_why(error, target.host)}") from None


def _read_capped(connection: _PinnedHTTP, response: http.client.HTTPResponse, policy: FetchPolicy,
                 deadline: float) -> bytes:
    limit = f"the image is larger than the {policy.max_bytes / 2**20:.0f} MB limit"
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise URLRefused(limit)
    chunks, size = [], 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise URLRefused(f"the download took longer than {policy.deadline_s:.0f} s and was stopped")
        try:
            connection.set_timeout(remaining)
            chunk = response.read1(65536)  # at most one read: a trickle cannot stretch a call
        except (OSError, http.client.HTTPException) as error:
            if isinstance(error, TimeoutError) or time.monotonic() >= deadline:
                raise URLRefused(f"the download took longer than {policy.deadline_s:.0f} s and was stopped") from None
            raise URLRefused(f"the download broke off: {_why(error, 'the download')}") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > policy.max_bytes:
            raise URLRefused(limit)
        chunks.append(chunk)


def _why(error: Exception | None, where: str) -> str:
    """A sentence for the person who sent the link; the library's own text goes to the server's log."""
    if error is None:
        return "it has no address to connect to"
    log.info("fetch from %s failed: %s: %s", where, type(error).__name__, error)
    if isinstance(error, ssl.SSLCertVerificationError):
        return "its security certificate could not be verified"
    if isinstance(error, ssl.SSLError):
        return "the secure (TLS) connection failed"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "it did not answer in time"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(error, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "the connection was closed"
    if isinstance(error, http.client.HTTPException):
        return "its answer was not valid HTTP"
    if isinstance(error, OSError) and error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "the network or host cannot be reached"
    return "the connection failed"
