"""The queue loop that gradio_changes.py installs where the installed gradio's loop is the one it
was copied from (`gradio_changes._STOCK_LOOP_SHA256`): gradio 6.31.0's `Queue.start_processing`,
woken by work instead of polling for it."""

from __future__ import annotations

import asyncio
import time

WAKE_CHECK_S = 0.5  # woken by work, the loop still looks this often, so a missed wake-up costs 0.5 s, not a hang


class WorkSignal:
    """Wakes the queue's loop when a request joins (`push`) or a job ends (`process_events`):
    the only two things that can give a waiting loop something to start."""

    def __init__(self) -> None:
        self.event: asyncio.Event | None = None  # made in the server's event loop, on first wait

    @classmethod
    def install(cls, queue) -> WorkSignal:
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
        return signal

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


async def start_processing(self, signal: WorkSignal) -> None:
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
