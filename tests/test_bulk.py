"""Bulk captioning through the CLI: outputs, resume after a kill, caption files, Parquet, safety."""

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from captioner import CaptionSettings, load_image
from captioner.bulk.pipeline import Item, caption_batches
from captioner.cli import main
from captioner.exports import spreadsheet_safe, spreadsheet_unsafe, write_downloads
from helpers import caption_rows, encode, expected_captions, kill_once_written, photo
from reference import ModelCardReference


def test_folder_rows_in_order_equal_captioner_and_model_card(captioner, tiny_checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    code = main(["caption", "--model", str(tiny_checkpoint), "--batch-size", "3", "--output", str(out), str(folder)])
    rows = caption_rows(out)
    assert code == 1  # some files failed; the rest were captioned
    names = sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png"))
    assert [r["path"] for r in rows] == [str(p) for p in names]
    good = [p for p in names if p.name.startswith(("p", "q"))]
    by_path = {r["path"]: r for r in rows}
    assert [by_path[str(p)]["caption"] for p in good] == expected_captions(captioner, good)
    assert [by_path[str(p)]["caption"] for p in good[:2]] == ModelCardReference(tiny_checkpoint).predict(
        [load_image(p) for p in good[:2]])
    errors = {Path(r["path"]).name: r["error"] for r in rows if "error" in r}
    assert set(errors) == {"broken.jpg", "empty.png", "cut.jpg"}
    assert "empty" in errors["empty.png"] and "truncated" in errors["cut.jpg"]
    assert "captioned 6, skipped 0 as already done, skipped 1 file that is not an image, failed 3" in (
        capsys.readouterr().err)  # notes.txt: no image of its name, so not a caption file


def test_existing_output_is_refused_and_left_untouched(tiny_checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out.csv"
    out.write_text("someone's work\n")
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", str(out), str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--resume" in err[0] and "--overwrite" in err[0]
    assert out.read_text() == "someone's work\n"
    assert main(["caption", "--model", str(tiny_checkpoint), "--overwrite", "--output", str(out), str(folder)]) == 1
    assert len(list(csv.DictReader(out.open()))) == 9


def test_resume_repairs_a_torn_line_and_finishes_each_image_once(tiny_checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    args = ["caption", "--model", str(tiny_checkpoint), "--output", str(out), str(folder)]
    main(args)
    full = out.read_bytes()
    lines = full.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:4]) + lines[4][:17])  # a kill in the middle of the fifth row
    assert main([*args, "--resume"]) == 0  # the failed files were among the rows kept
    assert out.read_bytes() == full  # the same rows in the same order, each once
    assert "repaired a torn last line" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "captioned 0, skipped 9" in capsys.readouterr().err
    assert out.read_bytes() == full


def test_resume_refuses_a_foreign_line(tiny_checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "x.jpg", "caption": "a"}\nhello world\n{"path": "y.jpg", "caption": "b"}\n')
    before = out.read_bytes()
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", str(out), "--resume", str(folder)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert out.read_bytes() == before


