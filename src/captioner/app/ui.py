"""The Gradio app's layout: `build_demo(captioner)` wires the widgets to CaptionService's handlers.

app.py, notebooks and tests call it with the Captioner they loaded. Every model call goes through
one queue (concurrency id "model", one at a time) so the page, the API and the examples share the
model and its batches; sets of images (concurrency id "sets", one at a time) reach the model a batch at
a time between them. The handlers are in service.py, the components in components.py, and the
changes to gradio in gradio_changes.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ..engine.inference import Captioner
from ..images import IMAGE_SUFFIXES
from ..settings import BOUNDS, DEFAULT_SETTINGS, RANDOM_SEED, SETTING_NAMES, CaptionSettings, shown_default
from .accessibility import ANNOUNCE_CAPTION_JS
from .components import CaptionFiles, CaptionImage, SettingNumber, SettingRadio, SettingSlider, save_url
from .gradio_changes import adapt_gradio, can_unbatch_validators
from .review_folder import FolderReviews
from .review_service import ReviewService
from .review_tab import build_review_tab
from .service import STRATEGY_LABELS, AppLimits, CaptionService
from .tools import make_tools

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
MODEL_NOTE = """\
**About the model.** [`nlpconnect/vit-gpt2-image-captioning`](https://huggingface.co/nlpconnect/vit-gpt2-image-captioning)
(2021) pairs a ViT image encoder with a GPT-2 decoder and was trained on COCO 2017 captions. It
describes everyday scenes in one short sentence; it often repeats words, guesses when unsure, knows
nothing after 2017, and carries COCO's biases (for example in how it names people's gender and
activities). Treat its captions as drafts, especially as alt text.
"""


# What each example shows (examples/README.md): the example buttons' names for screen readers.
EXAMPLE_LABELS = {
    "astronaut": "Astronaut Eileen Collins", "cat": "Chelsea the cat", "coffee": "A cup of coffee",
    "rocket": "Falcon 9 rocket launch",
}


def example_label(path: str) -> str:
    stem = Path(path).stem
    return EXAMPLE_LABELS.get(stem, stem.replace("-", " ").replace("_", " ").capitalize())


def captioned_gallery(files: list[str] | None, table: list[list[str]] | None) -> list[tuple[str, str]]:
    """The many-images tab's photos, each with its caption (or why it has none) as its alt text."""
    return [(path, row[1]) for path, row in zip(files or [], table or []) if len(row) > 1]


