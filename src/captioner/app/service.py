"""The handlers behind the page, the API and MCP: widget values in, captions or gr.Error out.

The setting names come from settings.py (SETTING_NAMES); the handlers' signatures are built from
them, so the API's parameters are named after the settings without writing them out.
"""

from __future__ import annotations

import collections
import inspect
import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import gradio as gr

from ..engine.inference import Caption, Captioner
from ..errors import CaptionError, InvalidSettings, RequestTooLarge
from ..exports import write_downloads
from ..fetch import fetch_bytes, is_url
from ..images import load_image
from ..quality import describe, same_caption_counts, set_flags
from ..settings import SETTING_NAMES, CaptionSettings
from .components import CaptionImage, save_bytes
from .gradio_changes import not_an_mcp_tool

log = logging.getLogger("captioner.app")
STRATEGY_LABELS = {"Beam search": "beam", "Greedy": "greedy", "Sampling": "sample"}


@dataclass(frozen=True)
class AppLimits:
    """Everything a single visitor can ask of the server; all configurable from app.py."""

    max_batch_size: int = 8  # images per generate() call from the queue
    queue_size: int = 64  # waiting requests; beyond this a request is answered "busy" at once
    max_images_per_request: int = 32  # the many-images tab
    max_file_mb: int = 20  # uploads, and data: URLs sent through the API
    max_megapixels: int = 50  # decoded size; above it an image is refused as a decompression bomb
    decode_workers: int = 2  # images decoded at once while validating (memory bound)
    allow_private_urls: bool = False  # image links to loopback/private addresses (intranets, tests)

    def fetch_policy(self):
        from ..fetch import FetchPolicy

        return FetchPolicy(max_bytes=self.max_file_mb * 1024 * 1024, allow_private=self.allow_private_urls)


def settings_from_widgets(*values: Any) -> CaptionSettings:
    """Widget values (in SETTING_NAMES order) -> CaptionSettings; sliders send floats."""
    mapping = dict(zip(SETTING_NAMES, values))
    mapping["strategy"] = STRATEGY_LABELS.get(mapping["strategy"], mapping["strategy"])
    return CaptionSettings.from_values(mapping)


def format_captions(captions: Sequence[Caption]) -> str:
    if len(captions) == 1:
        return captions[0].text
    return "\n".join(f"{i}. {c.text}   (score {c.score:.2f})" for i, c in enumerate(captions, 1))


