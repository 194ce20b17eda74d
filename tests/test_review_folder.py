"""`captioner review FOLDER`: the folder's caption files are the review. Edits are on disk the moment
they are acknowledged, a SIGKILL in a burst of edits leaves every file whole, and undo works after
a restart; a folder that cannot be written, or holds no images, is one line and exit 2."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from captioner.app.review_folder import HISTORY, FolderReviews
from captioner.app.review_tab import ReviewTab
from captioner.app.service import AppLimits, CaptionService
from captioner.cli import main
from captioner.images import IMAGE_SUFFIXES
from captioner.settings import SETTING_NAMES, shown_default
from helpers import SRC, photo

VIEW = ("name", "all", "")
WIDGETS = ["Beam search", *(shown_default(name) for name in SETTING_NAMES[1:])]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "b.png", "trip/c.png"]):
        photo(i, (40, 30)).save(root / name)
    (root / "a.txt").write_text("a person's caption\n", encoding="utf-8")
    return root


def test_edits_land_in_the_folder_at_once_and_undo_works_after_a_restart(captioner, folder):
    service = CaptionService(captioner, AppLimits(max_batch_size=4))
    tab = ReviewTab(FolderReviews(service, folder))
    steps = list(tab.load(None, None, "", *VIEW, *WIDGETS))
    assert "1 caption kept as it was" in steps[-1][5] and "captioned 2 of 2" in steps[-1][5]
    model = captioner.caption([photo(1, (40, 30))])[0][0].text
    assert (folder / "b.txt").read_text(encoding="utf-8") == model + "\n"  # the model's drafts, beside them
    assert (folder / "a.txt").read_text(encoding="utf-8") == "a person's caption\n"  # kept as it was
    tab.save_edit(tab.reviews.token, "trip/c.png", "a photo I captioned myself", *VIEW)
    assert (folder / "trip" / "c.txt").read_text(encoding="utf-8") == "a photo I captioned myself\n"
    tab.apply(tab.reviews.token, "prefix", "tok, ", "", False, "lower", *VIEW)
    assert (folder / "a.txt").read_text(encoding="utf-8") == "tok, a person's caption\n"
    assert (folder / HISTORY).is_file() and not list(folder.rglob("*.partial"))

    restarted = ReviewTab(FolderReviews(service, folder))  # a new process reads the folder again
    assert restarted.undo(restarted.reviews.token, *VIEW)[4].startswith("Undone: prefix 'tok, '")
    assert (folder / "a.txt").read_text(encoding="utf-8") == "a person's caption\n"
    restarted.undo(restarted.reviews.token, *VIEW)
    assert (folder / "trip" / "c.txt").read_text(encoding="utf-8") == model_c(captioner) + "\n"
    assert {p.name for p in folder.iterdir()} == {"a.jpg", "a.txt", "b.png", "b.txt", HISTORY, "trip"}


def test_the_folder_is_shown_when_the_page_opens_before_any_load(captioner, folder):
    tab = ReviewTab(FolderReviews(CaptionService(captioner, AppLimits(max_batch_size=4)), folder))
    drawn = tab.restore(None, *VIEW)  # a first visit: the browser has no token yet
    assert [row[1] for row in drawn[0]] == ["a.jpg", "b.png", "trip/c.png"]
    assert drawn[4] == "2 images have no caption yet: the button above captions them."
    assert tab.pick(None, "a.jpg")[0] == "a person's caption"


def test_with_metadata_the_folders_metadata_jsonl_is_the_review(captioner, folder, tmp_path):
    lines = [{"file_name": "a.jpg", "text": "a from the metadata", "tags": ["kept"]},
             {"file_name": "gone.jpg", "text": "a photo no longer here"}]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    service = CaptionService(captioner, AppLimits(max_batch_size=4))
    tab = ReviewTab(FolderReviews(service, folder, metadata=True))
    steps = list(tab.load(None, None, "", *VIEW, *WIDGETS))
    assert "1 caption kept as it was" in steps[-1][5] and "captioned 2 of 2" in steps[-1][5]
    assert table(steps[-1])["a.jpg"] == "a from the metadata"  # not a.txt: the metadata is the review
    tab.save_edit(tab.reviews.token, "trip/c.png", "edited in the metadata", *VIEW)
    written = {r["file_name"]: r for r in map(json.loads, (folder / "metadata.jsonl").read_text().splitlines())}
    assert written["a.jpg"] == lines[0] and written["gone.jpg"] == lines[1]  # other columns and lines kept
    assert written["trip/c.png"]["text"] == "edited in the metadata"
    assert written["b.png"]["text"] == captioner.caption([photo(1, (40, 30))])[0][0].text
    assert (folder / "a.txt").read_text(encoding="utf-8") == "a person's caption\n" and not (folder / "b.txt").exists()
    import datasets

    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert "edited in the metadata" in loaded["text"]

    restarted = ReviewTab(FolderReviews(service, folder, metadata=True))
    assert restarted.undo(restarted.reviews.token, *VIEW)[4].startswith("Undone: edit trip/c.png")
    assert "edited in the metadata" not in (folder / "metadata.jsonl").read_text()


def test_with_metadata_a_line_it_could_not_write_back_is_refused(tiny_checkpoint, folder, capsys):
    (folder / "metadata.jsonl").write_text('{"file_name": "a.jpg", "text": "ok"}\nnot json\n', encoding="utf-8")
    before = (folder / "metadata.jsonl").read_bytes()
    assert main(["review", str(folder), "--metadata", "--model", str(tiny_checkpoint)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {folder / 'metadata.jsonl'}:2 is not a JSON object with a " \
        "file_name; fix that line first (the review rewrites the file and would lose it)"
    assert (folder / "metadata.jsonl").read_bytes() == before
    (folder / "metadata.jsonl").unlink()
    (folder / "trip" / "metadata.csv").write_text("file_name,text\nc.png,c\n", encoding="utf-8")
    assert main(["review", str(folder), "--metadata", "--model", str(tiny_checkpoint)]) == 2
    assert "trip/metadata.csv too" in capsys.readouterr().err
    assert (folder / "trip" / "metadata.csv").read_text() == "file_name,text\nc.png,c\n"


def table(drawn):
    return {row[1]: row[2] for row in drawn[1]}


def model_c(captioner):
    return captioner.caption([photo(2, (40, 30))])[0][0].text


BURST = """if True:
    import sys
    from pathlib import Path
    from captioner.app.review_folder import FolderReviews
    reviews = FolderReviews(None, Path(sys.argv[1]))
    review = reviews.get(reviews.token)
    names = sorted(review.rows)
    for i in range(100000):
        name = names[i % len(names)]
        review.edit(name, f"edit {i} of {name} " + "words " * 400)
        reviews.save(reviews.token, review)
        print(i, name, flush=True)  # acknowledged: on disk
