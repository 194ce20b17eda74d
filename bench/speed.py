"""Speed benchmark: the project against the model card's code, on the full-size ViT-GPT2 architecture.

Workload: nlpconnect/vit-gpt2-image-captioning's shapes (ViT-base/16 at 224, GPT-2 124M with
cross-attention, vocabulary 50257) with seeded random weights built here (speed does not depend on
weight values); beam search with 4 beams; every caption exactly 16 new tokens (the checkpoint's
generation config sets min_new_tokens=16 and the requests max_length=17, so EOS is masked).

    python bench/speed.py                      # CPU: baseline, Captioner, the app with 16 clients, int8
    python bench/speed.py --device cuda --no-app   # GPU: baseline vs fp32/fp16/bf16 batches

Prints a table and one JSON line. Every ratio is against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from captioner import Captioner, CaptionSettings  # noqa: E402
from captioner.checkpoints import save_random_checkpoint  # noqa: E402

NEW_TOKENS = 16
SETTINGS = CaptionSettings(max_length=NEW_TOKENS + 1, num_beams=4)  # max_length counts the start token


def build_checkpoint(directory: Path) -> Path:
    checkpoint = save_random_checkpoint(directory / "vit-gpt2-full-random", "full", seed=0)
    from transformers import GenerationConfig

    config = GenerationConfig.from_pretrained(checkpoint)
    config.min_new_tokens = NEW_TOKENS  # EOS masked: every caption is exactly 16 new tokens
    config.save_pretrained(checkpoint)
    return checkpoint


def build_images(directory: Path, count: int) -> list[str]:
    """The example photos, then seeded synthetic photos (gradients, shapes, noise) at 320x240."""
    paths = sorted(str(p) for p in (ROOT / "examples").glob("*.jpg"))
    rng = np.random.default_rng(0)
    while len(paths) < count:
        y, x = np.mgrid[0:240, 0:320]
        base = rng.integers(0, 256, 3)
        pixels = (base + 180 * np.stack([x / 320, y / 240, (x * y) / 76800], -1)) % 256
        pixels += rng.normal(0, 20, pixels.shape)
        path = directory / f"synthetic-{len(paths)}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths[:count]


def model_card_baseline(checkpoint: Path, images: list[str], device: str) -> dict:
    """The model card's code, one request at a time, stock transformers, fp32."""
    from transformers import AutoTokenizer, ViTImageProcessor, VisionEncoderDecoderModel

    model = VisionEncoderDecoderModel.from_pretrained(checkpoint).to(device).eval()
    feature_extractor = ViTImageProcessor.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def predict(path: str) -> tuple[str, int]:
        image = Image.open(path).convert("RGB")
        pixel_values = feature_extractor(images=[image], return_tensors="pt").pixel_values.to(device)
        with torch.no_grad():
            output_ids = model.generate(pixel_values, max_length=NEW_TOKENS + 1, num_beams=4)
        return tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip(), output_ids.shape[1] - 1

    predict(images[0])  # warm-up
    latencies, captions, lengths = [], [], set()
    for path in images:
        started = time.perf_counter()
        caption, new_tokens = predict(path)
        _sync(device)
        latencies.append(time.perf_counter() - started)
        captions.append(caption)
        lengths.add(new_tokens)
    assert lengths == {NEW_TOKENS}, f"captions must be exactly {NEW_TOKENS} new tokens, got {lengths}"
    mean = sum(latencies) / len(latencies)
    return {"latency_s": mean, "images_per_s": 1 / mean, "captions": captions}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def direct(captioner: Captioner, images: list[str], single: list[str]) -> dict:
    """Captioner.caption in this process: single-request latency, and batched throughput."""
    captioner.caption(images[:2], SETTINGS)  # warm-up
    latencies = []
    for path in single:
        started = time.perf_counter()
        captioner.caption([path], SETTINGS)
        _sync(str(captioner.device))
        latencies.append(time.perf_counter() - started)
    captioner.generate_batch_sizes.clear()
    started = time.perf_counter()
    results = captioner.caption(images, SETTINGS)
    _sync(str(captioner.device))
    elapsed = time.perf_counter() - started
    return {
        "latency_s": sum(latencies) / len(latencies),
        "images_per_s": len(images) / elapsed,
        "batch_sizes": sorted(captioner.generate_batch_sizes.elements(), reverse=True),
        "captions": [r[0].text for r in results],
    }


