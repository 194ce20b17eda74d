"""The Gradio app: a thin layer that turns widgets into CaptionSettings and errors into gr.Error.

`build_demo(captioner)` is the only entry point; app.py, notebooks and tests call it with the
Captioner they loaded. Every model call goes through one queue (concurrency id "model", one at a
time) so the UI, the API and the examples share the model and its batches.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import logging
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import gradio as gr

from .errors import CaptionError, InvalidSettings, RequestTooLarge
from .exports import write_downloads
from .gradio_queue import start_work_when_it_arrives, summarise_analytics_rarely, validate_one_request_at_a_time
from .images import IMAGE_SUFFIXES, load_image
from .inference import Caption, Captioner
from .memory import release_free_memory
from .model_thread import when_model_idle
from .settings import BOUNDS, DEFAULT_SETTINGS, CaptionSettings

log = logging.getLogger("captioner.app")
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
SETTING_NAMES = (
    "strategy", "max_length", "num_beams", "temperature", "top_k", "top_p",
    "repetition_penalty", "no_repeat_ngram_size", "num_captions", "seed",
)
STRATEGY_LABELS = {"Beam search": "beam", "Greedy": "greedy", "Sampling": "sample"}
MODEL_NOTE = """\
**About the model.** [`nlpconnect/vit-gpt2-image-captioning`](https://huggingface.co/nlpconnect/vit-gpt2-image-captioning)
(2021) pairs a ViT image encoder with a GPT-2 decoder and was trained on COCO 2017 captions. It
describes everyday scenes in one short sentence; it often repeats words, guesses when unsure, knows
nothing after 2017, and carries COCO's biases (for example in how it names people's gender and
activities). Treat its captions as drafts, especially as alt text.
"""


@dataclass(frozen=True)
class AppLimits:
    """Everything a single visitor can ask of the server; all configurable from app.py."""

    max_batch_size: int = 8  # images per generate() call from the queue
    queue_size: int = 64  # waiting requests; beyond this a request is answered "busy" at once
    max_images_per_request: int = 32  # the many-images tab
    max_file_mb: int = 20  # uploads, and data: URLs sent through the API
    max_megapixels: int = 50  # decoded size; above it an image is refused as a decompression bomb
    decode_workers: int = 2  # images decoded at once while validating (memory bound)


class CaptionImage(gr.Image):
    """gr.Image that hands the handler the uploaded file untouched.

    Stock gr.Image opens every upload with PIL before our code runs (and decodes data: URLs with
    no size limit), so a hostile file fails there with an unhelpful message. Here decoding is left
    to `load_image`, which knows the limits; remote URLs are refused rather than fetched.
    """

    is_template = True  # render with the stock Image frontend
    max_data_url_bytes = 20 * 1024 * 1024

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return _save_data_url(payload.url, self.max_data_url_bytes, self.GRADIO_CACHE)
        return payload.path

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        if isinstance(url_or_file_path, str) and url_or_file_path.startswith(("http://", "https://")):
            raise gr.Error("Image URLs are not fetched by this app: upload the image file instead.")
        return await super().async_move_resource_to_block_cache(url_or_file_path)


def _save_data_url(url: str, max_bytes: int, cache_dir: str) -> str:
    header, _, encoded = url.partition(",")
    if ";base64" not in header:
        raise gr.Error("A data: URL image must be base64-encoded.")
    if len(encoded) > max_bytes * 4 // 3 + 4:
        raise gr.Error(f"The image is larger than the {max_bytes // (1024 * 1024)} MB limit.")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise gr.Error("The data: URL is not valid base64.") from None
    directory = Path(cache_dir) / "data-urls"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.bin"
    path.write_bytes(data)
    return str(path)


RANDOM_SEED = -1  # the seed box's "no seed": a Number needs a value to give the API a default


class SettingSlider(gr.Slider):
    """Passes the raw value on: CaptionSettings checks it and names the setting and its range
    (stock preprocess fails first, and an API client then sees only "400 Bad Request")."""

    is_template = True

    def preprocess(self, payload):
        return payload


class SettingRadio(gr.Radio):
    __doc__ = SettingSlider.__doc__
    is_template = True

    def preprocess(self, payload):
        return payload


class SettingNumber(gr.Number):
    __doc__ = SettingSlider.__doc__
    is_template = True

    def preprocess(self, payload):
        return payload


def settings_from_widgets(*values: Any) -> CaptionSettings:
    """Widget values (in SETTING_NAMES order) -> CaptionSettings; sliders send floats."""
    mapping = dict(zip(SETTING_NAMES, values))
    mapping["strategy"] = STRATEGY_LABELS.get(mapping["strategy"], mapping["strategy"])
    if mapping["seed"] == RANDOM_SEED:
        mapping["seed"] = None
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
        self.image_limits = dataclasses.replace(
            captioner.image_limits,
            max_file_bytes=limits.max_file_mb * 1024 * 1024,
            max_pixels=limits.max_megapixels * 1_000_000,
        )
        self._decode_slots = threading.BoundedSemaphore(limits.decode_workers)
        self.image_input: CaptionImage | None = None  # set by build_demo: turns raw payloads into paths
        # batch size -> batches the queue formed (bounded, unlike a list, on a server that runs for weeks)
        self.batch_sizes: collections.Counter[int] = collections.Counter()

    def validate(self, image, strategy, max_length, num_beams, temperature, top_k, top_p,
                 repetition_penalty, no_repeat_ngram_size, num_captions, seed):
        """Runs per request before it joins the queue: a bad request never reaches a batch.

        Called with this one request's values (see gradio_queue.validate_one_request_at_a_time).
        """
        settings = (strategy, max_length, num_beams, temperature, top_k, top_p,
                    repetition_penalty, no_repeat_ngram_size, num_captions, seed)
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
        of 8 those hops took 120-145 ms between batches with the model idle. The settings pass
        through raw anyway; the image's preprocess runs here, in the handler's own thread.
        """
        if payload is None or isinstance(payload, str):  # a path: called from Python
            return payload
        if self.image_input is None:
            raise TypeError("CaptionService.image_input is not set")
        return self.image_input.preprocess(self.image_input.data_model.model_validate(payload))

    def caption(self, image, strategy, max_length, num_beams, temperature, top_k, top_p,
                repetition_penalty, no_repeat_ngram_size, num_captions, seed) -> list[list[str]]:
        """The queue's batched handler (API name /caption; parameters named after the settings).

        Each argument is a list with one value per queued request; returns one list of captions.
        """
        self.batch_sizes[len(image)] += 1
        settings_lists = (strategy, max_length, num_beams, temperature, top_k, top_p,
                          repetition_penalty, no_repeat_ngram_size, num_captions, seed)
        # Validation already refused bad requests; anything that still fails here (a file purged
        # meanwhile) fails only its own request, never its batch-mates.
        requests = list(zip(image, *settings_lists))
        results = self._caption_each(
            len(requests), lambda i: (self._decode(requests[i][0]), settings_from_widgets(*requests[i][1:]))
        )
        outputs = [
            f"Could not caption this image: {r}" if isinstance(r, CaptionError) else format_captions(r)
            for r in results
        ]
        if len(outputs) == 1 and isinstance(results[0], CaptionError):
            raise gr.Error(outputs[0], print_exception=False)
        return [outputs]

    def _caption_each(self, count: int, prepare) -> list[list[Caption] | CaptionError]:
        """Caption `count` items, `prepare(i)` giving item i's (image, settings); an item whose
        preparation fails gets its CaptionError in its place and the others are captioned together."""
        results: list[list[Caption] | CaptionError | None] = [None] * count
        ready: list[tuple[int, Any, CaptionSettings]] = []
        for index in range(count):
            try:
                ready.append((index, *prepare(index)))
            except CaptionError as error:
                results[index] = error
        if ready:
            started = time.perf_counter()
            captions = self.captioner.caption([r[1] for r in ready], [r[2] for r in ready])
            log.info("captioned a batch of %d in %.2f s", len(ready), time.perf_counter() - started)
            # Freed activations go back to the OS once the model is idle: RSS stays flat
            # (memory.py), and batches under load reuse the memory instead of faulting it in anew.
            when_model_idle(release_free_memory)
            for (index, _, _), image_captions in zip(ready, captions):
                results[index] = image_captions
        return results  # type: ignore[return-value]

    def _decode(self, image):
        image = self._image_path(image)
        if image is None:
            raise CaptionError("Add a photo first: upload one, paste it, or use the webcam.")
        with self._decode_slots:
            return load_image(image, self.image_limits)

    def caption_many(self, files: list[str] | None, *setting_values: Any):
        """The many-images tab: a table of file name + caption, and CSV / JSONL downloads."""
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
        results = self._caption_each(len(files), lambda i: (self._decode(files[i]), settings))
        rows: list[dict[str, str]] = []
        for path, result in zip(files, results):
            if isinstance(result, CaptionError):
                rows.append({"file": Path(path).name, "caption": "", "error": str(result)})
            else:
                rows.append({"file": Path(path).name, "caption": result[0].text})
        table = [[r["file"], r["caption"] or f"(not captioned: {r['error']})"] for r in rows]
        return table, *write_downloads(rows, Path(tempfile.mkdtemp(prefix="captions-")))


