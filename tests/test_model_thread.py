"""All model work runs on one thread, whoever calls (captioner/engine/model_thread.py says why)."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from captioner import Captioner, CaptionSettings
from captioner.engine import inference
from captioner.engine.model_thread import THREAD_NAME, is_model_thread, on_model_thread, when_model_idle

ROOT = Path(__file__).resolve().parents[1]


def current_thread_name() -> str:
    return threading.current_thread().name


def test_calls_from_any_thread_run_on_the_one_model_thread():
    with ThreadPoolExecutor(4) as pool:
        names = set(pool.map(lambda _: on_model_thread(current_thread_name), range(16)))
    names.add(on_model_thread(current_thread_name))
    assert names == {THREAD_NAME}
    assert not is_model_thread()
    assert on_model_thread(is_model_thread)


def test_results_and_exceptions_reach_the_caller():
    assert on_model_thread(divmod, 17, 5) == (3, 2)
    assert on_model_thread(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
    with pytest.raises(ZeroDivisionError):
        on_model_thread(divmod, 1, 0)
    assert on_model_thread(divmod, 9, 3) == (3, 0)  # the thread survived the exception


def test_a_call_made_on_the_model_thread_runs_inline_instead_of_waiting_on_itself():
    nested = threading.Thread(target=lambda: on_model_thread(on_model_thread, current_thread_name))
    nested.start()
    nested.join(timeout=30)
    assert not nested.is_alive(), "a nested call deadlocked the model thread"


def test_loading_speed_ups_and_generate_all_run_on_the_model_thread(tiny_checkpoint, photos, monkeypatch):
    from transformers import VisionEncoderDecoderModel

    seen: dict[str, set[str]] = {"load": set(), "speed_up": set(), "generate": set()}
    stock_load = VisionEncoderDecoderModel.from_pretrained.__func__
    stock_speed_up = inference.speed_up

    def load(cls, *args, **kwargs):
        seen["load"].add(current_thread_name())
        return stock_load(cls, *args, **kwargs)

    def speed_up(*args, **kwargs):
        seen["speed_up"].add(current_thread_name())
        return stock_speed_up(*args, **kwargs)

    monkeypatch.setattr(VisionEncoderDecoderModel, "from_pretrained", classmethod(load))
    monkeypatch.setattr(inference, "speed_up", speed_up)
    captioner = Captioner.from_pretrained(tiny_checkpoint)
    stock_generate = captioner.model.generate

    def generate(*args, **kwargs):
        seen["generate"].add(current_thread_name())
        return stock_generate(*args, **kwargs)

    captioner.model.generate = generate
    settings = CaptionSettings(max_length=6, num_beams=2)
    expected = [c[0].text for c in captioner.caption(photos[:3], settings)]  # from the main thread
    with ThreadPoolExecutor(3) as pool:  # and from a pool, as Gradio's handlers call it
        got = list(pool.map(lambda image: captioner.caption([image], settings)[0][0].text, photos[:3]))
    assert got == expected
    assert seen == {"load": {THREAD_NAME}, "speed_up": {THREAD_NAME}, "generate": {THREAD_NAME}}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_a_server_shaped_process_keeps_one_openmp_team(tiny_checkpoint):
    """Load on the main thread, caption from a pool of handler threads that stay alive: the process
    gains one OpenMP team's worker threads, not a team per thread that captioned. The same count
    then sees a second team appear when a handler thread runs a parallel kernel itself. A team's
    size is measured first (one parallel product on the main thread), not assumed."""
    script = textwrap.dedent(f"""
        import os, threading
        from concurrent.futures import ThreadPoolExecutor
        import numpy as np, torch
        from PIL import Image
        torch.set_num_threads(2)
        from captioner import Captioner, CaptionSettings

        def native_threads():  # threads Python did not start: OpenMP's (and numpy's BLAS pool)
            python_threads = {{t.native_id for t in threading.enumerate()}}
            return sum(int(t) not in python_threads for t in os.listdir("/proc/self/task"))

        before = native_threads()
        torch.randn(1000, 1000) @ torch.randn(1000, 1000)  # the main thread's own team
        team = native_threads() - before
        before = native_threads()
        captioner = Captioner.from_pretrained({str(tiny_checkpoint)!r})
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
        pool = ThreadPoolExecutor(3)
        barrier = threading.Barrier(3)
        def caption(_):
            barrier.wait()  # three distinct handler threads, all alive at the end
            return captioner.caption([image] * 2, CaptionSettings(max_length=6, num_beams=2))
        list(pool.map(caption, range(3)))
        with_captioner = native_threads() - before
        pool.submit(lambda: torch.randn(1000, 1000) @ torch.randn(1000, 1000)).result()
        print(team, with_captioner, native_threads() - before)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    team, with_captioner, with_stray_kernel = map(int, result.stdout.split()[-3:])
    assert team >= 1  # torch's 2 threads: the calling thread and at least one worker
    assert with_captioner == team  # the model thread's team, whichever handler threads captioned
    assert with_stray_kernel == 2 * team  # the count does see a second team


