"""The review tab's handlers, called as the page calls them: a zip in, only what has no caption
captioned, edits kept on disk through a restart, and an export that `datasets` and
`captioner train --data` take as it is."""

import json
import os
import zipfile
from pathlib import Path

import gradio as gr
import pytest

from captioner.app.review_service import EXPORTS, ReviewService
from captioner.app.review_tab import ReviewTab
from captioner.app.service import AppLimits, CaptionService
from captioner.cli import main
from captioner.settings import SETTING_NAMES, shown_default
from helpers import encode, photo, scores_without_java

RAW = os.fsencode("caf\u00e9.png").decode("cp437")  # a name from a zip made on Windows
VIEW = ("weakest first", "all", "")
WIDGETS = ["Beam search", *(shown_default(name) for name in SETTING_NAMES[1:])]  # the first tab's defaults


def messy_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        for i, name in enumerate(["a.jpg", "trip/b.png", "trip/day 1/c d.png", "=SUM(1).png", RAW, "trip/e.png"]):
            archive.writestr(name, encode(photo(i, (40, 30)), "JPEG" if name.endswith(".jpg") else "PNG"))
        archive.writestr("a.txt", "a person's caption\n")
        archive.writestr("trip/metadata.jsonl", json.dumps({"file_name": "b.png", "text": "from the metadata"}) + "\n")
        archive.writestr("broken.jpg", encode(photo(9), "JPEG")[:150])
        archive.writestr("notes.docx", b"PK\x03\x04 not a photo")
    return path


@pytest.fixture
def tab(captioner, tmp_path):
    return ReviewTab(ReviewService(CaptionService(captioner, AppLimits(max_batch_size=4)), tmp_path / "reviews"))


def table_of(drawn):
    return {row[1]: row for row in drawn[0]}


def loaded(tab, tmp_path):
    steps = list(tab.load([str(messy_zip(tmp_path / "set.zip"))], None, "", *VIEW, *WIDGETS))
    token = steps[-1][0]
    return token, steps


def test_a_zip_is_loaded_and_only_what_has_no_caption_is_captioned(tab, captioner, tmp_path):
    token, steps = loaded(tab, tmp_path)
    assert "2 captions kept as they were; 1 file that is not an image left out" in steps[-1][5]
    assert [s[5].split("; ")[-1] for s in steps] == [  # pieces of half a batch; the table grows with each
        "captioning 5 images...", "captioned 2 of 5", "captioned 4 of 5", "captioned 5 of 5"]
    rows = table_of(steps[-1][1:])
    assert rows["a.jpg"][2:4] == ["a person's caption", "existing"]
    assert rows["trip/b.png"][2:4] == ["from the metadata", "existing"]
    expected = captioner.caption([photo(2, (40, 30))])[0][0].text
    assert rows["trip/day 1/c d.png"][2:4] == [expected, "model"]
    assert rows["broken.jpg"][2].startswith("(not captioned:") and "could not be read" in rows["broken.jpg"][5]
    assert rows[RAW][3] == "model" and rows["=SUM(1).png"][0].startswith("![")  # a thumbnail with alt text


def test_edits_bulk_edits_and_undo_survive_a_restart(tab, captioner, tmp_path):
    token, _ = loaded(tab, tmp_path)
    drawn = tab.save_edit(token, "a.jpg", "a grey cat on a sofa", *VIEW)
    assert drawn[4] == "Saved: edit a.jpg." and drawn[3]["value"] == "a.jpg" and drawn[5] == "a grey cat on a sofa"
    preview = tab.preview(token, "prefix", "tok, ", "", False, "lower", *VIEW)
    assert preview.startswith("**6 of 7 captions shown would change.**")  # the error row has no caption
    *drawn, cleared = tab.apply(token, "prefix", "tok, ", "", False, "lower", *VIEW)
    assert all(r[2].startswith("tok, ") for n, r in table_of(drawn).items() if n != "broken.jpg")
    tab.undo(token, *VIEW)
    restarted = ReviewTab(ReviewService(tab.reviews.service, tab.reviews.root.parent))  # a new process's
    rows = table_of(restarted.restore(token, *VIEW))
    assert rows["a.jpg"][2:4] == ["a grey cat on a sofa", "edited"] and not rows["trip/b.png"][2].startswith("tok")
    assert restarted.redo(token, *VIEW)[4].startswith("Redone: prefix 'tok, '")
    assert restarted.reviews.secret == tab.reviews.secret  # the browser's sealed token still opens


