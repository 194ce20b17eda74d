"""One batching path for every caller: concurrent requests from any thread or door meet in one
generate call when their settings match, in the order they came, with each answer equal to the
one it gets alone."""

import asyncio
import threading
import time

import pytest

from captioner import CaptionSettings
from helpers import RunningApp, batch_sizes_logged, encode, files_handler, photo, serve_on_loopback


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def concurrently(calls):
    """Run each call on its own thread; returns their results in order."""
    results = [None] * len(calls)

    def run(index):
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    return threads, results


def test_threads_calling_at_once_share_one_generate_and_get_their_own_captions(captioner):
    images = [photo(seed, (32, 32)) for seed in range(8)]
    alone = [captioner.caption([image])[0][0].text for image in images]
    captioner.generate_batch_sizes.clear()
    with captioner.paused():
        threads, results = concurrently([lambda image=image: captioner.caption([image]) for image in images])
        wait_for(lambda: captioner.waiting() == 8)
    for thread in threads:
        thread.join()
    assert dict(captioner.generate_batch_sizes) == {8: 1}
    assert [r[0][0].text for r in results] == alone


def test_only_matching_settings_share_a_batch_and_the_oldest_goes_first(captioner):
    beam, greedy = CaptionSettings(), CaptionSettings(strategy="greedy")
    order = [beam, greedy, beam, greedy, beam]
    captioner.generate_batch_sizes.clear()
    served = []
    real = captioner._caption_batch_here

    def recording(images, settings):
        served.append((settings.strategy, len(images)))
        return real(images, settings)

    captioner._batcher._run = recording
    try:
        with captioner.paused():
            threads = []
            for index, settings in enumerate(order):  # one at a time: their order in the queue is known
                more, _ = concurrently([lambda s=settings, i=index: captioner.caption([photo(i)], s)])
                threads += more
                wait_for(lambda n=index + 1: captioner.waiting() == n)
        for thread in threads:
            thread.join()
    finally:
        captioner._batcher._run = real
    assert served == [("beam", 3), ("greedy", 2)]


def test_a_seeded_sample_runs_alone(captioner):
    seeded = CaptionSettings(strategy="sample", seed=3)
    captioner.generate_batch_sizes.clear()
    with captioner.paused():
        threads, results = concurrently([lambda i=i: captioner.caption([photo(i)], seeded) for i in range(3)])
        wait_for(lambda: captioner.waiting() == 3)
    for thread in threads:
        thread.join()
    assert dict(captioner.generate_batch_sizes) == {1: 3}
    assert [r[0][0].text for r in results] == [captioner.caption([photo(i)], seeded)[0][0].text for i in range(3)]


PHOTOS = {f"/{i}.png": encode(photo(50 + i)) for i in range(8)}


@pytest.fixture(scope="module")
def intranet(captioner, running_app):
    from captioner.app.service import AppLimits

    app = RunningApp(captioner, AppLimits(allow_private_urls=True))
    with serve_on_loopback(files_handler(PHOTOS)) as images:
        yield app, images
    app.close()


async def call_tools(url, links):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def one(link):
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return (await session.call_tool("caption_image", {"image_url": link})).content[0].text

    return await asyncio.gather(*(one(link) for link in links))


def test_eight_agents_over_mcp_are_answered_in_one_batch(intranet, captioner, caplog):
    app, images = intranet
    links = [f"{images}{path}" for path in PHOTOS]
    from captioner import load_image

    alone = [captioner.caption([load_image(PHOTOS[path])])[0][0].text for path in PHOTOS]
    captioner.generate_batch_sizes.clear()
    caplog.set_level("INFO", logger="captioner.engine.batching")
    answers = []
    with captioner.paused():
        caller = threading.Thread(target=lambda: answers.extend(asyncio.run(call_tools(f"{app.url}gradio_api/mcp/", links))))
        caller.start()
        wait_for(lambda: captioner.waiting() == 8)
    caller.join(timeout=120)
    assert answers == alone  # exact: each equals its single-request caption
    assert dict(captioner.generate_batch_sizes) == {8: 1}
    logged = [record.getMessage() for record in caplog.records if record.name == "captioner.engine.batching"]
    assert any('"batch": 8, "requests": 8' in line for line in logged), logged


def test_pieces_of_a_set_let_other_requests_go_first_and_never_share_their_batch(captioner):
    """A set's piece (bulk) waiting ahead of two single photos: the photos go first, together;
    then the set's pieces, together. The batcher's own log line says what each generate held."""
    images = [photo(seed, (32, 32)) for seed in range(5)]
    alone = [captioner.caption([image])[0][0].text for image in images]
    calls = [lambda: captioner.caption(images[:2], bulk=True), lambda: captioner.caption([images[2]]),
             lambda: captioner.caption([images[3]]), lambda: captioner.caption([images[4]], bulk=True)]
    with batch_sizes_logged() as sizes:
        with captioner.paused():
            threads, results = [], []
            for index, call in enumerate(calls):  # one at a time: their order in the queue is known
                more, result = concurrently([call])
                threads += more
                results.append(result)
                wait_for(lambda n=index + 1: captioner.waiting() == n)
        for thread in threads:
            thread.join()
    assert sizes == [2, 3]  # the two photos, then the set's three images
    texts = [c[0].text for result in results for c in result[0]]
    assert texts == alone
