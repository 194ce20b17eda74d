"""How fast the review page answers a person, on a folder of already-captioned photos.

Makes --images photos of about --image-mb MB each, every one with a sidecar caption (so nothing is
captioned: the figures are the page's own), starts `python -m captioner review FOLDER` in a fresh
process on a tiny random checkpoint, and drives the page in headless Chromium as a person would:
sort, filter by a flag, a single edit, a bulk prefix's preview and its apply, an undo, and an
export of the whole set (imagefolder .zip). Each action is timed by the browser's clock, from the
press of the mouse to the frame that shows its result (--tries times; median and worst). The server's memory (RSS) is read after
the page first shows the set, after the actions, and at its peak during the export, beside the
size of the captions' text: the review holds the table's text, not the photos.

    python bench/review.py                       # 2,000 photos of 1 MB, 7 tries an action
    python bench/review.py --images 50 --tries 2  # a quick check of the script
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from load import free_loopback_port, wait_until_serving
from report import machine_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
WAIT_MS = int(os.environ.get("REVIEW_BENCH_WAIT_MS", "600000"))  # a step that never shows fails, not hangs
WORDS = "a dog a cat two people walking along a beach at sunset near the old red harbour wall".split()


def make_folder(folder: Path, count: int, image_mb: float) -> int:
    """`count` distinct JPEGs of about `image_mb` MB (noise compresses badly, as photos do at full
    size) and a caption beside each; a few short or repeated, so the flags have rows to show.
    Returns the captions' total size in bytes."""
    rng = np.random.default_rng(0)
    side = int((image_mb * 2**20 / 1.18) ** 0.5)  # noise at quality 95: about 1.2 bytes a pixel
    noise = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    template = buffer.getvalue()
    text_bytes = 0
    for i in range(count):
        # One encoded photo, each copy made distinct in its comment bytes: encoding 2,000 noisy
        # photos would take longer than the whole benchmark.
        data = template[:2] + b"\xff\xfe\x00\x0a" + f"{i:08d}".encode() + template[2:]
        (folder / f"photo {i:05d}.jpg").write_bytes(data)
        words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(3 + i % 9)] + [f"in frame {i}"]
        caption = "a dog" if i % 97 == 96 else " ".join(words[:2] + words if i % 13 == 12 else words)
        (folder / f"photo {i:05d}.txt").write_text(caption + "\n", encoding="utf-8")
        text_bytes += len(caption) + len(f"photo {i:05d}.jpg")
    return text_bytes


