"""Dynamic batching for every caller: requests from any thread meet in one `generate` call.

The page's uploads arrive in batches that gradio's queue forms; the link tools (API and MCP),
notebooks running threads, and anything else calling `Captioner.caption` at the same time arrive
one by one. Each caller's chunk waits here, and the model thread takes the oldest waiting chunk
together with every later one that shares its settings, up to `max_batch_size` images, as
Triton's and TorchServe's dynamic batching do. It never waits to fill a batch: what is waiting
when the model is free is the batch, so a lone request is answered as fast as before. A chunk
with a seeded sample runs alone (its randomness must not depend on batch-mates). Pieces of a large
set (`bulk`) wait while other requests are waiting, and never share their batches.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

from ..settings import CaptionSettings
from .model_thread import on_model_thread

log = logging.getLogger("captioner.engine.batching")


class _Chunk:
    __slots__ = ("images", "settings", "bulk", "future")

    def __init__(self, images: list, settings: CaptionSettings, bulk: bool = False) -> None:
        self.images = images
        self.settings = settings
        self.bulk = bulk
        self.future: Future = Future()


class DynamicBatcher:
    """`run(images, settings)` on the model thread for batches of waiting chunks."""

    def __init__(self, run: Callable[[list, CaptionSettings], list], max_batch_size: Callable[[], int],
                 runs_alone: Callable[[CaptionSettings], bool]) -> None:
        self._run = run
        self._max_batch_size = max_batch_size
        self._runs_alone = runs_alone
        self._waiting: list[_Chunk] = []
        self._lock = threading.Lock()

    def caption(self, images: Sequence, settings: CaptionSettings, bulk: bool = False) -> list:
        """Results for `images` (at most max_batch_size, one settings), maybe computed with others'.

        `bulk` is a piece of a larger set, which can wait: a request that is not bulk goes before
        it, and the two never share a batch, so a visitor's photo does not wait for a set's images
        in its own batch either."""
        chunk = _Chunk(list(images), settings, bulk)
        with self._lock:
            self._waiting.append(chunk)
        # The model thread runs jobs in order, and each job serves every chunk waiting when it
        # starts: once this call returns, this chunk has been served, alone or with others.
        on_model_thread(self._serve_waiting)
        return chunk.future.result()

    def waiting(self) -> int:
        """Chunks not yet taken by the model (for tests and monitoring)."""
        with self._lock:
            return len(self._waiting)

    def _serve_waiting(self) -> None:
        while batch := self._take():
            images = [image for chunk in batch for image in chunk.images]
            started = time.perf_counter()
            try:
                results = self._run(images, batch[0].settings)
            except BaseException as error:  # noqa: BLE001 - handed to each waiting caller, who re-raises it
                for chunk in batch:
                    chunk.future.set_exception(error)
                continue
            # One JSON object a generate call: readable in a Space's log, parsed by bench/speed.py.
            log.info(json.dumps({"batch": len(images), "requests": len(batch),
                                 "seconds": round(time.perf_counter() - started, 3)}))
            offset = 0
            for chunk in batch:
                chunk.future.set_result(results[offset : offset + len(chunk.images)])
                offset += len(chunk.images)

    def _take(self) -> list[_Chunk]:
        """The oldest waiting chunk (one that is not bulk, if any is waiting) and the later ones of
        its kind that share its settings and still fit."""
        with self._lock:
            if not self._waiting:
                return []
            first = next((c for c in self._waiting if not c.bulk), self._waiting[0])
            batch, size, left = [first], len(first.images), []
            for chunk in self._waiting:
                if chunk is first:
                    continue
                if (not self._runs_alone(first.settings) and chunk.settings == first.settings
                        and chunk.bulk == first.bulk and size + len(chunk.images) <= self._max_batch_size()):
                    batch.append(chunk)
                    size += len(chunk.images)
                else:
                    left.append(chunk)
            self._waiting = left
            return batch
