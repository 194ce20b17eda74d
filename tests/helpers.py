"""What the tests share besides fixtures: images made in memory, loopback servers, the app served
in this process, the CLI run as a user runs it. Test modules import from here, never from each
other or from conftest."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

SRC = str(Path(__file__).resolve().parents[1] / "src")


def photo(seed: int, size=(64, 48), mode="RGB") -> Image.Image:
    """A seeded noisy gradient: different seeds give different captions from the tiny model."""
    rng = np.random.default_rng(seed)
    width, height = size
    base = rng.integers(0, 256, size=3)
    y, x = np.mgrid[0:height, 0:width]
    pixels = (base + 200 * np.stack([x / width, y / height, (x + y) / (width + height)], -1)) % 256
    pixels = pixels + rng.normal(0, 25, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@contextlib.contextmanager
def serve_on_loopback(handler):
    """An HTTP server on 127.0.0.1 in a thread; yields its base URL."""
    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # clients that hang up early (size caps, deadlines) are what the tests make

    httpd = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def files_handler(files: dict[str, bytes]):
    """A request handler serving `files` (path -> body) and 404 for anything else."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def free_port() -> int:
    from load import free_loopback_port  # bench/load.py: outside the range other processes' connections use

    return free_loopback_port()


class RunningApp:
    """The real app (app.py's launch settings) served on 127.0.0.1 in this process."""

    def __init__(self, captioner, limits=None):
        from captioner.app.ui import AppLimits, build_demo

        app_module = import_app(captioner.source)
        self.limits = limits or AppLimits()
        self.demo = build_demo(captioner, self.limits)
        self.service = self.demo.caption_service
        for attempt in range(5):
            options = app_module.launch_options(self.limits, "127.0.0.1", free_port())
            try:
                self.demo.launch(prevent_thread_lock=True, quiet=True, **options)
                break
            except OSError:  # another process bound the port between the check and the launch
                if attempt == 4:
                    raise
        self.url = self.demo.local_url

    def client(self):
        from load import loopback_client  # bench/load.py: the benchmarks' client, same settings

        return loopback_client(self.url)

    def close(self):
        self.demo.close()


def import_app(model):
    """app.py builds Spaces' demo when it is first imported: point that import at `model`, and
    leave the environment as it was for the tests after."""
    if "app" in sys.modules:
        return sys.modules["app"]
    saved = os.environ.get("CAPTIONER_MODEL")
    os.environ["CAPTIONER_MODEL"] = str(model)
    try:
        import app
    finally:
        if saved is None:
            del os.environ["CAPTIONER_MODEL"]
        else:
            os.environ["CAPTIONER_MODEL"] = saved
    return app


@contextlib.contextmanager
def batch_sizes_logged():
    """The size of each generate call, in order, from the batcher's own log line (batching.py)."""
    import logging

    class Sizes(logging.Handler):
        def __init__(self):
            super().__init__(logging.INFO)
            self.seen = []

        def emit(self, record):
            self.seen.append(json.loads(record.getMessage())["batch"])

    logger, sizes = logging.getLogger("captioner.engine.batching"), Sizes()
    level = logger.level
    logger.addHandler(sizes)
    logger.setLevel(logging.INFO)
    try:
        yield sizes.seen
    finally:
        logger.removeHandler(sizes)
        logger.setLevel(level)


def wait_until_waiting(jobs, timeout=60):
    """Until every gradio_client job is in the queue or running (the model held): no fixed sleep."""
    import time

    from gradio_client.utils import Status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(job.status().code in (Status.IN_QUEUE, Status.PROCESSING) for job in jobs):
            return
        time.sleep(0.05)
    raise AssertionError(f"jobs not queued after {timeout} s: {[job.status().code for job in jobs]}")


def run_cli(*args, env=None, timeout=300):
    """`python -m captioner ARGS` in a process of its own, as a person runs it."""
    environment = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "captioner", *args], capture_output=True, text=True, env=environment, timeout=timeout
    )


def wait_for_lines(path: Path, count: int, process, timeout=400):
    """Until `path` holds `count` lines. Generous: the other test process may hold a core for
    minutes (the fine-tuning run), and the point is a kill in the middle, not a speed."""
    deadline = time.monotonic() + timeout
    seen, offset = 0, 0
    while time.monotonic() < deadline:
        if path.exists():
            with path.open("rb") as handle:  # only what was added since the last look: cheap at any size
                handle.seek(offset)
                added = handle.read()
            seen, offset = seen + added.count(b"\n"), offset + len(added)
            if seen >= count:
                return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} rows after {timeout} s")


def kill_once_written(command: list[str], written: Path, rows: int) -> dict:
    """Run the CLI in a session of its own, SIGKILL the whole group once `rows` rows are on disk;
    returns the environment to resume it with."""
    env = {**os.environ, "PYTHONPATH": SRC}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_lines(written, rows, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return env


def dataset_file(path: Path, count: int = 7) -> Path:
    """A Parquet file in the Hugging Face image layout, row 3 holding bytes that are no image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": encode(photo(i)), "path": f"img{i}.png"} for i in range(count)]
    images[3] = {"bytes": b"corrupt bytes", "path": "bad.png"}
    table = pa.table({"id": list(range(100, 100 + count)), "image": images})
    pq.write_table(table, path, row_group_size=3)
    return path


async def mcp_session(url, calls):
    """List the tools, then make `calls` [(tool, arguments), ...] as an agent's MCP client does."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            return tools, [await session.call_tool(name, arguments) for name, arguments in calls]


def native_kernel_unsupported() -> str:
    """Why this machine cannot run the native kernel at all, or "": a platform without it skips the
    tests that need it. A missing compiler is not such a reason (CI installs one): that fails."""
    import platform

    from captioner.engine import native

    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"the native kernel is built for Linux x86-64, not {sys.platform} {platform.machine()}"
    return "" if native.usable_instruction_sets() else "this CPU has no AVX2/FMA"


def needs_native_kernel(test):
    import pytest

    return pytest.mark.skipif(bool(native_kernel_unsupported()), reason=native_kernel_unsupported() or "runs here")(test)


def caption_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected_captions(captioner, paths, **settings) -> list[str]:
    from captioner import CaptionSettings, load_image

    images = [load_image(p) for p in paths]
    return [c[0].text for c in captioner.caption(images, CaptionSettings(**settings))]


def scores_without_java(patch) -> None:
    """Score with the simple tokenizer, for tests where the metric's value is not the point: with
    Java, every evaluation starts a JVM for METEOR and the PTB tokenizer, seconds each time.
    `patch` is pytest's monkeypatch (or a MonkeyPatch.context())."""
    patch.setattr("captioner.train.evaluation.java_found", lambda: False)