def start_review(folder: Path, checkpoint: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_loopback_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "captioner", "review", str(folder), "--model", str(checkpoint),
                                    "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait_until_serving(process, url, 600, f"the review server did not start; see {log}")
    return process, url


class Peak(threading.Thread):
    """The highest RSS of a process while it runs, read every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self.done = psutil.Process(pid), 0, threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def timed(page, act, shown: str, arg=None) -> float:
    """Seconds from the press that `act()` makes in the page (its mousedown, as the page saw it) to
    the frame where `shown(arg)` is true: the browser's clock at both ends, so the automation's own
    round trips are not counted."""
    page.evaluate("() => { window.benchStart = null; }")
    act()
    done = page.wait_for_function(f"""(arg) => {{ const shown = {shown};
        return window.benchStart !== null && shown(arg) ? performance.now() - window.benchStart : false; }}""",
                                  arg=arg, timeout=WAIT_MS)
    return done.json_value() / 1000


PRESSES = """() => document.addEventListener("mousedown", () => {
    if (window.benchStart === null) window.benchStart = performance.now(); }, true)"""


STATUS = "t => (document.querySelector('#review-status') || {}).innerText?.includes(t)"
FIRST_ROW = ("n => ((document.querySelector('#review-table') || {}).innerText || '').match(/photo \\d{5}\\.jpg/)?.[0]"
             " === n")


def choose(page, box: str, option: str):
    page.locator(f"{box} input").click()
    return lambda: page.get_by_role("option", name=option).first.click()


def drive(page, tries: int, first_name: str, last_name: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in ("sort", "filter", "edit", "preview", "apply", "undo")}
    page.get_by_text("Change the captions shown, all at once").click()
    for t in range(tries):
        # Sort: by name (the first photo first), then back to weakest first (a flagged one first).
        times["sort"].append(timed(page, choose(page, "#review-sort", "name"), FIRST_ROW, first_name))
        times["sort"].append(timed(page, choose(page, "#review-sort", "weakest first"),
                                   f"n => !({FIRST_ROW})(n)", first_name))
        choose(page, "#review-sort", "name")()
        page.wait_for_function(FIRST_ROW, arg=first_name)
        # Filter: the rows flagged "short" alone, then every row again.
        times["filter"].append(timed(page, choose(page, "#review-flag", "short"),
                                     "() => !(document.querySelector('#review-table') || {}).innerText?.includes('photo 00001')"))
        times["filter"].append(timed(page, choose(page, "#review-flag", "all"), FIRST_ROW, first_name))
        # One caption edited: from the click on Save to the page saying it is saved.
        page.locator("#review-caption textarea").fill(f"an edited caption, try {t}")
        times["edit"].append(timed(page, lambda: page.click("#review-save"), STATUS, f"Saved: edit {first_name}"))
        # A bulk prefix on every row: its preview, then its apply, then an undo of it.
        page.locator("#review-text input, #review-text textarea").first.fill(f"try{t}, ")
        times["preview"].append(timed(page, lambda: page.click("#review-preview"),
                                      "t => (document.querySelector('#review-preview-text') || {}).innerText?.includes(t)",
                                      f"try{t}, "))
        times["apply"].append(timed(page, lambda: page.click("#review-apply"), STATUS, f"Applied: prefix 'try{t}, '"))
        times["undo"].append(timed(page, lambda: page.click("#review-undo"), STATUS, f"Undone: prefix 'try{t}, '"))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--image-mb", type=float, default=1.0)
    parser.add_argument("--tries", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from browser import chromium

    from captioner.engine.random_models import save_random_checkpoint

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        folder = work / "photos"
        folder.mkdir()
        started = time.perf_counter()
        text_bytes = make_folder(folder, args.images, args.image_mb)
        os.sync()  # a person's photos are on the disk already; their writing is not the page's time
        image_bytes = sum(p.stat().st_size for p in folder.glob("*.jpg"))
        print(f"{args.images} photos, {image_bytes / args.images / 2**20:.2f} MB each, made in "
              f"{time.perf_counter() - started:.0f} s; captions and names {text_bytes / 1024:.0f} KiB", flush=True)
        checkpoint = save_random_checkpoint(work / "model", "tiny", seed=0)
        process, url = start_review(folder, checkpoint, work / "review.log")
        server = psutil.Process(process.pid)
        try:
            with chromium() as browser:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                started = time.perf_counter()
                page.goto(url)
                page.wait_for_function("() => (document.querySelector('#review-counts') || {}).innerText?.includes("
                                       "'Showing')", timeout=WAIT_MS)
                first_view = time.perf_counter() - started
                page.evaluate(PRESSES)
                rss_loaded = server.memory_info().rss
                try:
                    times = drive(page, args.tries, "photo 00000.jpg", f"photo {args.images - 1:05d}.jpg")
                except Exception:  # what the page showed when a step never came: beside the results
                    (ROOT / "bench" / "results").mkdir(exist_ok=True)
                    page.screenshot(path=str(ROOT / "bench" / "results" / "review-failed.png"), full_page=True)
                    raise
                rss_after = server.memory_info().rss
                peak = Peak(process.pid)
                export = timed(page, lambda: page.click("#review-export"), STATUS, "Exported:")
                rss_export = peak.stop()
                status = page.locator("#review-status").inner_text()
        finally:
            process.terminate()
            process.wait(30)
            # The export lies in the server's own folder for this review (review_folder.py): its size, then away.
            own = Path(tempfile.gettempdir()) / "captioner-folder-reviews" / hashlib.sha256(
                str(folder.absolute()).encode()).hexdigest()[:32]
            zips = list(own.rglob("*.zip"))
            zip_mb = max((z.stat().st_size for z in zips), default=0) / 2**20
            shutil.rmtree(own, ignore_errors=True)
    results = {
        "machine": machine_name("cpu"), "images": args.images, "image_mb": round(image_bytes / args.images / 2**20, 2),
        "first_view_s": round(first_view, 2),
        "actions_ms": {k: {"median": round(1000 * statistics.median(v)), "worst": round(1000 * max(v)), "n": len(v)}
                       for k, v in times.items()},
        "export_s": round(export, 1), "export_zip_mb": round(zip_mb), "export_status": status,
        "rss_mb": {"after_first_view": round(rss_loaded / 2**20), "after_actions": round(rss_after / 2**20),
                   "peak_during_export": round(rss_export / 2**20)},
        "captions_text_kib": round(text_bytes / 1024),
    }
    print(f"machine: {results['machine']}")
    print(f"first view of the set: {first_view:.2f} s")
    print(f"{'action':<10}{'median ms':>10}{'worst ms':>10}")
    for name, figures in results["actions_ms"].items():
        print(f"{name:<10}{figures['median']:>10}{figures['worst']:>10}")
    print(f"export of {args.images} photos ({zip_mb:.0f} MB zip): {export:.1f} s  [{status.strip()[:80]}]")
    print("server RSS MB: " + ", ".join(f"{k} {v}" for k, v in results["rss_mb"].items())
          + f"; the captions' text is {text_bytes / 1024:.0f} KiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
