"""Peers: what a user could run instead of this project, on the same images, beside Captioner.caption.

    python bench/peers.py                          # stock batched generate, and Captioner.caption
    python bench/peers.py --onnx-python PATH       # also ONNX Runtime (optimum-onnx), from its own venv

- transformers' stock `generate` on batches of 8: the model card's own `predict_step` given a list
  (bench/model_card.py), in a fresh process of its own;
- ONNX Runtime through optimum-onnx's ORTModelForVision2Seq, exported from the same checkpoint.
  optimum-onnx requires transformers 4.x, so it runs under another Python (a venv made with
  bench/requirements-peers.txt) as bench/onnx_peer.py, with the same stdin/stdout protocol;
- `Captioner.caption` (fp32, exact, batches of 8) in this process.

The paths take turns, one batch each, round after round, on the full-size architecture with random
weights (beam 4, every caption 16 new tokens, as in bench/speed.py). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paths import NEW_TOKENS, ROOT, SETTINGS, build_checkpoint, build_images  # noqa: E402

from captioner import Captioner  # noqa: E402


class Worker:
    """A peer in a process of its own: one line of tab-separated image paths in, one JSON line out."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self.process.stdout.readline().strip()
        if first != "ready":
            self.process.kill()
            raise RuntimeError(f"{name} did not start ({first or 'no output'}; see its stderr above)")

    def caption(self, paths: list[str]) -> list[str]:
        self.process.stdin.write("\t".join(paths) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        assert answer["new_tokens"] == NEW_TOKENS, f"{self.name}: captions must be {NEW_TOKENS} new tokens"
        return answer["captions"]

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=60)


class Ours:
    def __init__(self, checkpoint: Path, batch: int) -> None:
        self.name = f"Captioner.caption, fp32, batches of {batch}"
        self.captioner = Captioner.from_pretrained(checkpoint, max_batch_size=batch)

    def caption(self, paths: list[str]) -> list[str]:
        return [c[0].text for c in self.captioner.caption(paths, SETTINGS)]

    def close(self) -> None: ...


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--onnx-python", help="a Python with bench/requirements-peers.txt installed")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    checkpoint = build_checkpoint(workdir, args.size)
    images = build_images(workdir, args.batch)
    paths: list = [Ours(checkpoint, args.batch), Worker(
        f"stock transformers generate, batches of {args.batch} (fresh process)",
        [sys.executable, str(ROOT / "bench" / "model_card.py"), str(checkpoint), "cpu", str(NEW_TOKENS + 1)])]
    failures = {}
    if args.onnx_python:
        try:
            paths.append(Worker(f"ONNX Runtime via optimum-onnx, batches of {args.batch} (fresh process)",
                                [args.onnx_python, str(ROOT / "bench" / "onnx_peer.py"), str(checkpoint),
                                 str(workdir / "onnx"), str(NEW_TOKENS + 1)]))
        except RuntimeError as error:
            failures["onnx"] = str(error)
            print(f"left out: {error}", flush=True)
    seconds = {p.name: 0.0 for p in paths}
    captions: dict[str, list[str]] = {}
    try:
        for path in paths:  # warm-up, outside the clock
            captions[path.name] = path.caption(images)
        for index in range(args.rounds):
            for path in (paths if index % 2 == 0 else paths[::-1]):
                began = time.perf_counter()
                path.caption(images)
                seconds[path.name] += time.perf_counter() - began
    finally:
        for path in paths:
            path.close()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "CPU")
    ours = paths[0].name
    rate = {name: args.rounds * len(images) / s for name, s in seconds.items()}
    print(f"\nmachine: {cpu}; {args.rounds} rounds of {len(images)} images")
    print(f"{'path':<62} {'images/s':>8} {'x ours':>6} {'= ours':>6}")
    for name in seconds:
        same = sum(a == b for a, b in zip(captions[name], captions[ours])) / len(images)
        print(f"{name:<62} {rate[name]:>8.2f} {rate[name] / rate[ours]:>6.2f} {100 * same:>5.0f}%")
    print(json.dumps({"machine": cpu, "images_per_s": {k: round(v, 3) for k, v in rate.items()},
                      "x_ours": {k: round(v / rate[ours], 3) for k, v in rate.items()}, "left_out": failures}))


if __name__ == "__main__":
    main()
