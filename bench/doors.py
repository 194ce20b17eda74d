"""The app's two doors under the same crowd: 16 clients uploading photos to /caption, against 16
clients sending links to /caption_image (the link tool, as API clients and MCP agents use it), in
one app.py, in alternating rounds.

    python bench/doors.py                  # full-size random checkpoint, 3 rounds a door
    python bench/doors.py --size tiny      # a smoke run of the script, not a measurement

The images are served on 127.0.0.1 (so the app runs with --allow-private-urls, as an intranet app
would). Each round: every client keeps one request in flight for --seconds, then the round waits
for the requests in flight; its rate is the answers over the whole round. The batches the model ran
(the server's JSON log lines) are counted per door. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import http.server
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import launch_app, loopback_client  # noqa: E402
from paths import SETTINGS, build_checkpoint, build_images  # noqa: E402


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def run_round(url: str, door: str, images: list[str], base: str, clients: int, seconds: float) -> dict:
    from gradio_client import handle_file

    connections = [loopback_client(url) for _ in range(clients)]
    stop_at = time.perf_counter() + seconds
    answers: list[tuple[int, str]] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(10**9))

    def keep_busy(client) -> None:
        while time.perf_counter() < stop_at and not errors:
            with lock:
                index = next(counter) % len(images)
            try:
                if door == "upload":
                    text = client.predict(handle_file(images[index]), max_length=SETTINGS.max_length, api_name="/caption")
                else:
                    text = client.predict(f"{base}/{Path(images[index]).name}", max_length=SETTINGS.max_length,
                                          api_name="/caption_image")
            except Exception as error:  # noqa: BLE001 - the benchmark fails with what the client saw
                errors.append(str(error)[:300])
                return
            with lock:
                answers.append((index, text))

    started = time.perf_counter()
    threads = [threading.Thread(target=keep_busy, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for client in connections:
        client.close()
    if errors:
        raise SystemExit(f"a {door} request failed: {errors[0]}")
    return {"images": len(answers), "seconds": elapsed, "images_per_s": len(answers) / elapsed, "answers": answers}


def batches_since(log: Path, mark: int) -> list[int]:
    with log.open() as handle:
        handle.seek(mark)
        return [json.loads(line[line.index("{"):])["batch"] for line in handle if '{"batch"' in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per door, alternating")
    parser.add_argument("--seconds", type=float, default=40.0, help="seconds each round keeps clients busy")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=8)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="doors-bench-"))
    checkpoint = build_checkpoint(workdir, args.size)
    folder = workdir / "served"  # every image in one folder, uploaded from there or linked to it
    folder.mkdir()
    for image in build_images(workdir, args.images):
        (folder / Path(image).name).write_bytes(Path(image).read_bytes())
    images = sorted(str(p) for p in folder.iterdir())
    server, base = serve(folder)
    log = workdir / "app.log"
    app, url = launch_app(["--model", str(checkpoint), "--max-batch-size", str(args.max_batch_size),
                           "--queue-size", "256", "--allow-private-urls"], log)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "CPU")
    print(f"machine: {cpu}; app.py with {args.clients} clients a door", flush=True)
    results: dict[str, list[dict]] = {"upload": [], "link": []}
    batches: dict[str, list[int]] = {"upload": [], "link": []}
    try:
        for door in ("upload", "link"):  # warm-up, outside the clock
            run_round(url, door, images, base, args.clients, 3.0)
        for index in range(args.rounds):
            for door in (("upload", "link") if index % 2 == 0 else ("link", "upload")):
                mark = log.stat().st_size
                result = run_round(url, door, images, base, args.clients, args.seconds)
                batches[door] += batches_since(log, mark)
                results[door].append(result)
                print(f"round {index + 1} {door:>6}: {result['images_per_s']:.2f} images/s "
                      f"({result['images']} in {result['seconds']:.1f} s)", flush=True)
    finally:
        app.terminate()
        app.wait(timeout=60)
        server.shutdown()

    same = {}
    for door in results:
        for result in results[door]:
            for index, text in result.pop("answers"):
                same.setdefault(index, set()).add(text)
    rate = {door: sum(r["images"] for r in rs) / sum(r["seconds"] for r in rs) for door, rs in results.items()}
    per_round = [link["images_per_s"] / upload["images_per_s"] for upload, link in zip(results["upload"], results["link"])]
    report = {
        "machine": cpu, "clients": args.clients, "size": args.size,
        "upload_images_per_s": round(rate["upload"], 3), "link_images_per_s": round(rate["link"], 3),
        "link_x_upload": round(rate["link"] / rate["upload"], 3),
        "link_x_upload_per_round": [round(x, 3) for x in per_round],
        "mean_batch": {door: round(statistics.mean(sizes), 2) if sizes else None for door, sizes in batches.items()},
        "same_caption_through_both_doors": all(len(texts) == 1 for texts in same.values()),
    }
    print(f"\n{'door':<28} {'images/s':>8}  mean batch")
    print(f"{'/caption (uploads)':<28} {rate['upload']:>8.2f}  {report['mean_batch']['upload']}")
    print(f"{'/caption_image (links)':<28} {rate['link']:>8.2f}  {report['mean_batch']['link']}")
    print(f"links: {report['link_x_upload']:.2f}x uploads (per round: "
          + ", ".join(f"{x:.2f}" for x in per_round) + ")")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
