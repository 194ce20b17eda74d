"""On every door, an image link reaches the network only through fetch.py, whatever gradio does.

Python's audit hook sees every `socket.connect` this process makes: each one to the test's image
server (on 127.0.0.1, served to an app that allows private links, as an intranet deployment runs)
must come from fetch.py's frames. The CLI runs in a process of its own with the same hook. Then
the same doors on an app built as if gradio had stopped calling the file inputs' link hook: its
own downloader is turned off (gradio_changes.py), and still nothing else connects.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading

import pytest
from gradio import processing_utils
from gradio_client import handle_file

from captioner.app.service import AppLimits
from helpers import SRC, RunningApp, encode, files_handler, mcp_session, photo, serve_on_loopback

IMAGES = {"/cat.png": encode(photo(41)), "/dog.png": encode(photo(42))}
FETCH = os.path.join("captioner", "fetch.py")
_watched = {"port": None}
_connections: list[bool] = []  # per connection to the watched port: was fetch.py on the stack?
_lock = threading.Lock()


def _audit(event, args):
    if event != "socket.connect" or _watched["port"] is None:
        return
    address = args[1]
    if isinstance(address, tuple) and len(address) >= 2 and address[1] == _watched["port"]:
        frame, through_fetch = sys._getframe(1), False
        while frame is not None and not through_fetch:
            through_fetch = frame.f_code.co_filename.endswith(FETCH)
            frame = frame.f_back
        with _lock:
            _connections.append(through_fetch)


sys.addaudithook(_audit)  # inert unless a test below names a port to watch
GRADIO_GET = processing_utils.async_ssrf_protected_get  # before any test below changes it


@pytest.fixture(scope="module")
def images_server():
    with serve_on_loopback(files_handler(IMAGES)) as url:
        _watched["port"] = int(url.rsplit(":", 1)[1])
        try:
            yield url
        finally:
            _watched["port"] = None


def connections_while(action) -> list[bool]:
    with _lock:
        _connections.clear()
    action()
    with _lock:
        return list(_connections)


def every_door(app, url):
    """Each door an image link can come in by, with what it answered."""
    client = app.client()
    settings = {"strategy": "beam"}
    mcp = f"{app.url}gradio_api/mcp/"
    return {
        "page and API (/caption)": lambda: client.predict(handle_file(f"{url}/cat.png"), api_name="/caption"),
        "many images (/caption_many)": lambda: client.predict([handle_file(f"{url}/dog.png")], **settings,
                                                              api_name="/caption_many"),
        "caption_image over the API": lambda: client.predict(f"{url}/cat.png", api_name="/caption_image"),
        "caption_images over the API": lambda: client.predict([f"{url}/dog.png"], api_name="/caption_images"),
        "MCP tools": lambda: asyncio.run(mcp_session(mcp, [("caption_image", {"image_url": f"{url}/cat.png"}),
                                                           ("caption_images", {"image_urls": [f"{url}/dog.png"]})])),
    }


@pytest.fixture(scope="module")
def intranet_app(captioner):
    app = RunningApp(captioner, AppLimits(allow_private_urls=True))
    yield app
    app.close()


@pytest.mark.parametrize("door", ["page and API (/caption)", "many images (/caption_many)",
                                  "caption_image over the API", "caption_images over the API", "MCP tools"])
def test_each_door_fetches_links_only_through_fetch_py(intranet_app, images_server, door):
    answers = []
    seen = connections_while(lambda: answers.append(every_door(intranet_app, images_server)[door]()))
    assert answers and seen, f"{door}: no connection to the image server at all"
    assert all(seen), f"{door}: {seen.count(False)} of {len(seen)} connections bypassed fetch.py"


def test_the_command_line_fetches_links_only_through_fetch_py(tiny_checkpoint, images_server, tmp_path):
    record = tmp_path / "connections.txt"
    port = _watched["port"]
    program = f"""
import sys
def audit(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1][1] == {port}:
        frame, through = sys._getframe(1), False
        while frame is not None and not through:
            through = frame.f_code.co_filename.endswith({FETCH!r})
            frame = frame.f_back
        with open({str(record)!r}, "a") as out:
            out.write(f"{{through}}\\n")
sys.addaudithook(audit)
from captioner.cli import main
sys.exit(main(sys.argv[1:]))
"""
    done = subprocess.run(
        [sys.executable, "-c", program, "caption", "--json", "--allow-private-urls", "--model", str(tiny_checkpoint),
         f"{images_server}/cat.png", f"{images_server}/dog.png"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": SRC},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [json.loads(line)["path"] for line in done.stdout.splitlines()] == [f"{images_server}/cat.png",
                                                                             f"{images_server}/dog.png"]
    assert record.read_text().split() == ["True", "True"]


@pytest.fixture(scope="module")
def app_of_a_gradio_without_the_hook(captioner):
    """The app as it would be built on a gradio that caches files through some other method: the
    file inputs' overrides are never called, and gradio_changes.py finds no hook to trust."""

    from captioner.app import components, gradio_changes

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(processing_utils, "async_ssrf_protected_get", processing_utils.async_ssrf_protected_get)
        patch.setattr(gradio_changes, "LINK_HOOK", "a_renamed_hook")
        for component in (components.CaptionImage, components.CaptionFiles):
            patch.delattr(component, "async_move_resource_to_block_cache")
        app = RunningApp(captioner, AppLimits(allow_private_urls=True))
        assert app.demo.gradio_changes["links"].startswith("refused")
        yield app
        app.close()


@pytest.mark.parametrize("door", ["page and API (/caption)", "many images (/caption_many)",
                                  "caption_image over the API", "caption_images over the API", "MCP tools"])
def test_without_the_hook_no_door_lets_gradio_fetch_a_link(app_of_a_gradio_without_the_hook, images_server, door):
    def call():
        # A caption (fetched by fetch.py) or a refusal (gradio's downloader is off; through
        # gradio_client that may arrive as a bare 400): either is fine, a bypass is not.
        try:
            every_door(app_of_a_gradio_without_the_hook, images_server)[door]()
        except Exception:  # noqa: BLE001
            pass

    seen = connections_while(call)
    assert all(seen), f"{door}: {seen.count(False)} of {len(seen)} connections bypassed fetch.py"
    assert app_of_a_gradio_without_the_hook.client().predict(f"{images_server}/cat.png", api_name="/caption_image")


def test_the_watch_would_see_gradio_fetching_a_link_itself(images_server, tmp_path, monkeypatch):
    """The checks above can fail: gradio's own downloader, let through to loopback, is caught."""
    import safehttpx

    monkeypatch.setattr(safehttpx, "is_public_ip", lambda ip: True)  # gradio's own policy refuses loopback
    monkeypatch.setattr(processing_utils, "async_ssrf_protected_get", GRADIO_GET)  # as gradio ships it
    seen = connections_while(lambda: asyncio.run(
        processing_utils.async_ssrf_protected_download(f"{images_server}/cat.png", str(tmp_path))))
    assert seen and not any(seen)
