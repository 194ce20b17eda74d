"""Gradio components that hand the handlers raw values, so our own checks give the messages.

Stock components preprocess before any of our code runs: gr.Image opens every upload with PIL (and
decodes data: URLs with no size limit), gr.Slider rejects an out-of-range value, and an API
client then sees only "400 Bad Request". These pass the value on: `load_image` and
`CaptionSettings` check it and say what is wrong.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

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
        # The hook gradio caches every file of a request through (gradio_changes.py checks that it
        # still does). A link is passed on as it is: the handler fetches it with the safe fetcher.
        if is_url(url_or_file_path):
            return url_or_file_path
        return await super().async_move_resource_to_block_cache(url_or_file_path)


class CaptionFiles(gr.File):
    """gr.File whose links are fetched by the safe fetcher (fetch.py), never by gradio itself."""

    is_template = True  # render with the stock File frontend
    fetch_policy = FetchPolicy()  # build_demo sets each instance's own from its AppLimits

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        if is_url(url_or_file_path):
            return await asyncio.to_thread(save_url, url_or_file_path, self.fetch_policy, self.GRADIO_CACHE, True)
        return await super().async_move_resource_to_block_cache(url_or_file_path)


def save_url(url: str, policy: FetchPolicy, cache_dir: str, keep_name: bool = False) -> str:
    """Fetch an image link into the app's cache (purged with the uploads); refusals are gr.Error.
    With `keep_name`, the file is named as the link names it (tables list it by that name)."""
    try:
        data = fetch_bytes(url, policy)
    except CaptionError as error:
        raise gr.Error(f"Could not use this image link: {error}", print_exception=False) from None
    return save_bytes(data, cache_dir, "urls", _name_in(url) if keep_name else None)


def _name_in(url: str) -> str:
    """The link's last path segment as a harmless file name."""
    name = re.sub(r"[^\w.-]", "_", unquote(urlsplit(url).path.rsplit("/", 1)[-1]))[-100:]
    return name if name.strip("._") else "image"


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


def save_bytes(data: bytes, cache_dir: str, folder: str, name: str | None = None) -> str:
    directory = Path(cache_dir) / folder / (uuid.uuid4().hex if name else "")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"{uuid.uuid4().hex}.bin")
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
