"""Gradio components that hand the handlers raw values, so our own checks give the messages.

Stock components preprocess before any of our code runs: gr.Image opens every upload with PIL (and
decodes data: URLs with no size limit), gr.Slider rejects an out-of-range value, and an API
client then sees only "400 Bad Request". These pass the value on: `load_image` and
`CaptionSettings` check it and say what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from pathlib import Path

import gradio as gr

from ..errors import CaptionError
from ..fetch import FetchPolicy, fetch_bytes, is_url


class CaptionImage(gr.Image):
    """gr.Image that hands the handler the uploaded file untouched.

    Stock gr.Image opens every upload with PIL before our code runs (and decodes data: URLs with
    no size limit), so a hostile file fails there with an unhelpful message. Here decoding is left
    to `load_image`, which knows the limits. Image links are fetched by the safe fetcher
    (fetch.py) when the request is validated, before it is queued.
    """

    is_template = True  # render with the stock Image frontend
    # build_demo sets each instance's own from its AppLimits.
    max_data_url_bytes = 20 * 1024 * 1024
    fetch_policy = FetchPolicy()

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return _save_data_url(payload.url, self.max_data_url_bytes, self.GRADIO_CACHE)
        return payload.path

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        # A link is passed on as it is: the validator fetches it with the safe fetcher before the
        # request joins the queue, where a refusal reaches the client with its message.
        if is_url(url_or_file_path):
            return url_or_file_path
        return await super().async_move_resource_to_block_cache(url_or_file_path)


def save_url(url: str, policy: FetchPolicy, cache_dir: str) -> str:
    """Fetch an image link into the app's cache (purged with the uploads); refusals are gr.Error."""
    try:
        data = fetch_bytes(url, policy)
    except CaptionError as error:
        raise gr.Error(f"Could not use this image link: {error}", print_exception=False) from None
    return save_bytes(data, cache_dir, "urls")


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
    return save_bytes(data, cache_dir, "data-urls")


def save_bytes(data: bytes, cache_dir: str, folder: str) -> str:
    directory = Path(cache_dir) / folder
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.bin"
    path.write_bytes(data)
    return str(path)


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
