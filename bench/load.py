"""Load test: many concurrent gradio_client users against a running app, on loopback only.

Bounded in requests and time; every request must end with its caption or a clean "busy" answer.
Reports latency percentiles and the server's resident memory after the first 100 requests and
at the end (a leak shows as growth).

    python bench/load.py                       # starts app.py on a tiny random checkpoint
    python bench/load.py --size full           # the full-size ViT-GPT2 architecture, random weights
    python bench/load.py --url http://127.0.0.1:7860/ --pid 1234   # an app you started
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


LOOPBACK = ("http://127.", "http://localhost", "http://[::1]")


def loopback_client(url: str):
    """A gradio_client Client for an app on this machine, as cheap on the shared CPU as it can be.

    The URL is plain http on loopback, so there is no TLS to verify: ssl_verify=False only stops
    gradio_client from building a CA-loaded TLS context for every HTTP call it makes, CPU that
    would be taken from the server under test on a 2-core machine.

    Each HTTP call may take up to a minute instead of httpx's 5 s: bench/speed.py stops the
    clients and the server together (SIGSTOP) while it measures other paths, and a timeout counts
    the stopped seconds too, so an upload caught by a stop would time out at the server's next turn.
    """
    from gradio_client import Client

    assert url.startswith(LOOPBACK), "loopback only"
    return Client(url, verbose=False, ssl_verify=False, httpx_kwargs={"timeout": 60.0})


class PageProtocolClient:
    """One request at a time the way the app's own page sends it: upload the photo, join the
    queue (the validator runs here), read the session's event stream until the answer comes.

    gradio_client does the same over HTTP, but its reader looks for new messages every 50 ms
    (gradio_client.utils.stream_sse_v1plus), and each request also starts a thread that checks for
    cancellation every 50 ms, which adds to every request it times. The page's EventSource hands
    on each message as it arrives, and so does this client.
    """

    def __init__(self, url: str, api_name: str = "caption") -> None:
        import httpx

        assert url.startswith(LOOPBACK), "loopback only"
        self.http = httpx.Client(base_url=url, timeout=60.0)
        config = self.http.get("config").json()
        self.fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
        endpoint = self.http.get("gradio_api/info").json()["named_endpoints"][f"/{api_name}"]
        # (name, default) of every input after the image, in the order the event takes them
        self.settings = [(p["parameter_name"], p.get("parameter_default")) for p in endpoint["parameters"][1:]]

    def predict(self, image: str, **settings) -> str:
        unknown = set(settings) - {name for name, _ in self.settings}
        if unknown:  # as gradio_client does: a misspelt setting would otherwise fall back to its default
            raise TypeError(f"the endpoint has no parameter {', '.join(sorted(unknown))}")
        with open(image, "rb") as file:
            upload = self.http.post("gradio_api/upload", files={"files": (Path(image).name, file)})
        upload.raise_for_status()
        data = [{"path": upload.json()[0], "meta": {"_type": "gradio.FileData"}}]
        data += [settings.get(name, default) for name, default in self.settings]
        session = os.urandom(6).hex()
        join = self.http.post("gradio_api/queue/join", json={
            "data": data, "event_data": None, "fn_index": self.fn_index, "trigger_id": None,
            "session_hash": session,
        })
        join.raise_for_status()
        event_id = join.json()["event_id"]
        with self.http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[len("data:"):])
                if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                    if not message.get("success"):
                        raise RuntimeError(f"the app refused the request: {message.get('output')}")
                    return message["output"]["data"][0]
        raise RuntimeError("the event stream ended before the answer")

    def close(self) -> None:
        self.http.close()


def run_load(url: str, images: list[str], clients: int = 64, requests: int = 1000,
             deadline_s: float = 900, request_timeout_s: float = 300, pid: int | None = None,
             rss_checkpoint: int = 100) -> dict:
    import psutil
    from gradio_client import handle_file

    assert url.startswith(LOOPBACK), "loopback only"
    server = psutil.Process(pid) if pid else None
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "rss_at_checkpoint": None}
    rss_trace: list[int] = []  # server RSS (MB) after every `rss_checkpoint` answers
    outcomes: list[tuple[str, float, str]] = []
    stop_at = time.monotonic() + deadline_s

    def worker(worker_id: int) -> None:
        client = loopback_client(url)
        while time.monotonic() < stop_at:
            with lock:
                if state["next"] >= requests:
                    return
                index = state["next"]
                state["next"] += 1
            image = images[index % len(images)]
            started = time.monotonic()
            try:
                job = client.submit(handle_file(image), api_name="/caption")
                caption = job.result(timeout=request_timeout_s)
                outcome, detail = "ok", caption
            except TimeoutError:
                outcome, detail = "timeout", ""
            except Exception as error:  # noqa: BLE001 - classify every failure the client sees
                text = str(error)
                outcome = "busy" if "queue is full" in text.lower() else "error"
                detail = text[:200]
            with lock:
                outcomes.append((outcome, time.monotonic() - started, detail))
                state["done"] += 1
                if server and state["done"] % rss_checkpoint == 0:
                    rss = server.memory_info().rss
                    rss_trace.append(round(rss / 2**20))
                    if state["done"] == rss_checkpoint:
                        state["rss_at_checkpoint"] = rss
            if outcome == "busy":
                time.sleep(0.2)  # a polite client backs off

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, stop_at - time.monotonic()) + request_timeout_s)
    elapsed = time.monotonic() - started
    latencies = sorted(t for o, t, _ in outcomes if o == "ok")

    def percentile(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 3) if latencies else None

    counts = {k: sum(1 for o, _, _ in outcomes if o == k) for k in ("ok", "busy", "error", "timeout")}
    rss_end = server.memory_info().rss if server else None
    return {
        "clients": clients, "requested": requests, "answered": len(outcomes),
        "lost": state["next"] - len(outcomes), **counts,
        "elapsed_s": round(elapsed, 1), "ok_per_s": round(counts["ok"] / elapsed, 2) if elapsed else None,
        "latency_p50_s": percentile(50), "latency_p95_s": percentile(95), "latency_p99_s": percentile(99),
        "rss_after_first_%d_mb" % rss_checkpoint: round(state["rss_at_checkpoint"] / 2**20) if state["rss_at_checkpoint"] else None,
        "rss_end_mb": round(rss_end / 2**20) if rss_end else None,
        "rss_growth": round(rss_end / state["rss_at_checkpoint"] - 1, 3) if rss_end and state["rss_at_checkpoint"] else None,
        "rss_trace_mb": rss_trace,
        "errors": sorted({d for o, _, d in outcomes if o == "error"})[:5],
        "distinct_captions": sorted({d for o, _, d in outcomes if o == "ok"}),
    }


def free_loopback_port() -> int:
    """A loopback port nobody holds, from below the kernel's ephemeral range.

    A port that bind(0) hands out comes from the ephemeral range, where every outgoing connection
    of every process (a neighbouring test process's clients too) also takes its port: between this
    check and the server's own bind, one of them could take it. Below that range only explicit
    binds take ports; the random pick keeps two callers at once apart.
    """
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default range starts here
    # Ray's workers take 10002-19999 by default: stay above them.
    candidates = list(range(20000, max(low, 20001)))
    random.SystemRandom().shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a machine whose low ports are all taken: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_app(app_args: list[str], log_path: Path | None = None, timeout_s: float = 600) -> tuple[subprocess.Popen, str]:
    """app.py in its own process on a free loopback port, offline; returns once it answers HTTP."""
    port = free_loopback_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = log_path.open("w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), *app_args],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    if log_path:
        log.close()  # the child keeps its own copy
    url = f"http://127.0.0.1:{port}/"
    wait_until_serving(process, url, timeout_s, "the app did not start" + (f"; see {log_path}" if log_path else ""))
    return process, url


def wait_until_serving(process: subprocess.Popen, url: str, timeout_s: float, failure: str) -> None:
    """Back once `url` answers 200; a process that ends or runs out of time is killed, and `failure` said."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(failure) from None
            time.sleep(0.2)


def start_app(size: str, queue_size: int) -> tuple[subprocess.Popen, str, tempfile.TemporaryDirectory]:
    from captioner.engine.random_models import save_random_checkpoint

    workdir = tempfile.TemporaryDirectory()
    checkpoint = save_random_checkpoint(Path(workdir.name) / "model", size, seed=0)
    process, url = launch_app(["--model", str(checkpoint), "--queue-size", str(queue_size)])
    return process, url, workdir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url")
    parser.add_argument("--pid", type=int, help="the server's process id, for its memory readings")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--queue-size", type=int, default=32)
    parser.add_argument("--deadline", type=float, default=1200)
    args = parser.parse_args()
    images = sorted(str(p) for p in (ROOT / "examples").glob("*.jpg"))
    process = workdir = None
    url, pid = args.url, args.pid
    if not url:
        process, url, workdir = start_app(args.size, args.queue_size)
        pid = process.pid
    try:
        report = run_load(url, images, args.clients, args.requests, args.deadline, pid=pid)
    finally:
        if process:
            process.terminate()
            process.wait(timeout=30)
    for key, value in report.items():
        if key != "distinct_captions":
            print(f"{key:>28}: {value}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
