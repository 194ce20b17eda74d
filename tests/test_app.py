"""The launched app, called as a real client does (gradio_client over HTTP on 127.0.0.1)."""

import asyncio
import csv
import importlib
import time

import gradio as gr
import pytest
from gradio_client import handle_file

from captioner import CaptionSettings
from captioner.settings import SETTING_NAMES, shown_default
from captioner.app.ui import example_photos
from helpers import encode, import_app, photo, wait_until_waiting


@pytest.fixture(scope="module")
def client(running_app):
    return running_app.client()


@pytest.fixture
def photo_file(tmp_path):
    def make(seed, suffix=".png"):
        path = tmp_path / f"photo{seed}{suffix}"
        photo(seed).save(path)
        return path

    return make


def core_caption(captioner, path, settings=CaptionSettings()):
    return captioner.caption([path], settings)[0][0].text


def test_importing_app_exposes_demo_without_serving(running_app):
    app = importlib.import_module("app")
    assert isinstance(app.demo, gr.Blocks) and not app.demo.is_running


def test_the_running_queue_sleeps_until_work_arrives_instead_of_polling(running_app, client, photo_file,
                                                                         monkeypatch):
    from captioner.app import queue_loop

    queue = running_app.demo._queue  # the queue launch() serves with, not a copy
    assert running_app.demo.queue_finds_work == "woken by work"
    assert queue.progress_update_sleep_when_free >= 1.0
    waits = []
    stock_wait = queue_loop.WorkSignal.wait

    async def counted_wait(self):
        waits.append(time.monotonic())
        await stock_wait(self)

    monkeypatch.setattr(queue_loop.WorkSignal, "wait", counted_wait)
    deadline = time.monotonic() + 30
    while len(waits) < 4 and time.monotonic() < deadline:  # the idle loop is alive: it keeps looking
        time.sleep(0.1)
    assert len(waits) >= 4, "the idle loop stopped looking for work"
    gaps = [later - earlier for earlier, later in zip(waits, waits[1:4])]
    # Idle, it looks once per WAKE_CHECK_S, not every few ms as a polling loop does.
    assert min(gaps) >= 0.8 * queue_loop.WAKE_CHECK_S, gaps
    assert client.predict(handle_file(str(photo_file(2))), api_name="/caption")  # and work still starts


def test_a_request_to_an_idle_queue_starts_at_once_not_at_the_next_check(running_app, client, photo_file, monkeypatch):
    from captioner.app import queue_loop

    monkeypatch.setattr(queue_loop, "WAKE_CHECK_S", 30.0)  # only a wake-up can start it in time
    path = photo_file(3)
    client.predict(handle_file(str(path)), api_name="/caption")  # the loop now waits with the long timeout
    time.sleep(0.2)
    for _ in range(3):
        started = time.monotonic()
        assert client.predict(handle_file(str(path)), api_name="/caption")
        assert time.monotonic() - started < 10.0


def test_the_monitoring_summary_is_not_rebuilt_after_every_request(running_app, client, photo_file, monkeypatch):
    from captioner.app import gradio_changes

    queue = running_app.demo._queue
    assert queue.ANAYLTICS_CACHE_FREQUENCY == gradio_changes.ANALYTICS_SUMMARY_EVERY
    rebuilds = []
    stock_get_df = type(queue)._get_df

    def counted_get_df(records):
        rebuilds.append(len(records))
        return stock_get_df(records)

    monkeypatch.setattr(type(queue), "_get_df", staticmethod(counted_get_df))
    path = str(photo_file(4))

    def caption_five():
        rebuilds.clear()
        for _ in range(5):
            assert client.predict(handle_file(path), api_name="/caption")
        time.sleep(0.5)  # the summary is rebuilt after the answer is sent
        return len(rebuilds)

    assert caption_five() <= 1  # at most once, where the 5 cross a multiple of the interval
    monkeypatch.setattr(queue, "ANAYLTICS_CACHE_FREQUENCY", 1)  # gradio's default
    assert caption_five() == 5  # so the counting above sees every rebuild there is