def example_photos() -> list[str]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def build_demo(captioner: Captioner, limits: AppLimits = AppLimits()) -> gr.Blocks:
    """The whole interface around one loaded Captioner.

    >>> build_demo(Captioner.from_pretrained()).launch()  # doctest: +SKIP
    """
    validate_one_request_at_a_time()
    service = CaptionService(captioner, limits)
    CaptionImage.max_data_url_bytes = limits.max_file_mb * 1024 * 1024
    defaults = DEFAULT_SETTINGS
    with gr.Blocks(title="Image captioning", delete_cache=(1800, 3600)) as demo:
        demo.caption_service = service  # reachable by tests and the benchmark
        gr.Markdown("# Image captioning\nUpload a photo and get a one-sentence description.")
        with gr.Tab("Caption a photo"):
            with gr.Row():
                with gr.Column():
                    image = CaptionImage(
                        type="filepath", sources=["upload", "clipboard", "webcam"], label="Photo",
                        elem_id="photo", height=360,
                    )
                    service.image_input = image
                    caption_button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                with gr.Column():
                    caption_box = gr.Textbox(
                        label="Caption", lines=2, max_lines=10, buttons=["copy"], elem_id="caption",
                        interactive=False,
                    )
                    controls = _settings_controls(defaults)
            examples = gr.Examples(
                examples=[[p] for p in example_photos()], inputs=[image], label="Example photos",
                examples_per_page=12,
            )
        with gr.Tab("Many images"):
            gr.Markdown(
                f"Caption up to {limits.max_images_per_request} images at once (alt text for a "
                "folder) with the settings above, and download the results."
            )
            files = gr.File(
                file_count="multiple", file_types=sorted(IMAGE_SUFFIXES), label="Images", elem_id="many-files"
            )
            many_button = gr.Button("Caption all", variant="primary", elem_id="many-button")
            table = gr.Dataframe(
                headers=["file", "caption"], label="Captions", interactive=False, elem_id="many-table"
            )
            with gr.Row():
                csv_file = gr.File(label="CSV", elem_id="many-csv")
                jsonl_file = gr.File(label="JSON lines", elem_id="many-jsonl")
        gr.Markdown(MODEL_NOTE)

        setting_inputs = [controls[name] for name in SETTING_NAMES]
        caption_event = dict(
            fn=service.caption,
            inputs=[image, *setting_inputs],
            outputs=[caption_box],
            batch=True,
            max_batch_size=limits.max_batch_size,
            concurrency_limit=1,
            concurrency_id="model",
            validator=service.validate,
            preprocess=False,  # the handler preprocesses the image itself (CaptionService._image_path)
        )
        caption_button.click(**caption_event, api_name="caption")
        examples.load_input_event.then(**caption_event, api_visibility="private")
        many_button.click(
            service.caption_many,
            inputs=[files, *setting_inputs],
            outputs=[table, csv_file, jsonl_file],
            concurrency_limit=1,
            concurrency_id="model",
            api_name="caption_many",
        )
    demo.queue(max_size=limits.queue_size, default_concurrency_limit=1, api_open=False)
    demo.queue_finds_work = start_work_when_it_arrives(demo)
    summarise_analytics_rarely(demo)
    return demo


