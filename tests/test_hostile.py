"""Hostile input through the launched app: each gets a clear message and the server keeps serving."""

import io
import math
import time

import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st
from PIL import Image

from captioner import CaptionSettings, InvalidImage, InvalidSettings, load_image
from captioner.app.ui import AppLimits
from captioner.images import CORRUPT
from captioner.settings import BOUNDS
from helpers import RunningApp, encode, photo, wait_until_waiting


def _exif_rotated():
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(photo(1, (60, 30)), "JPEG", exif=exif)


def _animated():
    frames = [photo(2), photo(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


REFUSED = {
    "empty.jpg": (b"", "the file is empty"),
    "text.jpg": (b"hello, I am plain text pretending to be a jpeg", "not a supported image"),
    "page.png": (b"<html><body><script>alert(1)</script></body></html>", "HTML"),
    "drawing.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "SVG"),
    "truncated.jpg": (encode(photo(4, (300, 300)), "JPEG")[:1500], "truncated or corrupt"),
    "bomb.png": (encode(Image.new("1", (20000, 20000))), "too large"),
}
CAPTIONED = {
    "huge.jpg": encode(Image.new("RGB", (7000, 5000), (40, 90, 160)), "JPEG", quality=60),
    "wide.png": encode(photo(5, (4000, 3))),
    "dot.png": encode(Image.new("RGB", (1, 1), (200, 10, 10))),
    "deep.png": encode(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))),
    "cmyk.jpg": encode(photo(6, mode="CMYK"), "JPEG"),
    "palette.png": encode(photo(7, mode="P")),
    "transparent.png": encode(photo(8, mode="RGBA")),
    "animated.gif": _animated(),
    "pages.tiff": encode(photo(9), "TIFF", save_all=True, append_images=[photo(10)]),
    "rotated.jpg": _exif_rotated(),
}


@pytest.fixture(scope="module")
def client(running_app):
    return running_app.client()


@pytest.fixture(scope="module")
def good_photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.png"
    photo(42).save(path)
    return path


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_inputs_get_a_message_and_the_server_goes_on(client, captioner, tmp_path, good_photo, name):
    data, message = REFUSED[name]
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(write(tmp_path, name, data))), api_name="/caption")
    assert client.predict(handle_file(str(good_photo)), api_name="/caption") == captioner.caption([good_photo])[0][0].text


@pytest.mark.parametrize("name", sorted(CAPTIONED))
def test_odd_but_valid_images_are_captioned(client, captioner, tmp_path, name):
    path = write(tmp_path, name, CAPTIONED[name])
    assert client.predict(handle_file(str(path)), api_name="/caption") == captioner.caption([path])[0][0].text


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("num_beams", 1000, "num_beams must be an integer from 1 to 8"),
        ("max_length", 100000, "max_length must be an integer from 2 to 64"),
        ("num_captions", 1000, "num_captions must be an integer from 1 to 8"),
        ("temperature", -1, "temperature must be a number from 0.05 to 5"),
        ("top_p", "lots", "top_p must be a number"),
        ("strategy", "telepathy", "strategy must be one of"),
    ],
)
def test_bad_settings_are_refused_by_name(client, tmp_path, good_photo, setting, value, message):
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(good_photo)), **{setting: value}, api_name="/caption")


def test_nan_and_infinity_in_raw_json_are_refused(running_app, good_photo):
    service = running_app.service
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(InvalidSettings, match="temperature"):
            service._check_request(str(good_photo), ["Sampling", 16, 4, value, 50, 1.0, 1.0, 0, 1, -1])


def test_files_outside_the_app_are_not_served(running_app):
    for path in ["/etc/passwd", "../../../../etc/passwd", "/proc/self/environ"]:
        response = httpx.get(f"{running_app.url}gradio_api/file={path}", timeout=10)
        assert response.status_code in (403, 404), (path, response.status_code)


def test_rest_route_cannot_bypass_the_queue(running_app, good_photo):
    # A payload the queue would accept (an uploaded file and every setting), so only the closed
    # route can refuse it.
    upload = httpx.post(f"{running_app.url}gradio_api/upload", files={"files": good_photo.open("rb")}, timeout=10)
    path = upload.json()[0]
    data = [{"path": path, "meta": {"_type": "gradio.FileData"}}, "Beam search", 16, 4, 1.0, 50, 1.0, 1.0, 0, 1, -1]
    response = httpx.post(f"{running_app.url}gradio_api/run/caption", json={"data": data}, timeout=30)
    assert response.status_code in (403, 404), (response.status_code, response.text[:200])
    queued = running_app.client().predict(handle_file(str(good_photo)), api_name="/caption")
    assert queued  # the same request through the queue is answered