def test_filter_then_bulk_edit_changes_only_the_rows_shown(tab, tmp_path):
    token, _ = loaded(tab, tmp_path)
    drawn = tab.draw(token, "name", "all", "trip/")
    assert [r[1] for r in drawn[0]] == ["trip/b.png", "trip/day 1/c d.png", "trip/e.png"]
    tab.apply(token, "suffix", " (trip)", "", False, "lower", "name", "all", "trip/")
    rows = table_of(tab.draw(token, *VIEW))
    assert rows["trip/b.png"][2] == "from the metadata (trip)" and not rows["a.jpg"][2].endswith("(trip)")


@pytest.mark.parametrize("call, message", [
    (lambda tab, token: tab.preview(token, "replace", "x", "(cat", True, "lower", *VIEW), "not a valid regular expression"),
    (lambda tab, token: tab.apply(token, "replace", "x", "zebra", False, "lower", *VIEW), "changes no caption"),
    (lambda tab, token: tab.undo(token, *VIEW), "nothing to undo"),
    (lambda tab, token: tab.save_edit(token, "broken.jpg", "words", *VIEW), "could not be read"),
    (lambda tab, token: tab.save_edit("x" * 24, "a.jpg", "words", *VIEW), "no longer on the server"),
    (lambda tab, token: tab.save_edit("../../etc", "a.jpg", "words", *VIEW), "no longer on the server"),
    (lambda tab, token: tab.export(token, "a .xlsx table"), "export as one of"),
])
def test_bad_requests_are_one_message_and_change_nothing(tab, tmp_path, call, message):
    token, _ = loaded(tab, tmp_path)
    before = tab.draw(token, *VIEW)[0]
    with pytest.raises(gr.Error, match=message):
        call(tab, token)
    assert tab.draw(token, *VIEW)[0] == before


def test_bad_uploads_are_one_message(tab, tmp_path):
    with pytest.raises(gr.Error, match="Add images"):
        list(tab.load([], None, "", *VIEW, *WIDGETS))
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as archive:
        archive.writestr("ok.png", encode(photo(1)))
        archive.writestr("../../outside.png", encode(photo(2)))
    with pytest.raises(gr.Error, match="points outside the archive's folder"):
        list(tab.load([str(slip)], None, "", *VIEW, *WIDGETS))
    assert not (tmp_path / "outside.png").exists() and not list(tmp_path.rglob("outside.png"))
    (tmp_path / "notes.txt").write_text("no image here")
    with pytest.raises(gr.Error, match="holds no images"):
        list(tab.load([str(tmp_path / "notes.txt")], None, "", *VIEW, *WIDGETS))
    assert tab.restore(None, *VIEW)[1] == "No set loaded yet."


def test_the_imagefolder_export_trains_as_it_is(tab, tiny_checkpoint, tmp_path, monkeypatch):
    token, _ = loaded(tab, tmp_path)
    tab.save_edit(token, "trip/e.png", "a reviewed caption", *VIEW)
    path, status = tab.export(token, next(iter(EXPORTS)))
    assert status.startswith("Exported: 6 images with captions") and "broken.jpg" in status
    data = tmp_path / "data"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(data)
    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["file_name"]: r["text"] for r in rows}["trip/e.png"] == "a reviewed caption"
    import datasets

    assert sorted(datasets.load_dataset("imagefolder", data_dir=str(data), split="train")["text"]) == sorted(
        r["text"] for r in rows)
    scores_without_java(monkeypatch)
    out = tmp_path / "tuned"
    assert main(["train", "--data", str(data), "--output", str(out), "--model", str(tiny_checkpoint), "--epochs", "1",
                 "--batch-size", "2", "--workers", "0"]) == 0
    assert (out / "config.json").is_file()


