"""Three changes to gradio 6.31's queue.

1. Validators run unbatched. gradio 6.31 hands an event's validator the single incoming request
   but marks it batched when the event is (`batch=True`), so it fails with "Batch size (11)
   exceeds the max_batch_size". Validators look at one request by design.

2. The queue starts work when work arrives instead of polling for it. gradio 6.31's loop looks for
   work every 1 ms, busy or idle: a few percent of a core on a 2-core Space, taken from the model's
   two threads while a batch runs, whose barriers make any core taken from one thread stall both. The
   loop here sleeps until a request joins or a job ends. It is a copy of that gradio's
   `Queue.start_processing` with its sleeps replaced, so it is used only where the installed
   method's source is the one copied (`_STOCK_LOOP_SHA256`); any other gradio polls every 20 ms.

3. The monitoring summary is recomputed every ANALYTICS_SUMMARY_EVERY events, not after every one.
   gradio rebuilds it after each event ends (`GRADIO_ANALYTICS_CACHE_FREQUENCY`, default 1): a
   pandas DataFrame of every event it keeps (up to 10,000), grouped and percentiled, on a worker
   thread while the next batch runs, at a cost that grows with the events kept (figures in
   docs/performance.md). The summary only feeds gradio's /monitoring page.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import time
import types

import gradio as gr

log = logging.getLogger("captioner.app")

# sha256 of gradio 6.31.0's `Queue.start_processing` source, the loop copied below.
_STOCK_LOOP_SHA256 = "d65be5a5cbed97d75e13233ab7d0dfc9f347c4ffd33bdcb47293d696f38aaa1f"
QUEUE_POLL_S = 0.02  # where the loop cannot be replaced: every 20 ms delays a start by 10 ms on average
WAKE_CHECK_S = 0.5  # woken by work, the loop still looks this often, so a missed wake-up costs 0.5 s, not a hang
PROGRESS_POLL_S = 1.0  # gradio's progress loop; no handler here reports progress
ANALYTICS_SUMMARY_EVERY = 1000  # events between two rebuilds of gradio's monitoring summary


def adapt_gradio(demo: gr.Blocks) -> dict[str, str]:
    """Apply the three changes above to `demo` (after `demo.queue()`, before launch), each only
    where the installed gradio has what it changes. Logs and returns the path each one took."""
    paths = {
        "validators": validate_one_request_at_a_time(),
        "queue loop": start_work_when_it_arrives(demo),
        "monitoring summary": summarise_analytics_rarely(demo),
    }
    for change, path in paths.items():
        log.info("gradio %s, %s: %s", gr.__version__, change, path)
    return paths


def can_unbatch_validators() -> bool:
    from gradio import queueing

    return callable(getattr(queueing, "create_validator_fn", None))


def validate_one_request_at_a_time() -> str:
    """Make gradio build every validator unbatched (change 1 above)."""
    from gradio import queueing

    if not can_unbatch_validators():
        return "stock (no create_validator_fn: the app checks requests in its handlers instead)"
    stock = getattr(queueing.create_validator_fn, "__wrapped__", queueing.create_validator_fn)

    def create_validator_fn(fn):
        validator = stock(fn)
        validator.batch = False
        return validator

    create_validator_fn.__wrapped__ = stock
    queueing.create_validator_fn = create_validator_fn
    return "unbatched"


def summarise_analytics_rarely(demo: gr.Blocks) -> str:
    """Change 3 above, on `demo`'s queue, unless GRADIO_ANALYTICS_CACHE_FREQUENCY is set."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not hasattr(queue, "ANAYLTICS_CACHE_FREQUENCY"):  # gradio's spelling
        return "stock (this gradio's queue has no summary frequency)"
    if os.environ.get("GRADIO_ANALYTICS_CACHE_FREQUENCY"):
        return "as GRADIO_ANALYTICS_CACHE_FREQUENCY sets it"
    queue.ANAYLTICS_CACHE_FREQUENCY = max(queue.ANAYLTICS_CACHE_FREQUENCY, ANALYTICS_SUMMARY_EVERY)
    return f"rebuilt every {queue.ANAYLTICS_CACHE_FREQUENCY} events"


