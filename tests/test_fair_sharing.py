"""One visitor's set of images does not make everyone else wait for all of it: a photo sent while a
set is being captioned joins the model between two of the set's batches, and the set's table
grows as it goes, with the same quality flags the CLI writes."""

import csv
import json
import time

import pytest
from gradio_client import handle_file

from captioner import Captioner
from captioner.app.service import AppLimits
from helpers import RunningApp, batch_sizes_logged, encode, photo

BATCH = 4  # the set goes in pieces of half a batch: 2 images
PIECE = BATCH // 2


@pytest.fixture(scope="module")
def small_batches(tiny_checkpoint):
    """The app as app.py builds it with --max-batch-size 4: the Captioner and the queue agree."""
    captioner = Captioner.from_pretrained(tiny_checkpoint, max_batch_size=BATCH)
    app = RunningApp(captioner, AppLimits(max_batch_size=BATCH))
    yield captioner, app
    app.close()


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_photo_sent_during_a_set_goes_before_the_sets_next_piece(small_batches, tmp_path):
    captioner, app = small_batches
    files = []
    for i in range(6):
        path = tmp_path / f"set{i}.png"
        path.write_bytes(encode(photo(i)))
        files.append(handle_file(str(path)))
    single = tmp_path / "single.png"
    single.write_bytes(encode(photo(99)))
    client = app.client()
    with batch_sizes_logged() as sizes:
        with captioner.paused():
            many = client.submit(files, api_name="/caption_many")
            wait_for(lambda: captioner.waiting() == 1)  # the set's first piece, at the model
            one = client.submit(handle_file(str(single)), api_name="/caption")
            # The page's photo reaches the model while the set is still running: the set does not
            # hold the queue's model slot for all its batches.
            wait_for(lambda: captioner.waiting() == 2)
        caption = one.result(timeout=120)
        table = many.result(timeout=120)[0]
    # The photo went first, in a batch of its own, though the set's first piece was waiting before it.
    assert sizes == [1, PIECE, PIECE, PIECE]
    assert caption == captioner.caption([photo(99)])[0][0].text
    assert [row[0] for row in table["data"]] == [f"set{i}.png" for i in range(6)]


def test_a_set_shows_its_progress_and_flags_in_the_table_and_downloads(small_batches, tmp_path):
    captioner, app = small_batches
    paths = []
    for name, data in [("a.png", encode(photo(1))), ("b.png", encode(photo(1))),  # twice the same photo
                       ("c.png", encode(photo(2))), ("broken.png", b"not an image")]:
        (tmp_path / name).write_bytes(data)
        paths.append(handle_file(str(tmp_path / name)))
    job = app.client().submit(paths, api_name="/caption_many")
    job.result(timeout=120)
    updates = job.outputs()
    first = updates[0][0]["data"]
    assert len(updates) == 2 and first[-1] == ["2 more", "(waiting for the model)", ""]
    rows = updates[-1][0]["data"]
    assert [r[0] for r in rows] == ["a.png", "b.png", "c.png", "broken.png"]
    assert "the same caption as 1 other image" in rows[0][2] and "not captioned" in rows[3][1]
    with open(updates[-1][1], encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert "duplicate" in written[0]["flags"] and written[3]["flags"] == "error" and written[3]["error"]
    lines = [json.loads(line) for line in open(updates[-1][2], encoding="utf-8")]
    assert "duplicate" in lines[1]["flags"] and lines[3]["flags"] == ["error"] and lines[3]["caption"] == ""