def test_full_queue_answers_busy_at_once(captioner, good_photo):
    small = RunningApp(captioner, AppLimits(queue_size=2, max_batch_size=1))
    try:
        clients = [small.client() for _ in range(6)]
        with captioner.paused():  # the model is busy: requests pile up
            sent = {}
            for c in clients:
                sent[c.submit(handle_file(str(good_photo)), api_name="/caption")] = time.monotonic()
                time.sleep(0.3)
            # How long each request waited for an answer, while the model was still held.
            answered_after = {}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(answered_after) < len(sent) - 3:
                for job, at in sent.items():
                    if job not in answered_after and job.done():
                        answered_after[job] = time.monotonic() - at
                time.sleep(0.02)
            busy = [job for job in answered_after if job.exception() is not None]
            assert busy and all("queue is full" in str(job.exception()).lower() for job in busy)
            assert max(answered_after[job] for job in busy) < 5  # at once, not when the model frees up
            jobs = list(sent)
        finished = [job.result(timeout=60) for job in jobs if job not in busy]
        assert finished and all(finished)
    finally:
        small.close()


def test_a_bad_request_never_fails_its_batch_mates(running_app, captioner, tmp_path):
    goods = [tmp_path / f"good{i}.png" for i in range(4)]
    for i, path in enumerate(goods):
        photo(60 + i).save(path)
    expected = [c[0].text for c in captioner.caption(goods)]
    bads = [write(tmp_path, name, REFUSED[name][0]) for name in ("text.jpg", "bomb.png", "truncated.jpg")]
    running_app.service.batch_sizes.clear()
    clients = [running_app.client() for _ in range(len(goods) + len(bads))]
    order = [goods[0], bads[0], goods[1], bads[1], goods[2], bads[2], goods[3]]
    # Hold the model while they arrive, so good and bad requests wait in the queue together.
    with captioner.paused():
        jobs = [c.submit(handle_file(str(p)), api_name="/caption") for c, p in zip(clients, order)]
        wait_until_waiting([job for job, path in zip(jobs, order) if path in goods])
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result(timeout=120))
        except Exception as error:  # noqa: BLE001 - the bad ones must fail, each with its own message
            outcomes.append(error)
    assert [outcomes[i] for i in (0, 2, 4, 6)] == expected
    assert [type(outcomes[i]).__name__ for i in (1, 3, 5)] == ["ValidationError"] * 3  # refused before the queue
    assert "not a supported image" in str(outcomes[1]) and "too large" in str(outcomes[3])
    sizes = running_app.service.batch_sizes
    assert max(sizes) > 1 and sum(size * batches for size, batches in sizes.items()) == len(goods)


def test_an_item_that_fails_inside_a_batch_fails_alone(running_app, captioner, tmp_path):
    good = tmp_path / "good.png"
    photo(70).save(good)
    vanished = tmp_path / "purged-after-validation.png"  # validated, then deleted before its batch ran
    defaults = ["Beam search", 16, 4, 1.0, 50, 1.0, 1.0, 0, 1, -1]
    batch = [[str(good), str(vanished), str(good)], *([v] * 3 for v in defaults)]
    (outputs,) = running_app.service.caption(*batch)
    expected = captioner.caption([good])[0][0].text
    assert outputs[0] == outputs[2] == expected
    assert outputs[1].startswith("Could not caption this image:") and "not found" in outputs[1].lower()


def test_pixel_limit_is_configurable(captioner, tmp_path):
    strict = RunningApp(captioner, AppLimits(max_megapixels=1))
    try:
        two_megapixels = write(tmp_path, "big.png", encode(Image.new("RGB", (2000, 1000), (9, 99, 199))))
        with pytest.raises(Exception, match="at most 1 megapixels"):
            strict.client().predict(handle_file(str(two_megapixels)), api_name="/caption")
    finally:
        strict.close()


# --- properties of the core, over settings and image shapes/modes ---