def run_app(checkpoint: Path, images: list[str], single: list[str], clients: int, requests: int,
            dtype: str, max_batch_size: int, log_path: Path) -> dict:
    """app.py in its own process; cold start, single-request latency, then `clients` at once."""
    from gradio_client import Client, handle_file

    from load import launch_app

    started = time.perf_counter()
    server, url = launch_app(
        ["--model", str(checkpoint), "--dtype", dtype, "--max-batch-size", str(max_batch_size), "--queue-size", "256"],
        log_path,
    )
    try:
        def caption(client, path: str) -> str:
            return client.predict(handle_file(path), max_length=SETTINGS.max_length, api_name="/caption")

        first_client = Client(url, verbose=False)
        caption(first_client, images[0])
        cold_start = time.perf_counter() - started
        caption(first_client, images[1])  # warm-up, as for the direct runs
        latencies = []
        for path in single:
            began = time.perf_counter()
            caption(first_client, path)
            latencies.append(time.perf_counter() - began)
        log_mark = log_path.stat().st_size

        results: dict[int, str] = {}
        lock = threading.Lock()
        counter = iter(range(requests))

        def worker() -> None:
            client = Client(url, verbose=False)
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                text = caption(client, images[index % len(images)])
                with lock:
                    results[index] = text

        threads = [threading.Thread(target=worker) for _ in range(clients)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        peak_rss = _peak_rss_bytes(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    with log_path.open() as log:
        log.seek(log_mark)
        batch_sizes = [int(n) for n in re.findall(r"captioned a batch of (\d+)", log.read())]
    return {
        "cold_start_s": cold_start,
        "latency_s": sum(latencies) / len(latencies),
        "images_per_s": requests / elapsed,
        "peak_rss_mb": peak_rss / 2**20,
        "batch_sizes": batch_sizes,
        "captions": [results[i] for i in range(len(images)) if i in results],
    }


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def agreement(a: list[str], b: list[str]) -> float:
    pairs = list(zip(a, b))
    return sum(x == y for x, y in pairs) / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=16, help="distinct images for throughput")
    parser.add_argument("--baseline-images", type=int, default=6)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--no-app", action="store_true", help="skip the app runs (no gradio, e.g. on a GPU box)")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--gpu-batches", default="8,32,64")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="speed-bench-"))
    checkpoint = build_checkpoint(workdir)
    images = build_images(workdir, args.images)
    single = images[: args.baseline_images]
    rows: list[tuple[str, dict]] = []
    machine = _machine(args.device)
    print(f"machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    baseline = model_card_baseline(checkpoint, single, args.device)
    rows.append(("baseline: model card code, one at a time, fp32", baseline))
    print(f"baseline: {baseline['latency_s']:.3f} s per image", flush=True)

    report: dict = {"machine": machine, "baseline": _public(baseline)}
    precisions = ["float32"] if args.device == "cpu" else ["float32", "float16", "bfloat16"]
    if args.device == "cpu" and not args.no_int8:
        precisions.append("int8")
    default_captions = None
    for dtype in precisions:
        batch_sizes = [args.max_batch_size] if args.device == "cpu" else [int(b) for b in args.gpu_batches.split(",")]
        for batch in batch_sizes:
            captioner = Captioner.from_pretrained(checkpoint, device=args.device, dtype=dtype, max_batch_size=batch)
            images_for_run = images * max(1, (2 * batch) // len(images))
            result = direct(captioner, images_for_run, single)
            if dtype == "float32" and default_captions is None:
                default_captions = result["captions"]
            result["agreement_with_default"] = agreement(result["captions"], default_captions)
            result["equal_to_baseline"] = agreement(result["captions"][: len(single)], baseline["captions"])
            rows.append((f"Captioner.caption, {dtype}, max batch {batch}", result))
            report[f"direct_{dtype}_b{batch}"] = _public(result)
            print(f"direct {dtype} b{batch}: {result['images_per_s']:.2f} images/s", flush=True)
            del captioner
        if args.device == "cpu" and not args.no_app:
            result = run_app(checkpoint, images, single, args.clients, args.requests, dtype,
                             args.max_batch_size, workdir / f"app-{dtype}.log")
            result["agreement_with_default"] = agreement(result["captions"], default_captions)
            result["equal_to_baseline"] = agreement(result["captions"][: len(single)], baseline["captions"])
            direct_row = report[f"direct_{dtype}_b{args.max_batch_size}"]
            result["app_overhead_throughput"] = direct_row["images_per_s"] / result["images_per_s"] - 1
            result["app_overhead_latency"] = result["latency_s"] / direct_row["latency_s"] - 1
            rows.append((f"app.py, {dtype}, {args.clients} gradio_client clients", result))
            report[f"app_{dtype}"] = _public(result)
            print(f"app {dtype}: {result['images_per_s']:.2f} images/s", flush=True)

    print()
    print(f"{'run':<52} {'images/s':>9} {'x base':>7} {'latency s':>10} {'x base':>7} "
          f"{'= base':>7} {'= fp32':>7} {'peak RSS MB':>11} {'cold start s':>12}  batch sizes")
    for name, r in rows:
        print(
            f"{name:<52} {r['images_per_s']:>9.2f} {r['images_per_s'] / baseline['images_per_s']:>7.2f} "
            f"{r['latency_s']:>10.3f} {r['latency_s'] / baseline['latency_s']:>7.2f} "
            f"{_pct(r.get('equal_to_baseline')):>7} {_pct(r.get('agreement_with_default')):>7} "
            f"{_num(r.get('peak_rss_mb')):>11} {_num(r.get('cold_start_s'), 1):>12}  {_sizes(r.get('batch_sizes'))}"
        )
    for key, r in report.items():
        if isinstance(r, dict) and "images_per_s" in r:
            r["throughput_x_baseline"] = r["images_per_s"] / baseline["images_per_s"]
            r["latency_x_baseline"] = r["latency_s"] / baseline["latency_s"]
    print(json.dumps(report))


def _public(result: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k != "captions"}


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _num(value, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _sizes(sizes) -> str:
    if not sizes:
        return ""
    counts: dict[int, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return " ".join(f"{size}x{n}" for size, n in sorted(counts.items(), reverse=True))


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "CPU")
    return f"{model}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
