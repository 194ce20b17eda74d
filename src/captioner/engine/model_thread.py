"""All of a process's model work on one thread, so that PyTorch keeps a single OpenMP team.

PyTorch's CPU kernels run their parallel parts on OpenMP (the libgomp it ships). Every thread that
starts a parallel kernel gets a team of worker threads of its own, and keeps it until the thread
exits. Once a process holds more of these threads than it has CPUs, libgomp stops spin-waiting
between kernels (100 spins instead of about 300,000) and puts its threads to sleep instead, so each
of the thousands of small kernels in a caption pays for a sleep and a wake-up.

A Gradio server has exactly that shape: the model is loaded on the main thread (one team) and the
handlers run on a pool of worker threads (one team each). On the 2-core benchmark machine a caption
took 8-12% longer in the server than the same caption run directly
(one caption at a time, taking turns; see docs/performance.md). Loading the model and running
every `generate` on one long-lived thread leaves one team, and the gap closes.

The thread is per process, not per Captioner, because the OpenMP teams are too: two Captioners, or a
Captioner next to the benchmark's baseline, must share it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, ParamSpec, TypeVar

THREAD_NAME = "captioner-model"
# No model work for this long: the thread is idle and runs its idle work. Long enough that one
# visitor's next photo, or a benchmark's next single request, does not come right after a trim:
# a caption right after a trim faults its memory back in, and a visitor's photos come seconds
# apart, not milliseconds (docs/performance.md).
IDLE_AFTER_S = 30.0
MAX_DEFER_S = 60.0  # under unbroken load, idle work waits at most this long, then runs between jobs
log = logging.getLogger("captioner.engine.model_thread")

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
        idle_work: dict[Callable[[], object], None] = {}  # an ordered set: each function runs once
        deferred_since = 0.0
        while True:
            try:
                item = self._jobs.get(timeout=IDLE_AFTER_S if idle_work else None)
            except queue.Empty:
                item = None
            if idle_work and (item is None or time.monotonic() - deferred_since > MAX_DEFER_S):
                _run_all(idle_work)
                idle_work.clear()
            if item is None:
                continue
            if isinstance(item, _IdleWork):
                if not idle_work:
                    deferred_since = time.monotonic()
                idle_work[item.function] = None
                continue
            future, function, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 - handed to the caller, who re-raises it
                future.set_exception(error)
            else:
                future.set_result(result)
            del item, future, function, args, kwargs  # drop the job's tensors before waiting for the next

    def run(self, function: Callable[..., T], args: tuple, kwargs: dict) -> T:
        future: Future = Future()
        self._jobs.put((future, function, args, kwargs))
        return future.result()

    def when_idle(self, function: Callable[[], object]) -> None:
        self._jobs.put(_IdleWork(function))


class _IdleWork:
    def __init__(self, function: Callable[[], object]) -> None:
        self.function = function


def _run_all(functions) -> None:
    for function in functions:
        try:
            function()
        except Exception:  # noqa: BLE001 - nobody waits on idle work to hear of its failure
            log.exception("idle work %r failed", function)


_model_thread: _ModelThread | None = None
_start_lock = threading.Lock()


def _the_model_thread() -> _ModelThread:
    global _model_thread
    with _start_lock:
        if _model_thread is None or _model_thread.pid != os.getpid():  # a forked child has no thread
            _model_thread = _ModelThread()
        return _model_thread


def on_model_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call `function(*args, **kwargs)` on the process's model thread and return its result (or
    raise its exception). Called on that thread itself, it just calls it. Calls from several
    threads run one after another, in the order they arrive.

    >>> on_model_thread(sum, [1, 2, 3])
    6
    """
    model_thread = _the_model_thread()
    if threading.current_thread() is model_thread.thread:
        return function(*args, **kwargs)
    return model_thread.run(function, args, kwargs)


def when_model_idle(function: Callable[[], object]) -> None:
    """Run `function()` on the model thread once it has had no work for IDLE_AFTER_S, without
    waiting for it. Under unbroken load it runs between two jobs once MAX_DEFER_S have passed.
    Asked for again before it has run, it still runs once.

    For housekeeping that would slow the next batch if it ran between batches: giving freed
    memory back to the OS means the next batch faults it all in again.

    >>> when_model_idle(release_free_memory)  # doctest: +SKIP
    """
    _the_model_thread().when_idle(function)


def is_model_thread() -> bool:
    return _model_thread is not None and threading.current_thread() is _model_thread.thread