settings_values = st.fixed_dictionaries({
    "strategy": st.sampled_from(["beam", "greedy", "sample"]),
    "max_length": st.integers(-5, 100),
    "num_beams": st.integers(-2, 12),
    "temperature": st.floats(allow_nan=True, allow_infinity=True),
    "top_k": st.integers(-10, 2000),
    "top_p": st.floats(-1, 2),
    "num_captions": st.integers(0, 10),
})


def out_of_range(values: dict) -> set[str]:
    """An oracle written from the documented rules, not from CaptionSettings: the fields at fault."""
    wrong = set()
    for name, value in values.items():
        if name == "strategy":
            continue
        low, high = BOUNDS[name]
        integral = name not in ("temperature", "top_p")
        if isinstance(value, bool) or (integral and not isinstance(value, int)) or not math.isfinite(value) \
                or not low <= value <= high:
            wrong.add(name)
    if not wrong and values["strategy"] == "beam" and values["num_captions"] > values["num_beams"]:
        wrong.add("num_captions")
    if not wrong and values["strategy"] == "greedy" and values["num_captions"] != 1:
        wrong.add("num_captions")
    return wrong


@given(settings_values)
def test_settings_are_refused_exactly_when_a_rule_is_broken_naming_the_field(values):
    wrong = out_of_range(values)
    try:
        settings = CaptionSettings(**values)
    except InvalidSettings as error:
        assert wrong, f"refused settings that keep every rule: {values}"
        assert error.field in wrong and error.field in str(error)
        return
    assert not wrong, f"accepted {sorted(wrong)} out of range: {values}"
    kwargs = settings.generate_kwargs()
    assert 2 <= kwargs["max_length"] <= 64 and 1 <= kwargs["num_beams"] <= 8
    assert 1 <= kwargs["num_return_sequences"] <= 8


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 300), height=st.integers(1, 300),
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "I", "F", "1", "I;16"]),
    fmt=st.sampled_from(["PNG", "TIFF", "WEBP", "BMP", "GIF", "JPEG"]),
)
def test_any_image_decodes_to_rgb_or_is_refused_cleanly(width, height, mode, fmt):
    image = Image.new(mode, (width, height))
    try:
        data = encode(image, fmt)
    except (OSError, ValueError, KeyError):
        return  # Pillow cannot write this mode in this format: nothing to test
    try:
        out = load_image(data)
    except InvalidImage as error:
        # Refused only what Pillow itself cannot read (a blank palette BMP, say), and said so plainly.
        assert str(error) == CORRUPT
        with pytest.raises(OSError):
            Image.open(io.BytesIO(data)).load()
        return
    assert out.mode == "RGB" and out.size in ((width, height), (height, width))


@hyp_settings(max_examples=30, deadline=None)
@given(
    width=st.integers(1, 200), height=st.integers(1, 200),
    mode=st.sampled_from(["RGB", "L", "RGBA"]), fmt=st.sampled_from(["PNG", "JPEG"]),
)
def test_ordinary_images_always_decode(width, height, mode, fmt):
    if fmt == "JPEG" and mode == "RGBA":
        mode = "RGB"  # JPEG has no alpha
    image = Image.new(mode, (width, height), color=(30, 120, 200, 255)[: len(mode)] if mode != "L" else 90)
    out = load_image(encode(image, fmt))  # must not raise: these are the photos people send
    assert out.mode == "RGB" and out.size == (width, height)


@given(
    strategy=st.sampled_from(["beam", "greedy", "sample"]),
    max_length=st.integers(2, 64), num_beams=st.integers(1, 8),
    temperature=st.floats(0.05, 5.0), top_k=st.integers(0, 1000), top_p=st.floats(0.05, 1.0),
    repetition_penalty=st.floats(1.0, 3.0), no_repeat_ngram_size=st.integers(0, 6), seed=st.none() | st.integers(0, 2**32 - 1),
)
def test_every_setting_inside_its_range_is_accepted(strategy, num_beams, **values):
    num_captions = 1 if strategy == "greedy" else min(num_beams, 3) if strategy == "beam" else 3
    settings = CaptionSettings(strategy=strategy, num_beams=num_beams, num_captions=num_captions, **values)
    assert settings.generate_kwargs()["num_return_sequences"] == num_captions