@pytest.mark.slow
def test_ten_thousand_images_killed_mid_run_and_resumed(tiny_checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    tile = encode(photo(0, size=(16, 16)))
    for i in range(10_000):
        (images / f"{i:05d}.png").write_bytes(tile if i % 7 else encode(photo(i, size=(16, 16))))
    out = tmp_path / "captions.jsonl"
    # Short greedy captions: what is tested is the journal at scale, not the decoding.
    command = [sys.executable, "-m", "captioner", "caption", "--model", str(tiny_checkpoint), "--output", str(out),
               "--batch-size", "32", "--strategy", "greedy", "--max-length", "4", str(images)]
    env = kill_once_written(command, out, 3000)
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    paths = [r["path"] for r in caption_rows(out)]
    assert len(paths) == 10_000 and len(set(paths)) == 10_000
    summary = resumed.stderr.strip().splitlines()[-1]
    skipped = int(summary.split("skipped ")[1].split()[0])
    assert 3000 <= skipped < 10_000 and f"captioned {10_000 - skipped}," in summary


def test_from_list_takes_files_and_folders(tiny_checkpoint, folder, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos to caption\n{folder / 'p1.jpg'}\n\n{folder / 'nested'}\n")
    assert main(["caption", "--json", "--model", str(tiny_checkpoint), "--from-list", str(listing)]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["p1.jpg", "broken.jpg", "q.png"]


@pytest.mark.parametrize("args, message", [
    (["EMPTY"], "no images found"),
    (["IMAGES", "--output", "FILE/out.jsonl"], "cannot write"),
    (["IMAGES", "--output", "out.txt"], "must end in .jsonl, .csv or .parquet"),
    (["--dataset", "IMAGES"], "--output X.parquet"),
    (["IMAGES", "--resume"], "apply to --output"),
])
def test_usage_errors_are_one_line_with_exit_2(tiny_checkpoint, folder, tmp_path, args, message, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("x")
    places = {"EMPTY": str(tmp_path / "empty"), "IMAGES": str(folder), "FILE": str(tmp_path / "a-file")}
    args = [a.replace("FILE", places["FILE"]) if "FILE/" in a else places.get(a, a) for a in args]
    assert main(["caption", "--model", str(tiny_checkpoint), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_csv_cells_that_would_run_as_formulas_are_neutralised(tiny_checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = ["=cmd.png", "+sum.png", "-minus.png", "@at.png", "\tTab.png", "'quote.png", "plain.png"]
    for i, name in enumerate(names):
        photo(i).save(images / name)
    out = tmp_path / "out.csv"
    args = ["caption", "--model", str(tiny_checkpoint), "--prefix", "=HYPERLINK(\"x\") ", "--output", str(out), str(images)]
    assert main(args) == 0
    rows = list(csv.reader(out.open(encoding="utf-8", newline="")))[1:]
    assert len(rows) == 7
    for path, caption, _, flags in rows:
        assert not path.startswith(("=", "+", "-", "@", "\t", "\r")) and caption.startswith("'=HYPERLINK")
        assert not flags.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert spreadsheet_safe("=1+1") == "'=1+1" and spreadsheet_safe("\r=1") == "'\r=1"
    assert all(spreadsheet_unsafe(spreadsheet_safe(n)) == n for n in names)
    assert main([*args, "--resume"]) == 0 and len(list(csv.reader(out.open()))) == 8  # keys read back exactly


def test_relative_names_starting_a_formula_are_neutralised(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo(1).save(tmp_path / "=evil.png")
    photo(2).save(tmp_path / "@home.png")
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", "out.csv", "=evil.png", "@home.png"]) == 0
    cells = [row[0] for row in csv.reader(open("out.csv", encoding="utf-8", newline=""))][1:]
    assert cells == ["'=evil.png", "'@home.png"]
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", "out.csv", "--resume", "=evil.png"]) == 0
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", "metadata.csv", "=evil.png"]) == 0
    names = [row[0] for row in csv.reader(open("metadata.csv", encoding="utf-8", newline=""))][1:]
    assert names == ["./=evil.png"]


def test_app_downloads_are_spreadsheet_safe(tmp_path):
    rows = [{"file": "=HYPERLINK(1).png", "caption": "@SUM(A1)", "flags": ["short", "duplicate"]},
            {"file": "ok.png", "caption": "", "error": "-1", "flags": ["error"]}]
    csv_path, jsonl_path = write_downloads(rows, tmp_path)
    cells = list(csv.reader(open(csv_path, encoding="utf-8", newline="")))
    assert cells == [["file", "caption", "flags", "error"], ["'=HYPERLINK(1).png", "'@SUM(A1)", "short | duplicate", ""],
                     ["ok.png", "", "error", "'-1"]]
    assert json.loads(open(jsonl_path).readline())["file"] == "=HYPERLINK(1).png"  # JSON is data, not formulas


class RecordingCaptioner:
    """Stands in for the Captioner: notes whether an image was decoded while a batch was captioned."""

    def __init__(self, captioner):
        self.real, self.image_limits = captioner, captioner.image_limits
        self.captioning = threading.Event()
        self.decoded_while_captioning = threading.Event()

    def caption(self, images, settings):
        self.captioning.set()
        self.decoded_while_captioning.wait(timeout=5)  # serial decoding would never set it: 5 s a batch
        self.captioning.clear()
        return self.real.caption(images, settings)


def test_images_decode_ahead_of_the_model(captioner, folder, monkeypatch):
    import captioner.bulk.pipeline as bulk

    fake = RecordingCaptioner(captioner)
    real_decode = bulk.decode

    def slow_decode(item, model, *options):
        time.sleep(0.2)
        if fake.captioning.is_set():
            fake.decoded_while_captioning.set()
        return real_decode(item, model, *options)

    monkeypatch.setattr(bulk, "decode", slow_decode)
    paths = [folder / f"p{i}.jpg" for i in range(5)]
    started = time.perf_counter()
    items = [Item(str(p), str(p)) for p in paths]
    batches = list(caption_batches(fake, items, CaptionSettings(), batch_size=2, ahead=1))
    assert fake.decoded_while_captioning.is_set() and time.perf_counter() - started < 5
    assert [r.texts[0] for batch in batches for r in batch] == expected_captions(captioner, paths)


def test_a_folder_run_names_the_files_that_are_not_images(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "phone export"
    (folder / "trip").mkdir(parents=True)
    photo(1, (24, 24)).save(folder / "a.jpg")
    photo(2, (24, 24)).save(folder / "trip" / "b.png")
    (folder / "a.txt").write_text("a caption file beside its photo: not left out")
    (folder / "metadata.jsonl").write_text('{"file_name": "a.jpg", "text": "x"}\n')
    (folder / "trip" / "clip.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  ")
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    out = folder / "captions.jsonl"  # the run's own output, in the folder: not counted either
    left_out = [str(folder / ".DS_Store"), str(folder / "notes.pdf"), str(folder / "trip" / "clip.mov")]
    args = ["caption", "--model", str(tiny_checkpoint), "--output", str(out), str(folder)]
    assert main([*args, "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "captioned 2, skipped 0 as already done, skipped 3 files that are not images, failed 0" in err, err[-600:]
    assert [line.removeprefix("not an image: ") for line in err.splitlines() if line.startswith("not an image")] \
        == left_out
    assert main([*args, "--resume", "--json"]) == 0  # and on resume, in the JSON summary
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["skipped"] == 2 and summary["not_images"] == left_out