def test_another_gradio_keeps_its_own_loop_and_polls_every_20_ms(captioner, monkeypatch):
    from captioner.app import gradio_changes
    from captioner.app.ui import build_demo

    monkeypatch.setattr(gradio_changes, "_STOCK_LOOP_SHA256", "the source of some other gradio's loop")
    demo = build_demo(captioner)
    assert demo.queue_finds_work == "polled every 20 ms"
    assert demo._queue.sleep_when_free == gradio_changes.QUEUE_POLL_S == 0.02
    assert "start_processing" not in vars(demo._queue)  # gradio's own method, untouched


def test_each_change_to_gradio_reports_its_path_and_falls_back(captioner, monkeypatch, tmp_path):
    from gradio import queueing

    from captioner.app.ui import build_demo

    changes = build_demo(captioner).gradio_changes
    assert changes == {"links": "handed to fetch.py by the file inputs' cache hook", "validators": "unbatched",
                       "queue loop": "woken by work", "monitoring summary": "rebuilt every 1000 events",
                       "mcp tools": "page handlers hidden"}
    # A gradio without the validator factory: no validator on the batched event (it would fail
    # there); the handler's own per-request checks still refuse a bad image alone.
    monkeypatch.delattr(queueing, "create_validator_fn")
    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "5")
    demo = build_demo(captioner)
    assert demo.gradio_changes["validators"].startswith("stock")
    assert demo.gradio_changes["monitoring summary"] == "as GRADIO_ANALYTICS_CACHE_FREQUENCY sets it"
    caption_fns = [fn for fn in demo.fns.values() if fn.api_name == "caption"]
    assert caption_fns and caption_fns[0].validator is None
    assert demo._queue.ANAYLTICS_CACHE_FREQUENCY != 1000
    bad, good = tmp_path / "bad.png", tmp_path / "good.png"
    bad.write_bytes(b"not an image")
    photo(7).save(good)
    values = [[shown_default(name)] * 2 for name in SETTING_NAMES]
    [answers] = demo.caption_service.caption([str(bad), str(good)], *values)
    assert answers[0].startswith("Could not caption this image: not a supported image")
    assert answers[1] == core_caption(captioner, good)


def test_another_gradio_that_no_longer_calls_the_link_hook_gets_its_downloader_turned_off(captioner, monkeypatch):
    import gradio as gr
    from gradio import processing_utils

    from captioner import CaptionError
    from captioner.app import gradio_changes
    from captioner.app.ui import build_demo

    # Whatever build_demo changes in gradio's module is put back after this test.
    monkeypatch.setattr(processing_utils, "async_ssrf_protected_get", processing_utils.async_ssrf_protected_get)
    monkeypatch.setattr(gradio_changes, "LINK_HOOK", "a_renamed_hook")
    assert build_demo(captioner).gradio_changes["links"].startswith("refused")
    with pytest.raises(gr.Error, match="fetched by the app itself"):
        asyncio.run(processing_utils.async_ssrf_protected_download("http://127.0.0.1:9/x.png", "/nonexistent"))
    monkeypatch.delattr(processing_utils, "async_ssrf_protected_get")
    with pytest.raises(CaptionError, match="cannot keep them to its address policy"):
        build_demo(captioner)


def test_api_documents_caption_with_named_defaulted_settings(client):
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/caption"]["parameters"]
    names = [p["parameter_name"] for p in parameters]
    assert names == ["image", "strategy", "max_length", "num_beams", "temperature", "top_k", "top_p",
                     "repetition_penalty", "no_repeat_ngram_size", "num_captions", "seed"]
    assert not parameters[0]["parameter_has_default"] and all(p["parameter_has_default"] for p in parameters[1:])


def test_default_caption_equals_the_core(client, captioner, photo_file):
    path = photo_file(1)
    assert client.predict(handle_file(str(path)), api_name="/caption") == core_caption(captioner, path)


def test_settings_through_the_api(client, captioner, photo_file):
    path = photo_file(2)
    greedy = client.predict(handle_file(str(path)), strategy="Greedy", max_length=8, api_name="/caption")
    assert greedy == core_caption(captioner, path, CaptionSettings(strategy="greedy", max_length=8))
    several = client.predict(handle_file(str(path)), num_captions=3, api_name="/caption")
    lines = several.splitlines()
    assert len(lines) == 3 and all("score" in line for line in lines)


