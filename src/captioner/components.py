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

RANDOM_SEED = -1  # the seed box's "no seed": a Number needs a value to give the API a default


class CaptionImage(gr.Image):
    """gr.Image that hands the handler the uploaded file untouched.

    Stock gr.Image opens every upload with PIL before our code runs (and decodes data: URLs with
    no size limit), so a hostile file fails there with an unhelpful message. Here decoding is left
    to `load_image`, which knows the limits; remote URLs are refused rather than fetched.
    """

    is_template = True  # render with the stock Image frontend
    max_data_url_bytes = 20 * 1024 * 1024  # build_demo sets each instance's own from its AppLimits

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