class CaptionService:
    """The handlers behind the page and the API, holding the one Captioner."""

    def __init__(self, captioner: Captioner, limits: AppLimits) -> None:
        self.captioner = captioner
        self.limits = limits
        self.image_limits = captioner.image_limits.with_caps(limits.max_file_mb, limits.max_megapixels)
        self._decode_slots = threading.BoundedSemaphore(limits.decode_workers)
        self.image_input: CaptionImage | None = None  # set by build_demo: turns raw payloads into paths
        # batch size -> batches the queue formed (bounded, unlike a list, on a server that runs for weeks)
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._fetched: collections.OrderedDict[str, str] = collections.OrderedDict()  # link -> cached file

    def validate(self, image, *settings):
        """Runs per request before it joins the queue: a bad request never reaches a batch.

        Called with this one request's values (see gradio_changes.validate_one_request_at_a_time).
        """
        try:
            self._check_request(image, list(settings))
        except InvalidSettings as error:
            return [gr.validate(True, "")] + [
                gr.validate(name != error.field, str(error)) for name in SETTING_NAMES
            ]
        except CaptionError as error:
            # Shown on the page next to the photo; through the API it is the error message.
            return [gr.validate(False, str(error))] + [gr.validate(True, "")] * len(settings)
        return [gr.validate(True, "")] * (1 + len(settings))

    def _check_request(self, image, setting_values: list[Any]) -> None:
        settings_from_widgets(*setting_values)
        self._decode(image)

    def _image_path(self, payload) -> str | None:
        """The uploaded file's path from the image input's raw payload.

        The caption event runs with gradio's preprocessing off: gradio hands each input of each
        request to a worker thread for `preprocess`, 11 thread hops per request, and at a batch
        of 8 those hops left the model idle between batches. The settings pass
        through raw anyway; the image's preprocess runs here, in the handler's own thread.
        """
        if payload is None or isinstance(payload, str):  # a path: called from Python
            return payload
        if self.image_input is None:
            raise TypeError("CaptionService.image_input is not set")
        return self.image_input.preprocess(self.image_input.data_model.model_validate(payload))

    def caption(self, image, *settings_lists) -> list[list[str]]:
        """Caption an uploaded photo with the given settings (the page's Caption button): the caption,
        or several, best first, with their scores. Agents holding a link use caption_image."""
        # The queue's batched handler: each argument is a list with one value per queued request,
        # and it returns one list of captions (API parameters are named after the settings).
        self.batch_sizes[len(image)] += 1
        # Validation already refused bad requests; anything that still fails here (a file purged
        # meanwhile) fails only its own request, never its batch-mates.
        requests = list(zip(image, *settings_lists))
        results = self.caption_each(
            len(requests), lambda i: (self._decode(requests[i][0]), settings_from_widgets(*requests[i][1:]))
        )
        outputs = [
            f"Could not caption this image: {r}" if isinstance(r, CaptionError) else format_captions(r)
            for r in results
        ]
        if len(outputs) == 1 and isinstance(results[0], CaptionError):
            raise gr.Error(outputs[0], print_exception=False)
        return [outputs]

    def caption_each(self, count: int, prepare, bulk: bool = False) -> list[list[Caption] | CaptionError]:
        """Caption `count` items, `prepare(i)` giving item i's (image, settings); an item whose
        preparation fails gets its CaptionError in its place and the others are captioned together.
        `bulk`: a piece of a set, which lets other requests go first (batching.py)."""
        results: list[list[Caption] | CaptionError | None] = [None] * count
        ready: list[tuple[int, Any, CaptionSettings]] = []
        for index in range(count):
            try:
                ready.append((index, *prepare(index)))
            except CaptionError as error:
                results[index] = error
        if ready:
            # The Captioner logs each generate call (batching.py), with whatever else was waiting.
            captions = self.captioner.caption([r[1] for r in ready], [r[2] for r in ready], bulk=bulk)
            self.captioner.release_memory_when_idle()
            for (index, _, _), image_captions in zip(ready, captions):
                results[index] = image_captions
        return results  # type: ignore[return-value]

    def _decode(self, image):
        image = self._image_path(image)
        if image is None:
            raise CaptionError("Add a photo first: upload one, paste it or its link, or use the webcam.")
        if is_url(image):
            image = self.fetched(image)
        return self.decode_image(image)

    def fetched(self, url: str) -> str:
        """The link's image in the app's cache: fetched once by the validator, reused by the handler."""
        path = self._fetched.get(url)
        if path is None or not Path(path).exists():
            path = save_bytes(fetch_bytes(url, self.limits.fetch_policy()), self.image_input.GRADIO_CACHE, "urls")
            self._fetched[url] = path
            while len(self._fetched) > 256:
                self._fetched.popitem(last=False)
        self._fetched.move_to_end(url)
        return path

    def decode_image(self, source):
        """Decode under the app's limits, a few at a time (each decode holds a full image)."""
        with self._decode_slots:
            return load_image(source, self.image_limits)

    def caption_many(self, files: list[str] | None, *setting_values: Any):
        """Caption several uploaded photos (the many-images tab): a table of file name, caption and
        quality flags, with CSV and JSON-lines downloads. Agents holding links use caption_images.

        The set goes to the model half a batch at a time, and the table grows after each piece: a
        photo sent from the first tab meanwhile joins the model's queue between two of the set's
        pieces (it waits about one piece, not the whole set; ui.py runs sets one at a time)."""
        try:
            settings = settings_from_widgets(*setting_values)
            if not files:
                raise CaptionError("Add some images first.")
            if len(files) > self.limits.max_images_per_request:
                raise RequestTooLarge(
                    f"{len(files)} images at once; the limit is {self.limits.max_images_per_request}."
                )
        except CaptionError as error:
            raise gr.Error(str(error), print_exception=False) from None
        rows: list[dict[str, Any]] = []
        # Half a batch at a time: a photo sent meanwhile waits for what is left of the set's
        # current piece, and a piece half as long halves that wait, for a set a little slower
        # (docs/performance.md, "Fair sharing").
        step = max(1, self.limits.max_batch_size // 2)
        for start in range(0, len(files), step):
            chunk = files[start : start + step]
            results = self.caption_each(len(chunk), lambda i: (self._decode(chunk[i]), settings), bulk=True)
            for path, result in zip(chunk, results):
                if isinstance(result, CaptionError):
                    rows.append({"file": Path(path).name, "caption": "", "error": str(result)})
                else:
                    rows.append({"file": Path(path).name, "caption": result[0].text, "score": result[0].score})
            _flag(rows)
            if len(rows) < len(files):
                yield many_table(rows, len(files)), None, None
        yield many_table(rows, len(files)), *write_downloads(rows, Path(tempfile.mkdtemp(prefix="captions-")))


def _flag(rows: list[dict[str, Any]]) -> None:
    """The quality flags of the set so far (quality.py): the same names the CLI's rows carry."""
    flags = set_flags([r["caption"] for r in rows], [r.get("score") for r in rows], [r.get("error") for r in rows])
    for row, row_flags in zip(rows, flags):
        row["flags"] = row_flags


def many_table(rows: list[dict[str, Any]], total: int) -> list[list[str]]:
    """The many-images table: file, caption (or why there is none), flags in words; the images
    still waiting for the model are counted in a last row."""
    others = same_caption_counts([r["caption"] for r in rows], [r.get("error") for r in rows])
    table = [[r["file"], r["caption"] or f"(not captioned: {r['error']})",
              describe([f for f in r["flags"] if f != "error"], count)] for r, count in zip(rows, others)]
    if len(rows) < total:
        table.append([f"{total - len(rows)} more", "(waiting for the model)", ""])
    return table


# The API names each parameter after its function's signature: one per setting, in order.
for _name, _first in (("validate", "image"), ("caption", "image"), ("caption_many", "files")):
    getattr(CaptionService, _name).__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in (_first, *SETTING_NAMES)]
    )

# The page's batched handlers are API endpoints for gradio_client, but not tools an agent can use
# (their inputs are uploaded files and widget values): tools.py makes those.
for _handler in (CaptionService.caption, CaptionService.caption_many):
    not_an_mcp_tool(_handler)
