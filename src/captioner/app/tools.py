"""The caption tools for agents (MCP) and for API clients that hold image links, not files.

gradio turns every API endpoint into an MCP tool named after its function, described by its
docstring (the first lines, then `Args:`) and typed by its annotations. These two functions are
built here from CaptionSettings (names, ranges, defaults), so the tools' parameters cannot drift
from the settings, and each is documented for an agent that has never seen the page.
"""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import gradio as gr

from ..engine.inference import Caption
from ..errors import CaptionError
from ..fetch import FetchPolicy, fetch_bytes
from ..settings import BOUNDS, SETTING_HELP, SETTING_NAMES, STRATEGIES, CaptionSettings, shown_default
from .service import CaptionService, format_captions

ABOUT = ("ViT-GPT2 (nlpconnect/vit-gpt2-image-captioning) writes one short English sentence about "
         "everyday scenes; treat it as a draft (it can guess and carries COCO's biases).")


def _setting_parameters() -> list[inspect.Parameter]:
    parameters = []
    for name in SETTING_NAMES:
        default = shown_default(name)
        kind: Any = {"strategy": Literal[STRATEGIES]}.get(name)  # type: ignore[valid-type]
        if kind is None:
            kind = float if isinstance(default, float) else int
        parameters.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                            annotation=kind))
    return parameters


def _settings_doc() -> str:
    lines = []
    for parameter in _setting_parameters():
        name = parameter.name
        bounds = f"{BOUNDS[name][0]:g} to {BOUNDS[name][1]:g}, " if name in BOUNDS and name != "seed" else ""
        lines.append(f"    {name}: {SETTING_HELP[name]}; {bounds}default {parameter.default!r}.")
    return "\n".join(lines)


def _typed(function, first: inspect.Parameter, returns, summary: str, first_doc: str, returns_doc: str):
    """Give `function(first, *settings)` the signature, annotations and docstring gradio reads
    (gradio passes the settings positionally, in the order of CaptionSettings' fields)."""
    parameters = [first, *_setting_parameters()]
    function.__signature__ = inspect.Signature(parameters, return_annotation=returns)
    function.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    function.__doc__ = (f"{summary}\n\n{ABOUT}\n\nArgs:\n    {first.name}: {first_doc}\n{_settings_doc()}\n\n"
                        f"Returns:\n    {returns_doc}")
    return function


def _fetched_or_error(fetch, url: str):
    try:
        return fetch(url)
    except CaptionError as error:
        return error


def _unless_error(value):
    if isinstance(value, CaptionError):
        raise value
    return value


def make_tools(service: CaptionService, policy: FetchPolicy):
    """caption_image and caption_images, bound to the app's Captioner and its link policy."""

    def settings_of(positional: tuple) -> CaptionSettings:
        values = dict(zip(SETTING_NAMES, positional))
        try:
            return CaptionSettings.from_values(values)
        except CaptionError as error:
            raise gr.Error(str(error), print_exception=False) from None

    def fetch(url: str):
        return service.decode_image(fetch_bytes(url, policy))

    def caption_image(image_url, *values):
        settings = settings_of(values)
        try:
            captions: list[Caption] = service.captioner.caption([fetch(image_url)], settings)[0]
        except CaptionError as error:
            raise gr.Error(f"Could not caption {image_url}: {error}", print_exception=False) from None
        return format_captions(captions)

    def caption_images(image_urls, *values):
        settings = settings_of(values)
        if len(image_urls) > service.limits.max_images_per_request:
            raise gr.Error(f"{len(image_urls)} links at once; the limit is {service.limits.max_images_per_request}")
        # Fetched a few at once (fetch.py caps them); the images then meet in one batch.
        with ThreadPoolExecutor(4, thread_name_prefix="captioner-fetch") as pool:
            fetched = list(pool.map(_fetched_or_error, [fetch] * len(image_urls), image_urls))
        results = service.caption_each(len(image_urls), lambda i: (_unless_error(fetched[i]), settings))
        return [f"Could not caption this image: {r}" if isinstance(r, CaptionError) else format_captions(r)
                for r in results]

    url = inspect.Parameter("image_url", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)
    urls = inspect.Parameter("image_urls", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=list[str])
    link = "an http(s) link to a JPEG, PNG, WebP, GIF, BMP or TIFF image"
    result = ("the caption; with num_captions above 1, one numbered caption a line, best first, with its "
              "score (mean log-probability per token)")
    return (
        _typed(caption_image, url, str, "Describe the image at a link in one English sentence.", link, result),
        _typed(caption_images, urls, list[str], "Describe each image in a list of links, in one sentence each.",
               f"a list of links, each {link}", "one caption text per link, in order; a link that fails "
               "gets 'Could not caption this image: ' and the reason, and the others are still captioned"),
    )
