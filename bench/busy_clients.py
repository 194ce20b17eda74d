"""Concurrent gradio_client users that each keep one request in flight until told to stop.

Run by bench/speed.py in a process of its own, so that the benchmark can pause these clients
together with the server (SIGSTOP) while it measures something else on the same two cores.

    python bench/busy_clients.py URL ANSWERS.jsonl --clients 16 --max-length 17 IMAGE [IMAGE ...]

Prints "ready" once every client is connected, then starts on the first line read from stdin and
stops issuing requests at the second (or at end of input); exits once every request in flight
has been answered. Each answer is one JSON line in ANSWERS.jsonl: {"t": time.perf_counter() when
it came (CLOCK_MONOTONIC, comparable across processes), "image": index into the images, "caption"}.
A failed request is an {"error": ...} line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import loopback_client  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("answers", type=Path)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-length", type=int, required=True)
    args = parser.parse_args()
    from gradio_client import handle_file

    clients = [loopback_client(args.url) for _ in range(args.clients)]
    stop = threading.Event()
    lock = threading.Lock()
    next_image = iter(range(10**9))
    failures: list[str] = []
    out = args.answers.open("w")

    def keep_busy(client) -> None:
        while not stop.is_set():
            with lock:
                index = next(next_image) % len(args.images)
            try:
                caption = client.predict(handle_file(args.images[index]), max_length=args.max_length,
                                         api_name="/caption")
                line = {"t": time.perf_counter(), "image": index, "caption": caption}
            except Exception as error:  # noqa: BLE001 - reported to the benchmark, which fails
                line = {"t": time.perf_counter(), "image": index, "error": str(error)[:300]}
                failures.append(line["error"])
                stop.set()
            with lock:
                out.write(json.dumps(line) + "\n")
                out.flush()

    print("ready", flush=True)
    sys.stdin.readline()
    threads = [threading.Thread(target=keep_busy, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    sys.stdin.readline()
    stop.set()
    for thread in threads:
        thread.join()
    out.close()
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
