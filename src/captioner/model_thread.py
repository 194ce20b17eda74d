"""All of a process's model work on one thread, so that PyTorch keeps a single OpenMP team.

PyTorch's CPU kernels run their parallel parts on OpenMP (the libgomp it ships). Every thread that
starts a parallel kernel gets a team of worker threads of its own, and keeps it until the thread
exits. Once a process holds more of these threads than it has CPUs, libgomp stops spin-waiting
between kernels (100 spins instead of about 300,000) and puts its threads to sleep instead, so each
of the thousands of small kernels in a caption pays for a sleep and a wake-up.

A Gradio server has exactly that shape: the model is loaded on the main thread (one team) and the
handlers run on a pool of worker threads (one team each). On the 2-core benchmark machine a caption
took 8-12% longer in the server than the same caption run directly
(one caption at a time, taking turns; see the README's speed section). Loading the model and running
every `generate` on one long-lived thread leaves one team, and the gap closes.

The thread is per process, not per Captioner, because the OpenMP teams are too: two Captioners, or a
Captioner next to the benchmark's baseline, must share it.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from typing import Callable, ParamSpec, TypeVar

THREAD_NAME = "captioner-model"

P = ParamSpec("P")
T = TypeVar("T")


class _ModelThread:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        # A daemon: Ctrl-C in the CLI exits at once instead of waiting for the batch in progress.
        self.thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            future, function, args, kwargs = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 - handed to the caller, who re-raises it
                future.set_exception(error)
            else:
                future.set_result(result)
            del future, function, args, kwargs  # drop the job's tensors before waiting for the next

    def run(self, function: Callable[..., T], args: tuple, kwargs: dict) -> T:
        future: Future = Future()
        self._jobs.put((future, function, args, kwargs))
        return future.result()


_model_thread: _ModelThread | None = None
_start_lock = threading.Lock()


def on_model_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call `function(*args, **kwargs)` on the process's model thread and return its result (or
    raise its exception). Called on that thread itself, it just calls it. Calls from several
    threads run one after another, in the order they arrive.

    >>> on_model_thread(sum, [1, 2, 3])
    6
    """
    global _model_thread
    with _start_lock:
        if _model_thread is None or _model_thread.pid != os.getpid():  # a forked child has no thread
            _model_thread = _ModelThread()
        model_thread = _model_thread
    if threading.current_thread() is model_thread.thread:
        return function(*args, **kwargs)
    return model_thread.run(function, args, kwargs)


def is_model_thread() -> bool:
    return _model_thread is not None and threading.current_thread() is _model_thread.thread