@pytest.fixture
def quick_idle(monkeypatch):
    """Idle after 0.2 s; work that keeps coming defers idle work for at most 1 s."""
    from captioner.engine import model_thread

    monkeypatch.setattr(model_thread, "IDLE_AFTER_S", 0.2)
    monkeypatch.setattr(model_thread, "MAX_DEFER_S", 1.0)


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_idle_work_runs_once_on_the_model_thread_after_the_jobs_stop(quick_idle):
    ran: list[tuple[str, float]] = []
    record = lambda: ran.append((current_thread_name(), time.monotonic()))  # noqa: E731
    when_model_idle(record)
    when_model_idle(record)  # asked twice before it ran: runs once
    last_job_done = time.monotonic()
    assert wait_for(lambda: ran)
    time.sleep(0.5)
    assert len(ran) == 1
    name, at = ran[0]
    assert name == THREAD_NAME
    assert at - last_job_done >= 0.15  # it waited for the thread to be idle


def test_idle_work_waits_while_jobs_keep_coming_but_not_forever(quick_idle):
    ran: list[float] = []
    when_model_idle(lambda: ran.append(time.monotonic()))
    started = time.monotonic()
    while time.monotonic() - started < 3.0:  # a job every 50 ms: never idle for 0.2 s
        on_model_thread(time.sleep, 0.05)
        if time.monotonic() - started < 0.9:
            assert not ran, "idle work ran between jobs before MAX_DEFER_S"
    # Wide enough for a busy 2-core VM, and still well short of "never" (the loop runs 3 s).
    assert len(ran) == 1 and 1.0 <= ran[0] - started < 2.5, "deferred past MAX_DEFER_S under load"


def test_failing_idle_work_is_logged_and_the_thread_serves_on(quick_idle, caplog):
    def broken():
        raise RuntimeError("idle work broke")

    with caplog.at_level("ERROR", logger="captioner.engine.model_thread"):
        when_model_idle(broken)
        assert wait_for(lambda: "idle work broke" in caplog.text)
    assert on_model_thread(divmod, 7, 2) == (3, 1)


def test_the_app_gives_memory_back_once_the_model_is_idle_not_after_every_batch(
        captioner, photos, tmp_path, quick_idle, monkeypatch):
    from captioner.app import service as ui
    from captioner.engine import inference

    trims: list[tuple[str, float]] = []
    monkeypatch.setattr(inference, "release_free_memory", lambda: trims.append((current_thread_name(), time.monotonic())))
    service = ui.CaptionService(captioner, ui.AppLimits())
    widgets = ["Beam search", 6, 2, 1.0, 50, 1.0, 1.0, 0, 1, -1]  # the settings as the page sends them
    for index, image in enumerate(photos[:3]):  # three batches back to back: no trim between them
        image.save(tmp_path / f"{index}.png")
        (captions,) = service.caption([str(tmp_path / f"{index}.png")], *([value] for value in widgets))
        assert captions[0] and not captions[0].startswith("Could not")
    batches_done = time.monotonic()
    assert not trims
    assert wait_for(lambda: trims)
    time.sleep(0.5)
    assert len(trims) == 1 and trims[0][0] == THREAD_NAME and trims[0][1] - batches_done >= 0.15