def start_work_when_it_arrives(demo: gr.Blocks) -> str:
    """Change 2 above, on `demo`'s queue, before launch. Returns how the queue now finds work:
    "woken by work", "polled every 20 ms" (another gradio), or "stock" (no queue to change)."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not hasattr(queue, "sleep_when_free"):
        return "stock"
    if hasattr(queue, "progress_update_sleep_when_free"):
        queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, PROGRESS_POLL_S)
    if _stock_loop_hash(type(queue)) != _STOCK_LOOP_SHA256:
        queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_POLL_S)
        return "polled every 20 ms"  # another gradio's loop: not replaced
    _WorkSignal.install(queue)
    return "woken by work"


def _stock_loop_hash(queue_class: type) -> str | None:
    try:
        source = inspect.getsource(queue_class.start_processing)
    except (OSError, TypeError, AttributeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()


class _WorkSignal:
    """Wakes the queue's loop when a request joins (`push`) or a job ends (`process_events`):
    the only two things that can give a waiting loop something to start."""

    def __init__(self) -> None:
        self.event: asyncio.Event | None = None  # made in the server's event loop, on first wait

    @classmethod
    def install(cls, queue) -> None:
        signal = cls()
        stock_push, stock_process_events = queue.push, queue.process_events

        async def push(*args, **kwargs):
            try:
                return await stock_push(*args, **kwargs)
            finally:
                signal.wake()

        async def process_events(*args, **kwargs):
            try:
                return await stock_process_events(*args, **kwargs)
            finally:
                signal.wake()

        queue.push, queue.process_events = push, process_events
        queue.start_processing = types.MethodType(
            lambda self: _start_processing(self, signal), queue
        )

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()

    async def wait(self) -> None:
        if self.event is None:
            self.event = asyncio.Event()
        try:
            await asyncio.wait_for(self.event.wait(), WAKE_CHECK_S)
        except TimeoutError:
            pass


async def _start_processing(self, signal: _WorkSignal) -> None:
    """gradio 6.31.0's `Queue.start_processing`, `self` being the queue, with each
    `await asyncio.sleep(self.sleep_when_free)` replaced by `await signal.wait()`."""
    from gradio.utils import run_coro_in_background, set_task_name

    try:
        while not self.stopped:
            # Cleared before looking, so a wake-up that comes while we look is not lost.
            if signal.event is not None:
                signal.event.clear()
            if len(self) == 0:
                await signal.wait()
                continue

            if None not in self.active_jobs:
                await signal.wait()
                continue

            # Using mutex to avoid editing a list in use
            async with self.delete_lock:
                event_batch = self.get_events()

            if event_batch:
                events, batch, concurrency_id = event_batch
                self.active_jobs[self.active_jobs.index(None)] = events
                event_queue = self.event_queue_per_concurrency_id[concurrency_id]
                event_queue.current_concurrency += 1
                start_time = time.time()
                fn = events[0].fn
                event_queue.start_times_per_fn[fn].add(start_time)
                for event in events:
                    if (a := self.event_analytics.get(event._id)) is not None:
                        a["status"] = "processing"
                process_event_task = run_coro_in_background(
                    self.process_events, events, batch, start_time, fn
                )
                set_task_name(
                    process_event_task,
                    events[0].session_hash,
                    fn._id,
                    events[0]._id,
                    batch,
                )

                self._asyncio_tasks.add(process_event_task)
                process_event_task.add_done_callback(self._asyncio_tasks.discard)
                if self.live_updates:
                    self.broadcast_estimations(concurrency_id)
            else:
                await signal.wait()
    finally:
        self.stopped = True
        self._cancel_asyncio_tasks()