def test_a_large_set_is_shown_a_page_at_a_time(tab, tmp_path):
    archive = tmp_path / "many.zip"
    tiny = encode(photo(1, (8, 8)))
    with zipfile.ZipFile(archive, "w") as packed:
        for i in range(55):
            packed.writestr(f"{i:03d}.png", tiny)
            packed.writestr(f"{i:03d}.txt", f"photo number {i} of the set")
    token = list(tab.load([str(archive)], None, "", *VIEW, *WIDGETS))[-1][0]
    first = tab.draw(token, "name", "all", "", 1)
    assert len(first[0]) == 50 and first[1].endswith("Showing 1-50 of 55.")
    second = tab.draw(token, "name", "all", "", 2)
    assert [r[1] for r in second[0]] == [f"{i:03d}.png" for i in range(50, 55)]
    assert second[1].endswith("Showing 51-55 of 55.") and second[3]["value"] == "050.png"
    assert tab.draw(token, "name", "all", "", 99)[0] == second[0]  # past the end: the last page
    assert tab.draw(token, "name", "all", "", 0)[0] == first[0]
    event = gr.SelectData(None, {"index": [2, 1], "value": "052.png"})
    assert tab.select(token, "name", "all", "", 2, event) == "052.png"
    edited = tab.save_edit(token, "052.png", "a fixed caption", "name", "all", "", 2)
    assert edited[1].endswith("Showing 51-55 of 55.") and edited[3]["value"] == "052.png"  # still on page 2


def test_every_review_event_takes_the_inputs_the_page_sends(captioner):
    """gradio only warns when a handler takes fewer values than its event sends: check each here."""
    import inspect

    from captioner.app.ui import build_demo

    demo = build_demo(captioner)
    checked = 0
    for block_function in demo.fns.values():
        handler = getattr(block_function.fn, "__func__", None)
        if handler is None or handler.__qualname__.split(".")[0] != "ReviewTab":
            continue
        signature = inspect.signature(block_function.fn)
        injected = [p for p in signature.parameters.values() if p.annotation in (gr.SelectData, "gr.SelectData")]
        values = [None] * len(block_function.inputs) + [None] * len(injected)
        signature.bind(*values)  # raises TypeError if the counts disagree
        checked += 1
    assert checked >= 12


def uploaded_folder(tmp_path):
    """A folder upload as gradio hands it over: each file in a cache folder of its own, under its
    base name only, and the paths the browser told (the picked folder's name first)."""
    files, told = [], []
    made = {"day 1/a.jpg": encode(photo(1, (40, 30)), "JPEG"), "day 1/a.txt": b"the first a",
            "day 2/a.jpg": encode(photo(2, (40, 30)), "JPEG"), "day 2/a.txt": b"the second a, longer",
            "day 2/metadata.jsonl": json.dumps({"file_name": "b.png", "text": "b from day 2"}).encode() + b"\n",
            "day 2/b.png": encode(photo(3, (40, 30))), "c.png": encode(photo(4, (40, 30))), "notes.pdf": b"%PDF"}
    for i, (inside, data) in enumerate(made.items()):
        cached = tmp_path / "cache" / str(i) / inside.rsplit("/", 1)[-1]
        cached.parent.mkdir(parents=True)
        cached.write_bytes(data)
        files.append(str(cached))
        told.append([f"holiday/{inside}", len(data)])
    return files, told


def test_a_folder_upload_keeps_its_sub_folders(tab, tmp_path):
    files, told = uploaded_folder(tmp_path)
    told.reverse()  # the order the browser tells need not be the upload's
    steps = list(tab.load(None, files, json.dumps(told), *VIEW, *WIDGETS))
    rows = table_of(steps[-1][1:])
    assert sorted(rows) == ["c.png", "day 1/a.jpg", "day 2/a.jpg", "day 2/b.png"]
    assert rows["day 1/a.jpg"][2:4] == ["the first a", "existing"]
    assert rows["day 2/a.jpg"][2:4] == ["the second a, longer", "existing"]
    assert rows["day 2/b.png"][2:4] == ["b from day 2", "existing"]
    assert rows["c.png"][3] == "model"
    assert "1 file that is not an image left out" in steps[-1][5]


def test_a_folder_upload_without_paths_or_with_hostile_ones_stays_inside_the_set(tab, tmp_path):
    from captioner.app.review_service import folder_places

    files, told = uploaded_folder(tmp_path)
    assert [inside for _, inside in folder_places(files, "not json")] == [[Path(f).name] for f in files]
    hostile = [["holiday/../../../etc/x.jpg", told[0][1]], ["/abs/a.txt", told[1][1]], ["a.jpg", told[2][1]]]
    places = folder_places(files[:3], json.dumps(hostile))
    assert [inside for _, inside in places] == [["a.jpg"], ["a.txt"], ["a.jpg"]]
    steps = list(tab.load(None, files[:3], json.dumps(hostile), *VIEW, *WIDGETS))
    assert sorted(table_of(steps[-1][1:])) == ["a (2).jpg", "a.jpg"]  # two photos of one name both stay
    assert not list(tmp_path.rglob("etc"))
