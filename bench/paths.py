"""The paths bench/speed.py times: the model card's code in this process, Captioner.caption, and
app.py under load (the baseline in fresh processes of its own is in baseline.py).

Each has caption_one (latency), warm_up, pause and resume; the batched ones caption_batch too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import itertools  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from multiprocessing.pool import ThreadPool  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from captioner import Captioner, CaptionSettings  # noqa: E402
from captioner.engine.random_models import save_random_checkpoint  # noqa: E402
from captioner.engine.model_thread import on_model_thread  # noqa: E402

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


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class ModelCard:
    """The model card's code inside the benchmark's own process, taking turns with the other paths:
    a reference, not the baseline (it shares the process with the Captioners and a gradio client;
    a user's fresh process is faster). It runs on the same thread as Captioner's model work
    (captioner/engine/model_thread.py): a second thread of torch work would give the process a second
    OpenMP team, and both would slow down.
    """

    name = "model card code in this benchmark's process"
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

    def caption_batch(self, paths: list[str]) -> list[str]:
        self.captioner.generate_batch_sizes.clear()
        results = self.captioner.caption(paths, SETTINGS)
        _sync(str(self.captioner.device))
        assert dict(self.captioner.generate_batch_sizes) == {len(paths): 1}, "one full batch per slice"
        return [r[0].text for r in results]

    def warm_up(self, images: list[str]) -> None:
        self.caption_one(images[0])
        self.caption_batch(images[: self.batch])

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class App:
    """app.py in its own process, called over HTTP by gradio_client clients.

    Single requests come from one client in this process. The concurrent load comes from
    `clients` clients in a process of their own (bench/busy_clients.py), each keeping a request in
    flight, so that pausing the app pauses its load with it.
    """

    batched = True

    def __init__(self, checkpoint: Path, dtype: str, max_batch_size: int, clients: int,
                 log_path: Path, first_image: str) -> None:
        from gradio_client import handle_file

        from load import PageProtocolClient, launch_app, loopback_client

        self.name = f"app.py, {dtype}, {clients} gradio_client clients"
        self.dtype, self.log_path, self.clients = dtype, log_path, clients
        self.max_batch_size = max_batch_size
        self._handle_file = handle_file
        started = time.perf_counter()
        self.server, self.url = launch_app(
            ["--model", str(checkpoint), "--dtype", dtype, "--max-batch-size", str(max_batch_size),
             "--queue-size", "256"],
            log_path,
        )
        self.client = loopback_client(self.url)
        self.caption_one(first_image)
        self.cold_start_s = time.perf_counter() - started
        self.page = PageProtocolClient(self.url)
        self.load: BusyClients | None = None

    def caption_one(self, path: str) -> str:
        return self.client.predict(self._handle_file(path), max_length=SETTINGS.max_length, api_name="/caption")

    def caption_one_as_the_page(self, path: str) -> str:
        """The same request as the app's page sends it, without gradio_client's 50 ms polling."""
        return self.page.predict(path, max_length=SETTINGS.max_length)

    def warm_up(self, images: list[str]) -> None:
        """One request alone, then two full batches' worth at once, outside every clock."""
        from load import loopback_client

        self.caption_one(images[0])
        self.caption_one_as_the_page(images[0])
        clients = [loopback_client(self.url) for _ in range(2 * self.max_batch_size)]
        with ThreadPool(len(clients)) as pool:
            pool.starmap(lambda c, p: c.predict(self._handle_file(p), max_length=SETTINGS.max_length,
                                                api_name="/caption"),
                         zip(clients, itertools.cycle(images)))
        for client in clients:
            client.close()  # their heartbeat threads would otherwise wake this process all run long

    def batch_sizes_since(self, log_mark: int) -> list[int]:
        """The sizes of the batches the server's queue formed since `log_mark`, in order."""
        with self.log_path.open() as log:
            log.seek(log_mark)
            # The server logs one JSON object per batch (service.py); other lines are prose.
            return [json.loads(line[line.index("{"):])["batch"] for line in log if '{"batch"' in line]

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.server.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def pause(self) -> None:
        self.server.send_signal(signal.SIGSTOP)  # an idle server still polls: keep it off the CPU
        if self.load:
            self.load.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.load:
            self.load.process.send_signal(signal.SIGCONT)
        self.server.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        self.page.close()
        if self.load:
            self.load.process.kill()
        self.server.terminate()
        self.server.wait(timeout=60)


class BusyClients:
    """bench/busy_clients.py for one app: started paused; each resume of the app lets it run."""

    def __init__(self, app: App, images: list[str], answers: Path) -> None:
        self.answers = answers
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "busy_clients.py"), app.url, str(answers), *images,
             "--clients", str(app.clients), "--max-length", str(SETTINGS.max_length)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("bench/busy_clients.py did not start")
        self.process.send_signal(signal.SIGSTOP)
        self.command("go")  # read when the process is next let run

    def command(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self) -> list[dict]:
        """Stop issuing requests, let the ones in flight be answered; returns every answer."""
        self.command("stop")
        if self.process.wait(timeout=600) != 0:
            raise SystemExit(f"a busy client's request failed; see {self.answers}")
        return [json.loads(line) for line in self.answers.read_text().splitlines()]


