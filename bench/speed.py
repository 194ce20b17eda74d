"""Speed benchmark: the project against the model card's code, on the full-size ViT-GPT2 architecture.

Workload: nlpconnect/vit-gpt2-image-captioning's shapes (ViT-base/16 at 224, GPT-2 124M with
cross-attention, vocabulary 50257) with seeded random weights built here (speed does not depend on
weight values); beam search with 4 beams; every caption exactly 16 new tokens (the checkpoint's
generation config sets min_new_tokens=16 and the requests max_length=17, so EOS is masked).

    python bench/speed.py                          # CPU: baseline, Captioner, app.py with 16 clients, int8
    python bench/speed.py --device cuda --no-app   # GPU: baseline vs fp32/fp16/bf16 batches

Paths are measured in turn, round after round (--rounds), so every ratio compares runs that shared
the same stretches of machine time: on a noisy VM a path measured a minute after another can run
15% faster or slower for reasons of its own. An app server not being measured is paused (SIGSTOP).

The app's throughput is its steady state: each round's 16 clients start at the same instant, so its
first batch and its last are partial, and they are left out of the clock (`steady_window`); the
"whole" column keeps them in. Captioner.caption's batches are always full.

Prints a table and one JSON line. Every ratio is against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import re
import signal
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
from captioner.model_thread import on_model_thread  # noqa: E402

NEW_TOKENS = 16
SETTINGS = CaptionSettings(max_length=NEW_TOKENS + 1, num_beams=4)  # max_length counts the start token


def build_checkpoint(directory: Path, size: str = "full") -> Path:
    checkpoint = on_model_thread(save_random_checkpoint, directory / f"vit-gpt2-{size}-random", size, seed=0)
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


class ModelCard:
    """The baseline: the model card's code, one request at a time, stock transformers, fp32.

    It runs on the same thread as Captioner's model work (captioner/model_thread.py): a second
    thread of torch work would give the process a second OpenMP team, and both would slow down.
    """

    name = "baseline: model card code, one at a time, fp32"
    batched = False

    def __init__(self, checkpoint: Path, device: str) -> None:
        from transformers import AutoTokenizer, ViTImageProcessor, VisionEncoderDecoderModel

        self.device = device
        self.model = on_model_thread(lambda: VisionEncoderDecoderModel.from_pretrained(checkpoint).to(device).eval())
        self.feature_extractor = ViTImageProcessor.from_pretrained(checkpoint)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def caption_one(self, path: str) -> str:
        return on_model_thread(self._caption_one, path)

    def _caption_one(self, path: str) -> str:
        image = Image.open(path).convert("RGB")
        pixel_values = self.feature_extractor(images=[image], return_tensors="pt").pixel_values.to(self.device)
        with torch.no_grad():
            output_ids = self.model.generate(pixel_values, max_length=NEW_TOKENS + 1, num_beams=4)
        _sync(self.device)
        new_tokens = output_ids.shape[1] - 1
        assert new_tokens == NEW_TOKENS, f"captions must be exactly {NEW_TOKENS} new tokens, got {new_tokens}"
        return self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip()

    def warm_up(self, images: list[str]) -> None:
        self.caption_one(images[0])

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class Direct:
    """Captioner.caption in this process: the inference core without the app around it."""

    batched = True

    def __init__(self, checkpoint: Path, device: str, dtype: str, batch: int) -> None:
        self.name = f"Captioner.caption, {dtype}, max batch {batch}"
        self.dtype, self.batch = dtype, batch
        self.captioner = Captioner.from_pretrained(checkpoint, device=device, dtype=dtype, max_batch_size=batch)

    def caption_one(self, path: str) -> str:
        text = self.captioner.caption([path], SETTINGS)[0][0].text
        _sync(str(self.captioner.device))
        return text

    def caption_all(self, paths: list[str]) -> tuple[int, list[str], collections.Counter, None]:
        """Returns images captioned, their captions, the batch sizes generate() ran, and None: every
        batch is full, so the whole run is the steady state."""
        self.captioner.generate_batch_sizes.clear()
        results = self.captioner.caption(paths, SETTINGS)
        _sync(str(self.captioner.device))
        return len(paths), [r[0].text for r in results], collections.Counter(self.captioner.generate_batch_sizes), None

    def warm_up(self, images: list[str]) -> None:
        self.caption_one(images[0])
        self.caption_all(images[: self.batch])

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class App:
    """app.py in its own process, called over HTTP by gradio_client clients."""

    batched = True

    def __init__(self, checkpoint: Path, dtype: str, max_batch_size: int, clients: int,
                 log_path: Path, first_image: str) -> None:
        from gradio_client import handle_file

        from load import launch_app, loopback_client

        self.name = f"app.py, {dtype}, {clients} gradio_client clients"
        self.dtype, self.log_path = dtype, log_path
        self.max_batch_size = max_batch_size
        self._handle_file = handle_file
        started = time.perf_counter()
        self.server, url = launch_app(
            ["--model", str(checkpoint), "--dtype", dtype, "--max-batch-size", str(max_batch_size),
             "--queue-size", "256"],
            log_path,
        )
        # Connected before any clock starts: a concurrent client is a visitor with the page open.
        self.clients = [loopback_client(url) for _ in range(clients)]
        self.caption_one(first_image)
        self.cold_start_s = time.perf_counter() - started

    def _caption(self, client, path: str) -> str:
        return client.predict(self._handle_file(path), max_length=SETTINGS.max_length, api_name="/caption")

    def caption_one(self, path: str) -> str:
        return self._caption(self.clients[0], path)

    def caption_all(self, paths: list[str], requests: int | None = None
                    ) -> tuple[int, list[str], collections.Counter, tuple[int, float] | None]:
        """`requests` requests (default: one per path) over all the clients at once, cycling through
        `paths`; returns requests answered, the captions of `paths`, the batch sizes the server's
        queue formed, and the images and seconds of the run's steady state (`steady_window`)."""
        requests = requests or len(paths)
        log_mark = self.log_path.stat().st_size
        results: dict[int, str] = {}
        answered_at: list[float] = []
        lock = threading.Lock()
        counter = iter(range(requests))

        def worker(client) -> None:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                text = self._caption(client, paths[index % len(paths)])
                with lock:
                    results[index] = text
                    answered_at.append(time.perf_counter())

        threads = [threading.Thread(target=worker, args=(client,)) for client in self.clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self.log_path.open() as log:
            log.seek(log_mark)
            batches = [int(n) for n in re.findall(r"captioned a batch of (\d+)", log.read())]
        captions = [results[i] for i in range(min(len(paths), requests))]
        return requests, captions, collections.Counter(batches), steady_window(answered_at, batches)

    def warm_up(self, images: list[str]) -> None:
        self.caption_one(images[0])
        self.caption_all(images, requests=2 * self.max_batch_size)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.server.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def pause(self) -> None:
        self.server.send_signal(signal.SIGSTOP)  # an idle server still polls: keep it off the CPU

    def resume(self) -> None:
        self.server.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        self.server.terminate()
        self.server.wait(timeout=60)


def steady_window(answered_at: list[float], batches: list[int]) -> tuple[int, float] | None:
    """Images and seconds from the end of a round's first batch to the end of its last-but-one.

    All clients start a round at the same instant, so the queue's first batch holds whoever got
    there first (often 1-3 requests), and the last batch what is left over. Between the two, every
    client has a request in flight and every batch is formed from a full queue: that stretch is the
    throughput under 16 concurrent clients. Batches run one at a time, so the requests answered
    first belong to the first batch, and so on. None when the round had fewer than three batches.
    """
    if len(batches) < 3 or sum(batches) != len(answered_at):
        return None
    times = sorted(answered_at)
    ends = list(itertools.accumulate(batches))  # how many answers there are once each batch is done
    return sum(batches[1:-1]), times[ends[-2] - 1] - times[ends[0] - 1]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Tally:
    """One path's measurements: per round, single-request latencies and batched images/seconds."""

    def __init__(self, rounds: int) -> None:
        self.latencies: list[list[float]] = [[] for _ in range(rounds)]
        self.images = [0] * rounds  # all the round's batched work...
        self.seconds = [0.0] * rounds
        self.window_images = [0] * rounds  # ...and the part its throughput is measured on (app: steady state)
        self.window_seconds = [0.0] * rounds
        self.single_captions: dict[str, str] = {}
        self.batch_sizes: collections.Counter = collections.Counter()
        self.captions: list[str] = []

    @property
    def latency_s(self) -> float:
        every = [t for round_ in self.latencies for t in round_]
        return sum(every) / len(every)

    @property
    def images_per_s(self) -> float:
        """Batched images per second; one at a time (1 / latency) for a path that does not batch."""
        if sum(self.window_seconds):
            return sum(self.window_images) / sum(self.window_seconds)
        return 1 / self.latency_s

    @property
    def whole_round_images_per_s(self) -> float:
        return sum(self.images) / sum(self.seconds) if sum(self.seconds) else 1 / self.latency_s

    def round_images_per_s(self, index: int) -> float:
        if self.window_seconds[index]:
            return self.window_images[index] / self.window_seconds[index]
        return len(self.latencies[index]) / sum(self.latencies[index])


def measure(paths: list, images: list[str], single: list[str], rounds: int, workload: list[str]) -> dict[str, Tally]:
    """Each round: the paths take turns captioning `single` one image at a time (path 1 image 1,
    path 2 image 1, ..., path 1 image 2, ...), then each batched path captions `workload`, a list of
    image paths that cycles through `images`.

    Single requests take turns image by image because this VM's speed drifts by 10-30% over
    minutes: a path whose requests all came a minute after another's could gain or lose that much
    for reasons of its own, while taking turns gives every path the same stretches of machine time.
    """
    tallies = {path.name: Tally(rounds) for path in paths}

    def on(path, work):
        path.resume()
        try:
            return work()
        finally:
            path.pause()

    for index in range(rounds):
        for image in single:
            for path in paths:
                tally = tallies[path.name]
                began = time.perf_counter()
                tally.single_captions[image] = on(path, lambda: path.caption_one(image))
                tally.latencies[index].append(time.perf_counter() - began)
        for path in paths:
            if not path.batched:
                continue
            tally = tallies[path.name]
            began = time.perf_counter()
            count, captions, sizes, steady = on(path, lambda: path.caption_all(workload))
            tally.seconds[index] = time.perf_counter() - began
            tally.images[index] = count
            # The app's steady state when the round had one; the Captioner's batches are all full.
            tally.window_images[index], tally.window_seconds[index] = steady or (count, tally.seconds[index])
            tally.batch_sizes.update(sizes)
            tally.captions = captions[: len(images)]
        print(f"round {index + 1}/{rounds}: " + ", ".join(
            f"{name.split(',')[0]} {t.round_images_per_s(index):.2f}/s" for name, t in tallies.items()), flush=True)
    return tallies


def agreement(a: list[str], b: list[str]) -> float | None:
    pairs = list(zip(a, b))
    return sum(x == y for x, y in pairs) / len(pairs) if pairs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=["full", "tiny"], default="full",
                        help="tiny: a seconds-long smoke run of this script, not a measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=16, help="distinct images for throughput")
    parser.add_argument("--single", type=int, default=4, help="images captioned one at a time per round")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64,
                        help="images per round for each batched path: app requests, and as many for Captioner.caption")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--no-app", action="store_true", help="skip the app runs (no gradio, e.g. on a GPU box)")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--gpu-batches", default="8,32,64")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="speed-bench-"))
    checkpoint = build_checkpoint(workdir, args.size)
    images = build_images(workdir, args.images)
    single = images[: args.single]
    machine = _machine(args.device)
    print(f"machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    on_cpu = args.device == "cpu"
    if on_cpu:
        precisions = ["float32"] if args.no_int8 else ["float32", "int8"]
    else:
        precisions = ["float32", "float16", "bfloat16"]
    batches = [args.max_batch_size] if on_cpu else [int(b) for b in args.gpu_batches.split(",")]
    baseline = ModelCard(checkpoint, args.device)
    paths: list = [baseline]
    apps: list[App] = []
    try:
        for dtype in precisions:
            for batch in batches:
                paths.append(Direct(checkpoint, args.device, dtype, batch))
            if on_cpu and not args.no_app:
                app = App(checkpoint, dtype, args.max_batch_size, args.clients,
                          workdir / f"app-{dtype}.log", images[0])
                app.pause()
                apps.append(app)
                paths.append(app)
        for path in paths:  # warm-up, outside every clock
            path.resume()
            path.warm_up(images)
            path.pause()
        # The same work for Captioner.caption as for the app, so both are timed over equally long
        # stretches of this noisy machine; on a GPU, at least two batches of the largest size.
        count = args.requests if on_cpu else max(args.requests, 2 * max(batches))
        workload = list(itertools.islice(itertools.cycle(images), count))
        tallies = measure(paths, images, single, args.rounds, workload)
        peak_rss = {app.name: app.peak_rss_mb() for app in apps}
    finally:
        for app in apps:
            app.close()

    base = tallies[baseline.name]
    default_name = paths[1].name
    rows = []
    report: dict = {"machine": machine, "rounds": args.rounds, "runs": {}}
    for path in paths:
        tally = tallies[path.name]
        row = {
            "images_per_s": tally.images_per_s,
            "images": sum(tally.images),  # captioned in the batched runs, all rounds
            "measured_images": sum(tally.window_images),  # of which in the throughput window
            "whole_round_images_per_s": tally.whole_round_images_per_s,
            "whole_round_x_baseline": tally.whole_round_images_per_s / base.images_per_s,
            "throughput_x_baseline": tally.images_per_s / base.images_per_s,
            "throughput_x_baseline_per_round": [
                tally.round_images_per_s(i) / base.round_images_per_s(i) for i in range(args.rounds)],
            "latency_s": tally.latency_s,
            "latency_x_baseline": tally.latency_s / base.latency_s,
            "equal_to_baseline": agreement([tally.single_captions[i] for i in single], [base.single_captions[i] for i in single]),
            "agreement_with_default": agreement(tally.captions, tallies[default_name].captions) if path.batched else None,
            "batch_sizes": dict(sorted(tally.batch_sizes.items(), reverse=True)),
        }
        if isinstance(path, Direct):
            row["linear_kind"] = path.captioner.speedups.linear_kind  # native kernel, oneDNN or int8
        if isinstance(path, App):
            row.update(peak_rss_mb=peak_rss[path.name], cold_start_s=path.cold_start_s)
            direct = next(tallies[p.name] for p in paths if isinstance(p, Direct) and p.dtype == path.dtype)
            row["app_overhead_throughput"] = direct.images_per_s / tally.images_per_s - 1
            row["app_overhead_latency"] = tally.latency_s / direct.latency_s - 1
        rows.append((path.name, row))
        report["runs"][path.name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}

    print()
    print(f"{'run':<50} {'images/s':>8} {'x base':>6} {'per round':>16} {'whole':>6} {'latency s':>9} {'x base':>6} "
          f"{'= base':>6} {'= fp32':>6} {'peak RSS MB':>11} {'cold s':>6}  batch sizes")
    for name, r in rows:
        per_round = " ".join(f"{x:.2f}" for x in r["throughput_x_baseline_per_round"])
        print(
            f"{name:<50} {r['images_per_s']:>8.2f} {r['throughput_x_baseline']:>6.2f} {per_round:>16} "
            f"{r['whole_round_x_baseline']:>6.2f} "
            f"{r['latency_s']:>9.3f} {r['latency_x_baseline']:>6.2f} {_pct(r['equal_to_baseline']):>6} "
            f"{_pct(r['agreement_with_default']):>6} {_num(r.get('peak_rss_mb')):>11} "
            f"{_num(r.get('cold_start_s'), 1):>6}  {_sizes(r['batch_sizes'])}"
        )
    for name, r in rows:
        if "linear_kind" in r:
            print(f"{name}: linear layers on {r['linear_kind']}")
    for name, r in rows:
        if "app_overhead_throughput" in r:
            print(f"{name}: adds {100 * r['app_overhead_throughput']:.0f}% to throughput time and "
                  f"{100 * r['app_overhead_latency']:.0f}% to latency over Captioner.caption")
    print(json.dumps(report))


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _num(value, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _sizes(sizes: dict[int, int]) -> str:
    return " ".join(f"{size}x{n}" for size, n in sizes.items())


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "CPU")
    return f"{model}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