def test_concurrent_clients_with_mixed_settings_are_batched_and_each_gets_its_own(running_app, captioner, photo_file):
    mixes = [
        {}, {"strategy": "Greedy"}, {"num_beams": 2}, {"strategy": "Sampling", "seed": 5},
        {"max_length": 6}, {}, {"strategy": "Greedy", "max_length": 10}, {"num_beams": 3},
    ]
    paths = [photo_file(10 + i) for i in range(len(mixes))]
    expected = []
    for path, mix in zip(paths, mixes):
        settings = CaptionSettings.from_values({
            **{k: v for k, v in mix.items() if k != "strategy"},
            "strategy": {"Greedy": "greedy", "Sampling": "sample"}.get(mix.get("strategy"), "beam"),
        })
        expected.append(core_caption(captioner, path, settings))
    running_app.service.batch_sizes.clear()
    clients = [running_app.client() for _ in mixes]
    # Hold the model while the requests arrive, so the queue has several waiting to batch.
    with captioner.paused():
        jobs = [c.submit(handle_file(str(p)), **mix, api_name="/caption") for c, p, mix in zip(clients, paths, mixes)]
        wait_until_waiting(jobs)
    results = [job.result(timeout=120) for job in jobs]
    assert results == expected
    sizes = running_app.service.batch_sizes
    assert max(sizes) > 1, sizes
    assert sum(size * batches for size, batches in sizes.items()) == len(mixes)


def test_bad_image_gets_a_message_and_the_next_request_works(client, captioner, tmp_path, photo_file):
    bad = tmp_path / "fake.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    with pytest.raises(Exception, match="not a supported image"):
        client.predict(handle_file(str(bad)), api_name="/caption")
    good = photo_file(3)
    assert client.predict(handle_file(str(good)), api_name="/caption") == core_caption(captioner, good)


def test_bad_setting_is_named_with_its_range(client, photo_file):
    with pytest.raises(Exception, match="num_beams must be an integer from 1 to 8; got 1000"):
        client.predict(handle_file(str(photo_file(4))), num_beams=1000, api_name="/caption")


def test_many_images_endpoint_tables_and_downloads(client, captioner, tmp_path, photo_file):
    good = [photo_file(20), photo_file(21, ".jpg")]
    broken = tmp_path / "broken.png"
    broken.write_bytes(encode(photo(22))[:200])
    table, csv_path, jsonl_path = client.predict(
        [handle_file(str(p)) for p in [*good, broken]], api_name="/caption_many"
    )
    rows = table["data"]
    assert [r[0] for r in rows] == ["photo20.png", "photo21.jpg", "broken.png"]
    assert rows[0][1] == core_caption(captioner, good[0]) and "not captioned" in rows[2][1]
    written = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    assert written[1]["caption"] == core_caption(captioner, good[1]) and written[2]["error"]
    assert len(open(jsonl_path, encoding="utf-8").read().splitlines()) == 3


def test_example_photos_are_real_and_caption(captioner):
    photos = example_photos()
    assert len(photos) >= 4
    assert all(core_caption(captioner, p) for p in photos)


def test_data_url_images_respect_the_size_limit(client):
    import base64

    small = "data:image/png;base64," + base64.b64encode(encode(photo(5))).decode()
    assert client.predict({"path": None, "url": small, "meta": {"_type": "gradio.FileData"}}, api_name="/caption")
    bomb = "data:image/png;base64," + base64.b64encode(encode(photo(5).resize((20, 20)).convert("1").resize((20000, 20000)))).decode()
    with pytest.raises(Exception, match="too large"):
        client.predict({"path": None, "url": bomb, "meta": {"_type": "gradio.FileData"}}, api_name="/caption")


def test_command_line_limits_reach_the_service(tiny_checkpoint):
    app_module = import_app(tiny_checkpoint)

    args = app_module.parse_args(["--model", str(tiny_checkpoint), "--max-megapixels", "5", "--max-file-mb", "3"])
    demo, limits = app_module.create_demo(args)
    limits_in_use = demo.caption_service.image_limits
    assert (limits_in_use.max_pixels, limits_in_use.max_file_bytes) == (5_000_000, 3 * 1024 * 1024)
