"""Every change this app makes to gradio's private parts, each gated and logged, in one place.

Each change is applied only where the installed gradio has what it changes, in the form it was
written against (CHECKED_GRADIO, or the source hash of the code it replaces); anywhere else it
takes a fallback, and `adapt_gradio` logs and returns the path each one took. tests/test_app.py
and tests/test_link_doors.py run every fallback.

1. Links reach the network only through fetch.py (its address policy and limits). gradio moves
   every file a request names into its cache, downloading links itself; the app's file inputs
   (components.py) override the hook it calls for that, `async_move_resource_to_block_cache`.
   Where gradio no longer calls that hook by name, gradio's own downloader is replaced by a
   refusal, and where neither can be done the app does not start.
2. Validators run unbatched. gradio 6.31 hands an event's validator the single incoming request
   but marks it batched when the event is (`batch=True`), so it fails with "Batch size (11)
   exceeds the max_batch_size". Fallback: no validator; the handlers check each request.
3. The queue starts work when work arrives instead of polling for it every 1 ms, a few percent
   of a core on a 2-core Space taken from the model's two threads (queue_loop.py). Only where the
   installed `Queue.start_processing` is the one copied; any other gradio polls every 20 ms.
4. The monitoring summary (a pandas DataFrame of up to 10,000 events, grouped and percentiled on
   a worker thread while the next batch runs) is rebuilt every ANALYTICS_SUMMARY_EVERY events,
   not after every one. It only feeds gradio's /monitoring page.
5. The page's batched handlers are API endpoints but not MCP tools: gradio lists as tools only
   functions whose `_mcp_type` is "tool". Fallback: they are listed too (harmless, but noisy).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import types

import gradio as gr

from ..errors import CaptionError
from .queue_loop import WorkSignal, start_processing

log = logging.getLogger("captioner.app")

CHECKED_GRADIO = ("6.31.",)  # the releases whose private parts below were read and tested
LINK_HOOK = "async_move_resource_to_block_cache"
# sha256 of gradio 6.31.0's `Queue.start_processing` source, the loop copied in queue_loop.py.
_STOCK_LOOP_SHA256 = "d65be5a5cbed97d75e13233ab7d0dfc9f347c4ffd33bdcb47293d696f38aaa1f"
QUEUE_POLL_S = 0.02  # where the loop cannot be replaced: every 20 ms delays a start by 10 ms on average
PROGRESS_POLL_S = 1.0  # gradio's progress loop; no handler here reports progress
ANALYTICS_SUMMARY_EVERY = 1000  # events between two rebuilds of gradio's monitoring summary


def adapt_gradio(demo: gr.Blocks) -> dict[str, str]:
    """Apply the changes above to `demo` (after `demo.queue()`, before launch). Logs and returns
    the path each one took."""
    paths = {
        "links": links_only_through_fetch(),
        "validators": validate_one_request_at_a_time(),
        "queue loop": start_work_when_it_arrives(demo),
        "monitoring summary": summarise_analytics_rarely(demo),
        "mcp tools": mcp_type_path(),
    }
    for change, path in paths.items():
        log.info("gradio %s, %s: %s", gr.__version__, change, path)
    return paths


def checked_gradio() -> bool:
    return gr.__version__.startswith(CHECKED_GRADIO)


def _source(function) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def gradio_calls_link_hook() -> bool:
    """Does the installed gradio still hand every file it caches to the component's hook?"""
    from gradio import blocks, processing_utils

    mover = getattr(processing_utils, "async_move_files_to_cache", None)
    return hasattr(blocks.Block, LINK_HOOK) and f"block.{LINK_HOOK}(" in _source(mover)


def links_only_through_fetch() -> str:
    """Change 1 above."""
    if checked_gradio() and gradio_calls_link_hook():
        return "handed to fetch.py by the file inputs' cache hook"
    from gradio import processing_utils

    if not callable(getattr(processing_utils, "async_ssrf_protected_get", None)):
        raise CaptionError(f"gradio {gr.__version__} fetches links in a way this app was not written for, so "
                           "it cannot keep them to its address policy: install the gradio in requirements.txt")

    async def refuse(url: str, *args, **kwargs):
        raise gr.Error("Image links are fetched by the app itself; this one could not be.", print_exception=False)

    processing_utils.async_ssrf_protected_get = refuse  # gradio's downloaders all fetch through this
    return f"refused ({LINK_HOOK} unchecked on this gradio, so its own downloader is off)"


def can_unbatch_validators() -> bool:
    from gradio import queueing

    return checked_gradio() and callable(getattr(queueing, "create_validator_fn", None))


def validate_one_request_at_a_time() -> str:
    """Change 2 above."""
    from gradio import queueing

    if not can_unbatch_validators():
        return "stock (no validators: the app checks requests in its handlers instead)"
    stock = getattr(queueing.create_validator_fn, "__wrapped__", queueing.create_validator_fn)

    def create_validator_fn(fn):
        validator = stock(fn)
        validator.batch = False
        return validator

    create_validator_fn.__wrapped__ = stock
    queueing.create_validator_fn = create_validator_fn
    return "unbatched"


def start_work_when_it_arrives(demo: gr.Blocks) -> str:
    """Change 3 above, on `demo`'s queue. Returns how the queue now finds work: "woken by work",
    "polled every 20 ms" (another gradio), or "stock" (no queue to change)."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not hasattr(queue, "sleep_when_free"):
        return "stock"
    if hasattr(queue, "progress_update_sleep_when_free"):
        queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, PROGRESS_POLL_S)
    if _stock_loop_hash(type(queue)) != _STOCK_LOOP_SHA256:
        queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_POLL_S)
        return "polled every 20 ms"  # another gradio's loop: not replaced
    signal = WorkSignal.install(queue)
    queue.start_processing = types.MethodType(lambda self: start_processing(self, signal), queue)
    return "woken by work"


def _stock_loop_hash(queue_class: type) -> str | None:
    source = _source(getattr(queue_class, "start_processing", None))
    return hashlib.sha256(source.encode()).hexdigest() if source else None


def summarise_analytics_rarely(demo: gr.Blocks) -> str:
    """Change 4 above, on `demo`'s queue, unless GRADIO_ANALYTICS_CACHE_FREQUENCY is set."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not hasattr(queue, "ANAYLTICS_CACHE_FREQUENCY"):  # gradio's spelling
        return "stock (this gradio's queue has no summary frequency)"
    if os.environ.get("GRADIO_ANALYTICS_CACHE_FREQUENCY"):
        return "as GRADIO_ANALYTICS_CACHE_FREQUENCY sets it"
    queue.ANAYLTICS_CACHE_FREQUENCY = max(queue.ANAYLTICS_CACHE_FREQUENCY, ANALYTICS_SUMMARY_EVERY)
    return f"rebuilt every {queue.ANAYLTICS_CACHE_FREQUENCY} events"


def mcp_type_path() -> str:
    from gradio import mcp

    return "page handlers hidden" if "_mcp_type" in _source(mcp) else "page handlers listed as tools too"


def not_an_mcp_tool(function) -> None:
    """Change 5 above, for one handler."""
    function._mcp_type = "page handler"
