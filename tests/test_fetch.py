"""The safe fetcher: the address policy as a pure function (fake resolvers, no traffic), and
downloads from a server of the test's own on 127.0.0.1 (loopback only, with allow_private)."""

import http.server
import ipaddress
import time

import pytest

from captioner import InvalidImage, load_image
from captioner.fetch import FetchPolicy, URLRefused, address_refusal, check_url, fetch_bytes, redirect_target
from helpers import encode, photo, serve_on_loopback

PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2001:4860:4860::8888"]
REFUSED = {
    "127.0.0.1": "Loopback", "127.8.9.10": "Loopback", "::1": "Loopback Address",
    "10.1.2.3": "Private-Use", "172.16.5.4": "Private-Use", "192.168.1.1": "Private-Use", "fc00::1": "Unique-Local",
    "169.254.169.254": "metadata service", "169.254.1.1": "Link Local", "fe80::1": "Link-Local Unicast",
    "100.64.0.1": "Shared Address Space", "100.127.255.254": "Shared Address Space",
    "224.0.0.1": "Multicast", "ff02::1": "Multicast",
    "0.0.0.0": "This host on this network", "::": "Unspecified Address",
    "240.0.0.1": "Reserved", "255.255.255.255": "Limited Broadcast",
    "::ffff:127.0.0.1": "Loopback", "::ffff:10.0.0.1": "Private-Use", "::ffff:169.254.169.254": "metadata service",
    "64:ff9b::a00:1": "Private-Use", "2002:a00:1::": "Private-Use",
    "192.0.2.1": "Documentation (TEST-NET-1)", "198.18.0.1": "Benchmarking",
    "192.0.0.192": "Oracle Cloud", "192.88.99.1": "6to4 Relay Anycast",
}


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address, reason", REFUSED.items())
def test_non_public_addresses_are_refused_with_the_reason(address, reason):
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None and reason in refusal


def fake_resolver(table):
    def resolve(host, port):
        if host not in table:
            raise URLRefused(f"the host {host} could not be found")
        return table[host]
    return resolve


NAMES = fake_resolver({
    "images.example": ["93.184.216.34", "2606:2800:220:1::1"],
    "metadata.example": ["169.254.169.254"],
    "split.example": ["93.184.216.34", "10.0.0.7"],  # one public, one private: refused
    "mapped.example": ["::ffff:192.168.0.1"],
})


def test_a_public_name_is_pinned_to_the_addresses_it_resolved_to():
    target = check_url("https://images.example:8443/a/cat.jpg?size=2", FetchPolicy(), NAMES)
    assert (target.scheme, target.host, target.port, target.path) == ("https", "images.example", 8443, "/a/cat.jpg?size=2")
    assert [str(a) for a in target.addresses] == ["93.184.216.34", "2606:2800:220:1::1"]


@pytest.mark.parametrize("url, message", [
    ("http://metadata.example/latest/meta-data/", "metadata service"),
    ("http://split.example/cat.jpg", "10.0.0.7"),
    ("http://mapped.example/cat.jpg", "Private-Use"),
    ("http://169.254.169.254/latest/", "metadata service"),
    ("http://[::1]:8080/", "Loopback"),
    ("http://localhost/", "could not be found"),  # the fake resolver knows no localhost
    ("ftp://images.example/cat.jpg", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("http://images.example:99999/", "port"),
    ("http:///nohost", "no host"),
])
def test_refused_links_say_why(url, message):
    with pytest.raises(URLRefused, match=message):
        check_url(url, FetchPolicy(), NAMES)


def test_a_redirect_from_a_public_to_a_private_address_is_refused():
    with pytest.raises(URLRefused, match="Private-Use"):
        redirect_target("http://images.example/a.jpg", "http://split.example/b.jpg", FetchPolicy(), NAMES)
    with pytest.raises(URLRefused, match="metadata service"):
        redirect_target("http://images.example/a.jpg", "//169.254.169.254/x", FetchPolicy(), NAMES)
    url, target = redirect_target("http://images.example/a/b.jpg", "../c.jpg", FetchPolicy(), NAMES)
    assert url == "http://images.example/c.jpg" and target.path == "/c.jpg"


def test_allow_private_lifts_the_address_check_only():
    assert check_url("http://10.0.0.7/x.png", FetchPolicy(allow_private=True), NAMES).port == 80
    with pytest.raises(URLRefused, match="only http and https"):
        check_url("gopher://10.0.0.7/", FetchPolicy(allow_private=True), NAMES)


PNG = encode(photo(5))


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/cat.png":
            self._send(PNG, "image/png")
        elif self.path == "/page.png":
            self._send(b"<!doctype html><html><body>not an image</body></html>", "image/png")
        elif self.path == "/huge":
            self._send(b"\0" * 40_000_000, "image/png")
        elif self.path == "/huge-unannounced":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"\0" * 1_000_000)
        elif self.path == "/lying-length":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                self.wfile.write(b"\0" * 30_000_000)
            except OSError:
                pass
        elif self.path == "/trickle":
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(60):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.25)
            except OSError:
                pass
        elif self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", f"/loop{len(self.path)}")
            self.end_headers()
        elif self.path == "/moved":
            self.send_response(301)
            self.send_header("Location", "/cat.png")
            self.end_headers()
        else:
            self.send_error(404)

    def _send(self, body, kind):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass


@pytest.fixture(scope="module")
def server():
    with serve_on_loopback(Handler) as url:
        yield url


LOOPBACK = FetchPolicy(allow_private=True, max_bytes=20 * 1024 * 1024, deadline_s=3.0)


def test_an_image_link_downloads_and_decodes(server):
    data = fetch_bytes(f"{server}/cat.png", LOOPBACK)
    assert data == PNG and load_image(data).size == photo(5).size
    assert fetch_bytes(f"{server}/moved", LOOPBACK) == PNG  # a redirect inside the policy is followed


def test_without_the_flag_the_same_link_is_refused(server):
    with pytest.raises(URLRefused, match="Loopback"):
        fetch_bytes(f"{server}/cat.png", FetchPolicy())


@pytest.mark.parametrize("path", ["/huge", "/huge-unannounced"])
def test_bodies_over_the_cap_are_stopped(server, path):
    started = time.monotonic()
    with pytest.raises(URLRefused, match="larger than the 20 MB limit"):
        fetch_bytes(f"{server}{path}", LOOPBACK)
    assert time.monotonic() - started < 10


def test_a_false_content_length_reads_no_more_than_it_declared(server):
    assert fetch_bytes(f"{server}/lying-length", LOOPBACK) == b"\0" * 100


def test_a_trickling_server_is_cut_off_at_the_deadline(server):
    started = time.monotonic()
    with pytest.raises(URLRefused, match="longer than 3 s"):
        fetch_bytes(f"{server}/trickle", LOOPBACK)
    assert 2.5 < time.monotonic() - started < 6


def test_a_redirect_loop_stops(server):
    with pytest.raises(URLRefused, match="redirected more than 3 times"):
        fetch_bytes(f"{server}/loop", LOOPBACK)


def test_html_served_as_png_is_judged_by_its_bytes(server):
    data = fetch_bytes(f"{server}/page.png", LOOPBACK)
    with pytest.raises(InvalidImage, match="HTML"):
        load_image(data)


def test_a_missing_page_says_what_the_server_answered(server):
    with pytest.raises(URLRefused, match="404"):
        fetch_bytes(f"{server}/nothing-here.png", LOOPBACK)