def _settings_controls(defaults: CaptionSettings) -> dict[str, gr.components.Component]:
    def slider(name: str, label: str, step: float, info: str = "", **kwargs) -> gr.Slider:
        low, high = BOUNDS[name]
        return SettingSlider(
            minimum=low, maximum=high, step=step, value=getattr(defaults, name), label=label,
            info=info or None, elem_id=name.replace("_", "-"), **kwargs,
        )

    controls: dict[str, Any] = {}
    with gr.Accordion("Generation settings", open=False, elem_id="settings"):
        label_for = {v: k for k, v in STRATEGY_LABELS.items()}
        controls["strategy"] = SettingRadio(
            list(STRATEGY_LABELS), value=label_for[defaults.strategy], label="Strategy",
            elem_id="strategy",
        )
        controls["max_length"] = slider("max_length", "Max length (tokens)", 1)
        controls["num_captions"] = slider("num_captions", "Captions to return", 1)
        controls["num_beams"] = slider("num_beams", "Beams", 1)
        controls["temperature"] = slider("temperature", "Temperature", 0.05, visible=False)
        controls["top_k"] = slider("top_k", "Top-k (0 = off)", 1, visible=False)
        controls["top_p"] = slider("top_p", "Top-p", 0.05, visible=False)
        controls["seed"] = SettingNumber(
            value=RANDOM_SEED, precision=0, label="Seed (-1 = random)", visible=False, elem_id="seed",
        )
        controls["repetition_penalty"] = slider("repetition_penalty", "Repetition penalty (1 = off)", 0.05)
        controls["no_repeat_ngram_size"] = slider("no_repeat_ngram_size", "No-repeat n-gram size (0 = off)", 1)
        reset = gr.Button("Reset to defaults", size="sm", elem_id="reset")

    def show_for_strategy(label: str):
        strategy = STRATEGY_LABELS.get(label, "beam")
        sampling = strategy == "sample"
        return (
            gr.update(visible=strategy == "beam"),
            *(gr.update(visible=sampling) for _ in range(4)),
            # Greedy decoding has exactly one answer.
            gr.update(interactive=False, value=1) if strategy == "greedy" else gr.update(interactive=True),
        )

    dependent = [controls[n] for n in ("num_beams", "temperature", "top_k", "top_p", "seed", "num_captions")]
    controls["strategy"].change(show_for_strategy, controls["strategy"], dependent, queue=False, api_visibility="private")

    def reset_values():
        values = [getattr(defaults, n) for n in SETTING_NAMES[1:]]
        return [label_for[defaults.strategy], *values[:-1], RANDOM_SEED if defaults.seed is None else defaults.seed]

    reset.click(reset_values, None, [controls[n] for n in SETTING_NAMES], queue=False, api_visibility="private")
    return controls
