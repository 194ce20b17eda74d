"""The baseline bench/speed.py compares against: the model card's code (bench/model_card.py) as a
user runs it, each in a fresh process of its own."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from paths import NEW_TOKENS, ROOT


class ModelCardProcess:
    """The model card's code in a fresh process of its own (bench/model_card.py), one image at a
    time, stock transformers, fp32: what a user runs instead of this project."""

    batched = False

    def __init__(self, checkpoint: Path, device: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "model_card.py"), str(checkpoint), device, str(NEW_TOKENS + 1)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.seconds: list[float] = []

    def wait_ready(self) -> None:
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("bench/model_card.py did not start")

    def caption_one(self, path: str) -> str:
        began = time.perf_counter()
        self.process.stdin.write(path + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        self.seconds.append(time.perf_counter() - began)
        assert answer["new_tokens"] == NEW_TOKENS, f"captions must be exactly {NEW_TOKENS} new tokens"
        return answer["caption"]

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)  # its idle OpenMP threads must not spin in others' turns

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        self.process.kill()
        self.process.wait(timeout=60)


class FreshBaseline:
    """The baseline: the model card's code as a user runs it, in processes of their own. Two are
    started, and the baseline's turns alternate between them, so the spread between two fresh
    processes shows next to the result."""

    name = "baseline: model card code, fresh process, fp32"
    batched = False

    def __init__(self, checkpoint: Path, device: str) -> None:
        # Started together (their start-up is not measured), then paused until their turns.
        self.processes = [ModelCardProcess(checkpoint, device) for _ in range(2)]
        for process in self.processes:
            process.wait_ready()
        self.pause()
        self.turn = 0

    def caption_one(self, path: str) -> str:
        process = self.processes[self.turn % 2]
        self.turn += 1
        process.resume()
        try:
            return process.caption_one(path)
        finally:
            process.pause()

    def warm_up(self, images: list[str]) -> None:
        for _ in self.processes:
            self.caption_one(images[0])
        for process in self.processes:
            process.seconds.clear()

    def seconds_per_image(self) -> list[float]:
        return [sum(p.seconds) / len(p.seconds) if p.seconds else float("nan") for p in self.processes]

    def pause(self) -> None:
        for process in self.processes:
            process.pause()

    def resume(self) -> None: ...  # each process is let run for its own request only

    def close(self) -> None:
        for process in self.processes:
            process.close()
