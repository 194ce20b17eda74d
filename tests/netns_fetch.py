"""Run inside a network namespace of the test's own (`unshare -n -m`, see test_netns.py): puts the
test addresses on the namespace's loopback device, names them in a bind-mounted /etc/hosts, serves
a photo on each, and fetches them as the app would. Prints what reached the server, as JSON.

Nothing here can leave the machine: the namespace has no device but its own loopback."""

import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse

from captioner.fetch import FetchPolicy, URLRefused, fetch_bytes

PUBLIC = ["93.184.216.34", "2606:4700::1111"]  # public addresses, here only on this namespace's lo
PHOTO = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def setup(private: list[str]) -> dict[str, str]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in private + PUBLIC:
        if address.startswith("::ffff:"):
            continue  # IPv4-mapped: the connection goes to the IPv4 address inside
        subprocess.run(["ip", "addr", "add", address + ("/128" if ":" in address else "/32"), "dev", "lo"], check=True)
    names = {address: f"host{i}.test" for i, address in enumerate(private + PUBLIC)}
    hosts = tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False)
    hosts.write("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for a, n in names.items()))
    hosts.close()
    subprocess.run(["mount", "--bind", hosts.name, "/etc/hosts"], check=True)  # this mount namespace only
    return names


class Server(http.server.ThreadingHTTPServer):
    hits: dict[str, int] = {}

    def handle_error(self, request, client_address):
        pass


class Server6(Server):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        local = self.connection.getsockname()[0]
        Server.hits[local] = Server.hits.get(local, 0) + 1
        path, _, query = self.path.partition("?")
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", urllib.parse.parse_qs(query)["to"][0])
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PHOTO)))
        self.end_headers()
        self.wfile.write(PHOTO)

    def log_message(self, *args):
        pass


def url(host: str, path: str = "/photo.gif") -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}{path}"


def attempt(link: str, policy: FetchPolicy) -> str:
    try:
        return "fetched" if fetch_bytes(link, policy) == PHOTO else "wrong bytes"
    except URLRefused as error:
        return f"refused: {error}"


def main() -> None:
    private = json.loads(sys.argv[1])
    names = setup(private)
    for kind, host in ((Server, "0.0.0.0"), (Server6, "::")):
        threading.Thread(target=kind((host, 80), Handler).serve_forever, daemon=True).start()
    public = FetchPolicy(connect_timeout_s=2, deadline_s=5)
    report = {"public": {}, "private": {}, "allowed_when_asked": {}, "hits_before_control": None}
    for address in PUBLIC:
        report["public"][address] = [attempt(url(address), public), attempt(url(names[address]), public)]
    for address in private:
        through = url(PUBLIC[0], "/redirect?to=" + urllib.parse.quote(url(address)))
        report["private"][address] = {"direct": attempt(url(address), public), "name": attempt(url(names[address]), public),
                                      "redirect": attempt(through, public)}
    report["hits_before_control"] = dict(Server.hits)
    # The control: the same links with the address check lifted do reach the server, so the zero
    # hits above are the policy's doing, not a namespace that routes nowhere.
    intranet = FetchPolicy(allow_private=True, connect_timeout_s=2, deadline_s=5)
    for address in private:
        report["allowed_when_asked"][address] = attempt(url(address), intranet)
    report["hits"] = dict(Server.hits)
    print(json.dumps(report))
    os._exit(0)


if __name__ == "__main__":
    main()
