"""Speed benchmark: the project against the model card's code, on the full-size ViT-GPT2 architecture.

Workload: nlpconnect/vit-gpt2-image-captioning's shapes (ViT-base/16 at 224, GPT-2 124M with
cross-attention, vocabulary 50257) with seeded random weights built here (speed does not depend on
weight values); beam search with 4 beams; every caption exactly 16 new tokens (the checkpoint's
generation config sets min_new_tokens=16 and the requests max_length=17, so EOS is masked).

    python bench/speed.py                          # CPU: baseline, Captioner, app.py with 16 clients, int8
    python bench/speed.py --device cuda --no-app   # GPU: baseline vs fp32/fp16/bf16 batches

Latency: the paths take turns captioning single images, round after round (--rounds). The app's
single requests go through gradio_client and, in the same turn, as the app's page sends them
(bench/load.py's PageProtocolClient), which leaves out gradio_client's 50 ms polling.
Throughput: for each precision the paths take turns many times (--turns): the baseline captions one
image, Captioner.caption one full batch, then the app runs for as long as that batch took, with 16
gradio_client clients (bench/busy_clients.py, a process of their own) that each keep a request in
flight, and is paused (SIGSTOP, server and clients) until its next turn. Its throughput is the
answers per second of the time it was let run, from the end of its first batch (whoever got there
first) to the last one answered before the clients stopped. So every ratio compares runs that
shared the same few-second stretches of machine time: on this noisy VM, rounds of half a minute
per path gave per-round ratios from 0.7x to 1.4x of the same code.

Prints a table and one JSON line. Every ratio is against the baseline measured in the same run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from baseline import FreshBaseline  # noqa: E402
from report import agreement, machine_name, number_text, percent, rounded, sizes_text  # noqa: E402
from paths import App, BusyClients, Direct, ModelCard, build_checkpoint, build_images  # noqa: E402
from timing import RunningClock, Tally, batch_ends, steady_blocks  # noqa: E402

def measure_latency(paths: list, tallies: dict[str, Tally], single: list[str], rounds: int) -> None:
    """Each round the paths take turns captioning `single` one image at a time: path 1 image 1,
    path 2 image 1, ..., path 1 image 2, ... This VM's speed drifts by 10-30% over minutes; taking
    turns gives every path the same stretches of machine time."""
    for index in range(rounds):
        for image in single:
            for path in paths:
                tally = tallies[path.name]
                path.resume()
                try:
                    # The app answers both clients in its turn, in alternating order.
                    as_page_first = isinstance(path, App) and len(tally.page_latencies) % 2 == 0
                    if as_page_first:
                        _time_page_request(path, tally, image)
                    began = time.perf_counter()
                    tally.single_captions[image] = path.caption_one(image)
                    tally.latencies[index].append(time.perf_counter() - began)
                    if isinstance(path, App) and not as_page_first:
                        _time_page_request(path, tally, image)
                finally:
                    path.pause()
        print(f"latency round {index + 1}/{rounds}: " + ", ".join(
            f"{name.split(',')[0]} {1000 * statistics.mean(t.latencies[index]):.0f} ms"
            for name, t in tallies.items()), flush=True)


def _time_page_request(app: App, tally: Tally, image: str) -> None:
    began = time.perf_counter()
    tally.page_captions[image] = app.caption_one_as_the_page(image)
    tally.page_latencies.append(time.perf_counter() - began)


def measure_throughput(baseline: ModelCard, paths: list, tallies: dict[str, Tally], images: list[str],
                       turns: int, workdir: Path) -> None:
    """Throughput of one precision's paths, taking turns many times: in each turn the baseline
    captions one image, each Captioner.caption path one full batch, and the app runs with its
    clients for as long as the Captioner's batch took (every client keeping a request in flight),
    then is paused. The app's time is the time it was let run; its load never stops in between,
    so the queue is in its steady state except at the very start and end, which are left out.

    Turns of a few seconds keep every ratio to stretches of machine time that the paths shared:
    on this VM, rounds of half a minute per path gave per-round ratios from 0.7x to 1.4x."""
    blocks = len(tallies[baseline.name].blocks)
    turn_block = [turn * blocks // turns for turn in range(turns)]
    apps = [p for p in paths if isinstance(p, App)]
    clocks = {app.name: RunningClock() for app in apps}
    log_marks = {}
    for app in apps:
        app.resume()
        log_marks[app.name] = app.log_path.stat().st_size
        app.load = BusyClients(app, images, workdir / f"answers-{app.dtype}.jsonl")
        app.pause()
    cycle = itertools.cycle(images)
    last_slice_s = 1.0
    for turn in range(turns):
        block = turn_block[turn]
        for path in [baseline, *paths]:
            tally = tallies[path.name]
            if isinstance(path, App):
                began = time.perf_counter()
                path.resume()
                time.sleep(last_slice_s)
                path.pause()
                clocks[path.name].add(began, time.perf_counter())
                continue
            batch = [next(cycle) for _ in range(path.batch if path.batched else 1)]
            began = time.perf_counter()
            captions = path.caption_batch(batch) if path.batched else [path.caption_one(batch[0])]
            last_slice_s = time.perf_counter() - began
            tally.add(block, len(batch), last_slice_s)
            if path.batched:
                tally.batch_sizes[len(batch)] += 1
                tally.captions.update(zip(batch, captions))
    for app in apps:
        until = time.perf_counter()
        app.resume()
        answers = app.load.finish()
        clocks[app.name].add(until, time.perf_counter())
        app.pause()
        app.load = None
        batches = app.batch_sizes_since(log_marks[app.name])
        ends = batch_ends([a["t"] for a in answers], batches)
        tally = tallies[app.name]
        for block, (count, seconds) in enumerate(steady_blocks(ends, batches, clocks[app.name], until, turn_block)):
            tally.add(block, count, seconds)
        tally.batch_sizes.update(batches)
        tally.captions.update((images[a["image"]], a["caption"]) for a in answers)
    print(", ".join(f"{name.split(',')[0]} {t.images_per_s:.2f}/s" for name, t in tallies.items()
                    if name == baseline.name or any(p.name == name for p in paths)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=["full", "tiny"], default="full",
                        help="tiny: a seconds-long smoke run of this script, not a measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of single requests (latency)")
    parser.add_argument("--single", type=int, default=4, help="images captioned one at a time per round")
    parser.add_argument("--turns", type=int, default=24, help="turns per precision (throughput)")
    parser.add_argument("--blocks", type=int, default=3, help="the turns are reported in this many blocks")
    parser.add_argument("--images", type=int, default=16, help="distinct images for throughput")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--no-app", action="store_true", help="skip the app runs (no gradio, e.g. on a GPU box)")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--gpu-batches", default="8,32,64")
    args = parser.parse_args()
    if args.turns < args.blocks:
        parser.error("--turns must be at least --blocks")

    workdir = Path(tempfile.mkdtemp(prefix="speed-bench-"))
    checkpoint = build_checkpoint(workdir, args.size)
    images = build_images(workdir, args.images)
    single = images[: args.single]
    machine = machine_name(args.device)
    print(f"machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    on_cpu = args.device == "cpu"
    if on_cpu:
        precisions = ["float32"] if args.no_int8 else ["float32", "int8"]
    else:
        precisions = ["float32", "float16", "bfloat16"]
    batches = [args.max_batch_size] if on_cpu else [int(b) for b in args.gpu_batches.split(",")]
    baseline = FreshBaseline(checkpoint, args.device)  # the model card's code as a user runs it
    in_run = ModelCard(checkpoint, args.device)  # the same code inside this process: a reference
    paths: list = [baseline, in_run]
    apps: list[App] = []
    phases: dict[str, list] = {}  # precision -> its paths, measured together
    try:
        for dtype in precisions:
            phases[dtype] = [Direct(checkpoint, args.device, dtype, batch) for batch in batches]
            if dtype == "float32":
                phases[dtype].insert(0, in_run)
            if on_cpu and not args.no_app:
                app = App(checkpoint, dtype, args.max_batch_size, args.clients,
                          workdir / f"app-{dtype}.log", images[0])
                app.pause()
                apps.append(app)
                phases[dtype].append(app)
            paths.extend(p for p in phases[dtype] if p is not in_run)
        for path in paths:  # warm-up, outside every clock
            path.resume()
            path.warm_up(images)
            path.pause()
        tallies = {path.name: Tally(args.rounds, args.blocks) for path in paths}
        measure_latency(paths, tallies, single, args.rounds)
        base_tallies = {dtype: Tally(args.rounds, args.blocks) for dtype in phases}  # the baseline, per phase
        for dtype, phase_paths in phases.items():
            phase_tallies = {baseline.name: base_tallies[dtype], **{p.name: tallies[p.name] for p in phase_paths}}
            measure_throughput(baseline, phase_paths, phase_tallies, images, args.turns, workdir)
        peak_rss = {app.name: app.peak_rss_mb() for app in apps}
    finally:
        for app in apps:
            app.close()
        baseline.close()

    base = tallies[baseline.name]
    base.blocks = [(sum(t.blocks[i][0] for t in base_tallies.values()), sum(t.blocks[i][1] for t in base_tallies.values()))
                   for i in range(args.blocks)]
    base_of = {p.name: base_tallies[dtype] for dtype, phase_paths in phases.items() for p in phase_paths}
    base_of[baseline.name] = base
    default_name = next(p.name for p in paths if isinstance(p, Direct))
    rows = []
    report: dict = {"machine": machine, "rounds": args.rounds, "turns": args.turns, "blocks": args.blocks,
                    "baseline": "the model card's code in fresh processes of their own (bench/model_card.py)",
                    "baseline_processes_s_per_image": [round(s, 4) for s in baseline.seconds_per_image()], "runs": {}}
    for path in paths:
        tally, path_base = tallies[path.name], base_of[path.name]
        row = {
            "images_per_s": tally.images_per_s,
            "measured_images": tally.images,  # captioned in the throughput turns (the app: its steady state)
            "throughput_x_baseline": tally.images_per_s / path_base.images_per_s,
            "throughput_x_baseline_per_block": [
                tally.block_images_per_s(i) / path_base.block_images_per_s(i) for i in range(args.blocks)],
            "latency_s": tally.latency_s,
            "latency_x_baseline": tally.latency_s / base.latency_s,
            "equal_to_baseline": agreement([tally.single_captions[i] for i in single], [base.single_captions[i] for i in single]),
            "agreement_with_default": agreement([tally.captions.get(i) for i in images],
                                                [tallies[default_name].captions.get(i) for i in images])
            if path.batched else None,
            "batch_sizes": dict(sorted(tally.batch_sizes.items(), reverse=True)),
        }
        if isinstance(path, Direct):
            row["linear_kind"] = path.captioner.speedups.linear_kind  # native kernel, oneDNN or int8
        if isinstance(path, App):
            row.update(peak_rss_mb=peak_rss[path.name], cold_start_s=path.cold_start_s)
            direct = next(tallies[p.name] for p in paths if isinstance(p, Direct) and p.dtype == path.dtype)
            row["app_overhead_throughput"] = direct.images_per_s / tally.images_per_s - 1
            row["app_overhead_throughput_per_block"] = [
                direct.block_images_per_s(i) / tally.block_images_per_s(i) - 1 for i in range(args.blocks)]
            row["app_overhead_latency"] = tally.latency_s / direct.latency_s - 1
            page_latency_s = statistics.mean(tally.page_latencies)
            row.update(
                page_latency_s=page_latency_s, page_latency_x_baseline=page_latency_s / base.latency_s,
                page_equal_to_baseline=agreement([tally.page_captions[i] for i in single],
                                                 [base.single_captions[i] for i in single]),
                app_overhead_page_latency=page_latency_s / direct.latency_s - 1,
            )
        rows.append((path.name, row))
        report["runs"][path.name] = rounded(row)

    print()
    print(f"{'run':<50} {'images/s':>8} {'x base':>6} {'per block':>16} {'latency s':>9} {'x base':>6} "
          f"{'= base':>6} {'= fp32':>6} {'peak RSS MB':>11} {'cold s':>6}  batch sizes")
    for name, r in rows:
        per_block = " ".join(f"{x:.2f}" for x in r["throughput_x_baseline_per_block"])  # nan: nothing ended there
        print(
            f"{name:<50} {r['images_per_s']:>8.2f} {r['throughput_x_baseline']:>6.2f} {per_block:>16} "
            f"{r['latency_s']:>9.3f} {r['latency_x_baseline']:>6.2f} {percent(r['equal_to_baseline']):>6} "
            f"{percent(r['agreement_with_default']):>6} {number_text(r.get('peak_rss_mb')):>11} "
            f"{number_text(r.get('cold_start_s'), 1):>6}  {sizes_text(r['batch_sizes'])}"
        )
    spread = baseline.seconds_per_image()
    print(f"baseline: the model card's code in two fresh processes of their own, taking turns: "
          f"{spread[0]:.3f} and {spread[1]:.3f} s an image (spread {100 * abs(spread[0] - spread[1]) / min(spread):.0f}%)")
    for name, r in rows:
        if "linear_kind" in r:
            print(f"{name}: linear layers on {r['linear_kind']}")
    for name, r in rows:
        if "app_overhead_throughput" in r:
            per_block = ", ".join(f"{100 * x:.0f}%" for x in r["app_overhead_throughput_per_block"])
            print(f"{name}: adds {100 * r['app_overhead_throughput']:.0f}% to throughput time (blocks: {per_block}) "
                  f"and {100 * r['app_overhead_latency']:.0f}% to latency over Captioner.caption")
            print(f"{name}: one request sent as the app's page sends it (no gradio_client): "
                  f"{r['page_latency_s']:.3f} s, {r['page_latency_x_baseline']:.2f} x baseline, "
                  f"adds {100 * r['app_overhead_page_latency']:.0f}% over Captioner.caption; "
                  f"captions = baseline {percent(r['page_equal_to_baseline'])}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