def example_photos() -> list[str]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def build_demo(captioner: Captioner, limits: AppLimits = AppLimits(),
               review_folder: tuple | None = None) -> gr.Blocks:
    """The whole interface around one loaded Captioner. With `review_folder` (a folder, its
    caption files' extension, and whether its metadata.jsonl holds the captions instead), the Review tab is that folder's, opened first (review_folder.py).

    >>> build_demo(Captioner.from_pretrained()).launch()  # doctest: +SKIP
    """
    service = CaptionService(captioner, limits)
    defaults = DEFAULT_SETTINGS
    with gr.Blocks(title="Image captioning", delete_cache=(1800, 3600)) as demo:
        demo.caption_service = service  # reachable by tests and the benchmark
        gr.Markdown("# Image captioning\nUpload a photo and get a one-sentence description.")
        if review_folder:
            reviews = FolderReviews(service, *review_folder)
            review_token = gr.State(reviews.token)  # one review: the folder's
        else:
            reviews = ReviewService(service)
            # The visitor's review (review_tab.py), sealed with a key that outlives a restart.
            review_token = gr.BrowserState(None, storage_key="captioner-review", secret=reviews.secret)
        with gr.Tabs(selected="review" if review_folder else "photo"):
            with gr.Tab("Caption a photo", id="photo"):
                with gr.Row():
                    with gr.Column():
                        image = CaptionImage(
                            type="filepath", sources=["upload", "clipboard", "webcam"], label="Photo",
                            elem_id="photo", height=360,
                        )
                        image.max_data_url_bytes = limits.max_file_mb * 1024 * 1024  # this demo's own limits
                        image.fetch_policy = limits.fetch_policy()
                        service.image_input = image
                        link = gr.Textbox(label="or paste an image link", placeholder="https://...", max_lines=1,
                                          elem_id="image-link", submit_btn="Load")
                        caption_button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                    with gr.Column():
                        caption_box = gr.Textbox(
                            label="Caption", lines=2, max_lines=10, buttons=["copy"], elem_id="caption",
                            interactive=False,
                        )
                        controls = _settings_controls(defaults)
                photos = example_photos()
                examples = gr.Examples(
                    examples=[[p] for p in photos], inputs=[image], label="Example photos",
                    example_labels=[example_label(p) for p in photos],  # each button's name, read aloud
                    examples_per_page=12,
                )
            with gr.Tab("Many images"):
                gr.Markdown(
                    f"Caption up to {limits.max_images_per_request} images at once (alt text for a "
                    "folder) with the settings above, and download the results."
                )
                files = CaptionFiles(
                    file_count="multiple", file_types=sorted(IMAGE_SUFFIXES), label="Images", elem_id="many-files"
                )
                files.fetch_policy = limits.fetch_policy()
                many_button = gr.Button("Caption all", variant="primary", elem_id="many-button")
                table = gr.Dataframe(
                    headers=["file", "caption", "needs a look"], label="Captions", interactive=False, elem_id="many-table",
                    type="array",
                )
                # The photos with their captions as their alternative text: the tool's own output, used as it is meant.
                gallery = gr.Gallery(label="Captioned images", elem_id="many-gallery", columns=6, height=320,
                                     object_fit="contain", interactive=False)
                with gr.Row():
                    csv_file = gr.File(label="CSV", elem_id="many-csv")
                    jsonl_file = gr.File(label="JSON lines", elem_id="many-jsonl")
            with gr.Tab("Review", id="review"):
                review_tab = gr.Column()  # filled below, once the settings' widgets exist
        gr.Markdown(MODEL_NOTE)

        setting_inputs = [controls[name] for name in SETTING_NAMES]
        with review_tab:
            build_review_tab(demo, review_token, reviews, setting_inputs, limits.max_file_mb, local=bool(review_folder))
        caption_event = dict(
            fn=service.caption,
            inputs=[image, *setting_inputs],
            outputs=[caption_box],
            batch=True,
            max_batch_size=limits.max_batch_size,
            concurrency_limit=1,
            concurrency_id="model",
            # Where gradio cannot run it unbatched, the handler's own per-request checks remain.
            validator=service.validate if can_unbatch_validators() else None,
            preprocess=False,  # the handler preprocesses the image itself (CaptionService._image_path)
        )
        caption_button.click(**caption_event, api_name="caption")
        examples.load_input_event.then(**caption_event, api_visibility="private")
        # Link handlers fetch (four at a time, fetch.py) and then wait for the model, where the
        # Captioner's dynamic batcher puts concurrent requests into one batch (batching.py). Two
        # batches' worth may be in flight, one running and one filling: with only one, the
        # requests settle into two half batches that take turns.
        links = dict(concurrency_limit=2 * limits.max_batch_size, concurrency_id="links")
        link.submit(
            lambda url: save_url(url, image.fetch_policy, image.GRADIO_CACHE) if url.strip() else None,
            inputs=[link], outputs=[image], api_visibility="private", **links,
        )
        for tool in make_tools(service, limits.fetch_policy()):
            # Tools for agents (MCP) and link-holding API clients.
            gr.api(tool, api_name=tool.__name__, **links)
        # Sets run one at a time, beside the page's photos rather than ahead of them: a set goes to
        # the model a batch at a time (service.caption_many), and a photo sent meanwhile joins the
        # Captioner's batcher between two of its batches instead of waiting for the whole set.
        many_button.click(
            service.caption_many,
            inputs=[files, *setting_inputs],
            outputs=[table, csv_file, jsonl_file],
            concurrency_limit=1,
            concurrency_id="sets",
            api_name="caption_many",
        ).then(captioned_gallery, inputs=[files, table], outputs=[gallery], queue=False, api_visibility="private")
        # Each caption is also read out when it arrives (a live region; accessibility.py).
        caption_box.change(None, inputs=[caption_box], outputs=None, js=ANNOUNCE_CAPTION_JS, queue=False,
                           api_visibility="private")
    demo.queue(max_size=limits.queue_size, default_concurrency_limit=1, api_open=False)
    demo.gradio_changes = adapt_gradio(demo)
    demo.queue_finds_work = demo.gradio_changes["queue loop"]
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
            value=RANDOM_SEED, precision=0, label=f"Seed ({RANDOM_SEED} = random)", visible=False, elem_id="seed",
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
        return [label_for[defaults.strategy], *(shown_default(n) for n in SETTING_NAMES[1:])]

    reset.click(reset_values, None, [controls[n] for n in SETTING_NAMES], queue=False, api_visibility="private")
    return controls