"""


def test_a_kill_during_a_burst_of_edits_leaves_every_file_whole_and_every_acknowledged_edit(folder):
    env = {**os.environ, "PYTHONPATH": SRC}
    process = subprocess.Popen([sys.executable, "-c", BURST, str(folder)], env=env, stdout=subprocess.PIPE, text=True)
    acknowledged = {}
    for line in process.stdout:
        number, name = line.split(" ", 1)
        acknowledged[name.strip()] = int(number)
        if int(number) >= 150:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    for name, last in acknowledged.items():
        text = (folder / name).with_suffix(".txt").read_text(encoding="utf-8")
        assert text.endswith("words \n") and text.count("edit ") == 1, text[:80]  # whole: one edit, to its end
        assert int(text.split()[1]) >= last  # the acknowledged edit, or a later one
    reviews = FolderReviews(None, folder)  # after the kill: the history reads, undo works
    review = reviews.get(reviews.token)
    assert review.position > 0
    before = review.steps[review.position - 1].before[0]
    review.undo()
    assert review.rows[before[0]].caption == before[1]


BULK_BURST = """if True:
    import sys
    from pathlib import Path
    from captioner.app.review_folder import FolderReviews
    reviews = FolderReviews(None, Path(sys.argv[1]))
    review = reviews.get(reviews.token)
    for i in range(100000):
        for name in review.rows:  # every caption at once, as a bulk edit changes them
            review.edit(name, f"edit {i} of {name} " + "words " * 400)
        reviews.save(reviews.token, review)
        print(i, flush=True)  # acknowledged: every file on disk
"""


def test_a_kill_during_bulk_edits_leaves_every_file_whole_and_every_acknowledged_bulk_edit(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):  # more files than one flush each: the one-sync path (write_all_atomically)
        photo(i, (16, 16)).save(folder / f"p{i:02d}.png")
    process = subprocess.Popen([sys.executable, "-c", BULK_BURST, str(folder)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": SRC})
    last = -1
    for line in process.stdout:
        last = int(line)
        if last >= 40:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last >= 40
    for i in range(12):
        text = (folder / f"p{i:02d}.txt").read_text(encoding="utf-8")
        assert text.endswith("words \n") and text.count("edit ") == 1, text[:80]
        assert int(text.split()[1]) >= last
    FolderReviews(None, folder)  # the next start clears what the kill left half-written
    assert not [p for p in folder.iterdir() if p.name.endswith(".partial")]


def test_bad_folders_are_one_line_and_exit_2(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos")
    assert main(["review", str(tmp_path / "empty"), "--model", str(tiny_checkpoint)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path / 'empty'} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"]
    assert main(["review", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["review", str(tmp_path / "empty"), "--sidecar", ".png"]) == 2
    assert "not a caption file extension" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="a read-only mount needs root and unshare")
def test_a_read_only_folder_is_one_line_and_nothing_changes(tiny_checkpoint, folder):
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    # A mount namespace of the test's own, where the folder is mounted read-only (root ignores modes).
    script = (f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
              f"exec {sys.executable} -m captioner review {folder} --model {tiny_checkpoint}")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {folder} cannot be written")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
