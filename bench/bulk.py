"""Bulk captioning benchmark: the CLI on a folder against Captioner.caption on the same images
already decoded, Ray Data on the same machine, and the CLI's memory as a run grows.

    python bench/bulk.py                    # full-size random checkpoint, 256 photos at 1024x768
    python bench/bulk.py --no-ray           # without Ray (requirements-ray.txt not installed)

Throughput, in one run on one machine, one path after the other:
- Captioner.caption: the photos decoded into memory first, then captioned in batches of 8; the
  clock runs over the captioning alone (a warm-up batch first).
- the CLI (`python -m captioner caption FOLDER --output X.jsonl`), a process of its own: it reads,
  decodes (a few batches ahead, on a thread pool), captions and writes; its rate is the one its
  summary reports, over the same work plus the reading, decoding and writing, model load excluded.
- the CLI with --ray (2 actors x 1 thread): Ray's start and the actors' model load (which Ray
  Data does once the run has begun) are reported apart; its rate, like the CLI's, is over the
  captioning after the model is loaded (the quickest actor's load is taken off), and is also
  printed with the load in.
Memory: the CLI with the tiny checkpoint on 2,000 small images; its RSS when 200 rows are written
against its RSS at the last sample before it exits.

Prints a table and one JSON line. Captions of every path are compared with Captioner.caption's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from captioner import Captioner, load_image  # noqa: E402
from captioner.engine.random_models import save_random_checkpoint  # noqa: E402
from paths import SETTINGS, build_checkpoint  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAY_USAGE_STATS_ENABLED": "0"}
# Ray's head probes the cloud metadata address (169.254.169.254, metadata.google.internal) even with
# usage stats off: a benchmark on loopback sends that to a closed loopback port instead.
ENV.update({name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")})
ENV.update(NO_PROXY="127.0.0.1,localhost,::1", no_proxy="127.0.0.1,localhost,::1")


def build_photos(directory: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """Seeded synthetic photos (gradients, a shape, noise) saved as JPEG at quality 90."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    paths = []
    for index in range(count):
        base = rng.integers(0, 256, 3)
        pixels = (base + 180 * np.stack([x / width, y / height, (x * y) / (width * height)], -1)) % 256
        cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(height // 8, height // 3)
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
        pixels += rng.normal(0, 12, pixels.shape)
        path = directory / f"photo-{index:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def captioner_rate(checkpoint: Path, paths: list[Path], batch: int) -> tuple[float, list[str]]:
    captioner = Captioner.from_pretrained(checkpoint)
    images = [load_image(p) for p in paths]
    captioner.caption(images[:batch], SETTINGS)  # warm-up
    captions: list[str] = []
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        captions += [c[0].text for c in captioner.caption(images[start : start + batch], SETTINGS)]
    return len(images) / (time.perf_counter() - started), captions


def cli(checkpoint: Path, folder: Path, output: Path, *extra: str, watch=None) -> dict:
    """Run the CLI; returns its JSON summary (and whatever `watch(process, output)` returned)."""
    command = [sys.executable, "-m", "captioner", "caption", str(folder), "--model", str(checkpoint),
               "--max-length", str(SETTINGS.max_length), "--num-beams", str(SETTINGS.num_beams),
               "--output", str(output), "--overwrite", "--json", *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True)
    watched = watch(process, output) if watch else None
    _, err = process.communicate(timeout=3600)
    if process.returncode != 0:
        sys.exit(f"the CLI failed ({' '.join(extra) or 'single process'}):\n{err[-3000:]}")
    summary = json.loads(err.strip().splitlines()[-1])
    summary["wall_seconds"] = time.perf_counter() - started
    summary["watched"] = watched
    return summary


def captions_of(output: Path) -> list[str]:
    return [json.loads(line)["caption"] for line in output.read_text(encoding="utf-8").splitlines()]


def rss_watch(first_rows: int):
    """RSS when `first_rows` rows are on disk, and at the last sample before the process ends."""

    def watch(process, output: Path) -> dict:
        handle, early, late, rows = psutil.Process(process.pid), None, None, 0
        while process.poll() is None:
            try:
                rss = handle.memory_info().rss
                rows = output.read_bytes().count(b"\n") if output.exists() else 0
            except (psutil.NoSuchProcess, FileNotFoundError):
                break
            if rows >= first_rows and rss > 0:  # 0: the process is already exiting
                early = early or (rows, rss)
                late = (rows, rss)
            time.sleep(0.02)
        return {"early_rows": early[0], "early_rss_mb": early[1] / 2**20,
                "late_rows": late[0], "late_rss_mb": late[1] / 2**20}

    return watch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full", help="checkpoint for the throughput runs")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rss-images", type=int, default=2000)
    parser.add_argument("--rss-first", type=int, default=200)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    checkpoint = build_checkpoint(work, args.size)
    photos = build_photos(work / "photos", args.images, (args.width, args.height))
    batch = ["--batch-size", str(args.batch_size)]

    direct, expected = captioner_rate(checkpoint, photos, args.batch_size)
    single = cli(checkpoint, work / "photos", work / "single.jsonl", *batch)
    report = {
        "images": args.images, "size": f"{args.width}x{args.height}", "checkpoint": args.size,
        "captioner_images_per_s": direct,
        "cli_images_per_s": single["captioned"] / single["seconds"],
        "cli_wall_seconds": single["wall_seconds"],
        "cli_model_load_seconds": single["model_load_seconds"],
        "cli_equal_to_captioner": captions_of(work / "single.jsonl") == expected,
    }
    report["cli_x_captioner"] = report["cli_images_per_s"] / direct
    if not args.no_ray:
        ray = cli(checkpoint, work / "photos", work / "ray.jsonl", *batch, "--ray", "--actors", str(args.actors),
                  "--threads-per-actor", "1")
        report.update({
            "ray_start_seconds": ray["startup_seconds"],
            "ray_images_per_s": ray["captioned"] / ray["seconds"],
            "ray_actor_load_seconds": ray["model_load_seconds"],
            # Like the CLI's rate, which starts after its model is loaded: the captioning after the
            # quickest actor's load (the actors load at the same time, once the run has begun).
            "ray_loaded_images_per_s": ray["captioned"] / (ray["seconds"] - ray["model_load_seconds"]),
            "ray_equal_to_captioner": captions_of(work / "ray.jsonl") == expected,
        })
        report["ray_x_cli"] = report["ray_images_per_s"] / report["cli_images_per_s"]
        report["ray_loaded_x_cli"] = report["ray_loaded_images_per_s"] / report["cli_images_per_s"]

    tiny = on_tiny(work)
    small = build_photos(work / "small", args.rss_images, (64, 48))
    memory = cli(tiny, small[0].parent, work / "rss.jsonl", "--batch-size", "8", watch=rss_watch(args.rss_first))["watched"]
    report.update({f"rss_{k}": v for k, v in memory.items()})
    report["rss_growth"] = memory["late_rss_mb"] / memory["early_rss_mb"] - 1

    print(f"{args.images} photos at {args.width}x{args.height}, {args.size} checkpoint, batches of {args.batch_size}")
    print(f"  Captioner.caption (decoded)   {direct:7.2f} images/s")
    print(f"  CLI, single process           {report['cli_images_per_s']:7.2f} images/s   {report['cli_x_captioner']:.2f}x "
          f"Captioner.caption (target >= 0.90); captions equal: {report['cli_equal_to_captioner']}; "
          f"model load {report['cli_model_load_seconds']:.1f} s apart")
    if not args.no_ray:
        print(f"  CLI --ray, {args.actors} actors x 1 thread {report['ray_loaded_images_per_s']:7.2f} images/s   "
              f"{report['ray_loaded_x_cli']:.2f}x the CLI (target >= 0.80); captions equal: "
              f"{report['ray_equal_to_captioner']}")
        print(f"    start-up apart: Ray start {report['ray_start_seconds']:.1f} s, actors' model load "
              f"{report['ray_actor_load_seconds']:.1f} s; with the load: {report['ray_images_per_s']:.2f} images/s, "
              f"{report['ray_x_cli']:.2f}x the CLI")
    print(f"  CLI RSS, tiny checkpoint      {memory['early_rss_mb']:.0f} MB at {memory['early_rows']} rows, "
          f"{memory['late_rss_mb']:.0f} MB at {memory['late_rows']} rows: {report['rss_growth']:+.1%} (target within 10%)")
    print(json.dumps(report))


def on_tiny(work: Path) -> Path:
    return save_random_checkpoint(work / "tiny", "tiny", seed=0)


if __name__ == "__main__":
    main()
