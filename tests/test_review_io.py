"""A review set in and out: a folder or a zip with the captions it has, unsafe zips refused whole,
and exports that `datasets` and `captioner train --data` read as they are."""

import csv
import json
import os
import stat
import zipfile

import pytest

from captioner.review import BulkEdit, ReviewError, ReviewSet
from captioner.review.exports import imagefolder_zip, sidecar_zip, table
from captioner.review.sources import extract_zip, read_folder
from helpers import encode, photo

RAW = os.fsdecode(b"caf\xe9.png")  # a name that is not UTF-8


def partly_captioned(root):
    """Nested folders, odd names, captions in two layouts, and files that are not images."""
    (root / "trip" / "day 1").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "trip/b.png", "trip/day 1/c d.webp", "=SUM(1).png", RAW, "trip/e.jpg"]):
        (root / name).write_bytes(encode(photo(i, (32, 24)), {"jpg": "JPEG", "png": "PNG", "ebp": "WEBP"}[name[-3:]]))
    (root / "a.txt").write_text("a person's caption for a\n", encoding="utf-8")
    (root / "trip" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "b.png", "text": "from the metadata"}) + "\n"
        + json.dumps({"file_name": "e.jpg", "text": "metadata loses to the sidecar"}) + "\n", encoding="utf-8")
    (root / "trip" / "e.txt").write_text("the sidecar wins", encoding="utf-8")
    (root / "notes.docx").write_bytes(b"PK\x03\x04 not a photo")
    (root / "broken.jpg").write_bytes(b"not really a jpeg")
    return root


def test_a_folder_keeps_its_captions_and_names_what_is_not_an_image(tmp_path):
    found = read_folder(partly_captioned(tmp_path / "set"))
    rows = {r.name: r for r in found.rows}
    assert sorted(rows) == sorted(["a.jpg", "broken.jpg", "trip/b.png", "trip/day 1/c d.webp", "=SUM(1).png", RAW,
                                   "trip/e.jpg"])
    assert (rows["a.jpg"].caption, rows["a.jpg"].origin) == ("a person's caption for a", "existing")
    assert (rows["trip/b.png"].caption, rows["trip/b.png"].origin) == ("from the metadata", "existing")
    assert rows["trip/e.jpg"].caption == "the sidecar wins"
    assert found.caption_sources == {"a.jpg": "a.txt", "trip/b.png": "trip/metadata.jsonl", "trip/e.jpg": "trip/e.txt"}
    assert found.not_images == ["notes.docx"]
    review = ReviewSet(found.rows)
    assert sorted(r.name for r in review.uncaptioned()) == sorted(["broken.jpg", "trip/day 1/c d.webp", "=SUM(1).png", RAW])


def test_a_folder_without_images_or_with_a_pipe_is_one_message(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ReviewError, match="holds no images"):
        read_folder(tmp_path / "empty")
    with pytest.raises(ReviewError, match="is not a folder"):
        read_folder(tmp_path / "missing")
    root = tmp_path / "odd"
    root.mkdir()
    photo(1).save(root / "x.png")
    os.mkfifo(root / "x.txt")  # a caption file that is a pipe: reading it would hang
    os.symlink(root / "gone.jpg", root / "dangling.jpg")
    found = read_folder(root)
    assert [(r.name, r.origin) for r in found.rows] == [("x.png", "")]
    assert sorted(found.not_images) == ["dangling.jpg", "x.txt"]


def zip_of(path, entries, links=()):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def test_a_zip_with_nested_folders_unpacks_and_reads_like_a_folder(tmp_path):
    source = partly_captioned(tmp_path / "set")
    # A name that is not UTF-8 reaches a zip as a Windows zipper writes it, read back as cp437.
    def as_zipped(name):
        return os.fsencode(name).decode("cp437") if name == RAW else name

    entries = {as_zipped(p.relative_to(source).as_posix()): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    entries["__MACOSX/._a.jpg"] = b"\x00\x05\x16\x07"
    unpacked = tmp_path / "out"
    assert extract_zip(zip_of(tmp_path / "set.zip", entries), unpacked) == ["notes.docx"]  # named, not unpacked
    found = read_folder(unpacked)
    assert sorted(r.name for r in found.rows) == sorted(as_zipped(r.name) for r in read_folder(source).rows)
    assert {r.name: r.caption for r in found.rows}["trip/b.png"] == "from the metadata"
    assert not (unpacked / "__MACOSX").exists() and not (unpacked / "notes.docx").exists()


@pytest.mark.parametrize("entries, links, message", [
    ({"../../escape.jpg": b"x"}, (), "points outside the archive's folder"),
    ({"ok/../../escape.jpg": b"x"}, (), "points outside"),
    ({"/etc/cron.d/x.jpg": b"x"}, (), "is an absolute path"),
    ({"C:\\Windows\\x.jpg": b"x"}, (), "is an absolute path"),
    ({"..\\..\\x.jpg": b"x"}, (), "points outside"),
    ({}, ("photo.jpg",), "is a link"),
    ({"a.jpg": b"1", "A.JPG": b"2"}, (), "holds A.JPG twice"),
])
def test_an_unsafe_zip_is_refused_whole_and_nothing_is_written_outside(tmp_path, entries, links, message):
    archive = zip_of(tmp_path / "bad.zip", {"first.jpg": encode(photo(1)), **entries}, links)
    inside = tmp_path / "app" / "upload"
    with pytest.raises(ReviewError, match=message):
        extract_zip(archive, inside)
    assert not inside.exists()  # refused before anything was written
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["bad.zip"]


def test_zip_bombs_and_too_many_entries_are_refused(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("huge.png", b"\x00" * (30 * 2**20))  # 30 MB of zeros, a few KB packed
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ReviewError, match="huge.png is 30 MB unpacked; at most 20 MB an image"):
        extract_zip(bomb, tmp_path / "a", max_file_bytes=20 * 2**20)
    with pytest.raises(ReviewError, match="unpacks to more than"):
        extract_zip(bomb, tmp_path / "b", max_bytes=10 * 2**20)
    many = zip_of(tmp_path / "many.zip", {f"{i}.jpg": b"x" for i in range(30)})
    with pytest.raises(ReviewError, match="the archive has 30 entries; at most 20"):
        extract_zip(many, tmp_path / "c", max_entries=20)
    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04 and then nothing")
    with pytest.raises(ReviewError, match="not.zip is not a readable .zip"):
        extract_zip(tmp_path / "not.zip", tmp_path / "d")


def test_a_zip_whose_header_lies_about_its_size_stops_at_the_limit(tmp_path):
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as packed:
        packed.writestr("a.png", b"\x00" * 4_000_000)
    data = bytearray(archive.read_bytes())
    for header, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size, both headers
        at = data.find(header)
        data[at + offset: at + offset + 4] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(ReviewError, match="liar.zip"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # what was unpacked before the refusal is gone


def reviewed(tmp_path):
    found = read_folder(partly_captioned(tmp_path / "set"))
    review = ReviewSet(found.rows)
    review.set_errors({"broken.jpg": "not an image"})
    review.set_model_captions({r.name: (f"model caption {i}", -0.1 * i) for i, r in enumerate(review.uncaptioned())})
    review.apply(BulkEdit("prefix", text="tok, "))
    review.edit("trip/b.png", "tok, reviewed by hand")
    return review


def test_the_imagefolder_export_is_read_by_datasets_and_by_train(tmp_path):
    review = reviewed(tmp_path)
    report = imagefolder_zip(review, tmp_path / "export.zip")
    assert report.exported == 6 and report.left_out == [("broken.jpg", "could not be read: not an image")]
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(tmp_path / "export.zip") as archive:
        archive.extractall(unpacked)
    expected = {r.name.replace(RAW, "caf\\xe9.png"): r.caption for r in review.rows.values() if not r.error}

    import datasets

    loaded = datasets.load_dataset("imagefolder", data_dir=str(unpacked), split="train")
    assert sorted(loaded["text"]) == sorted(expected.values())
    assert loaded[0]["image"].size == (32, 24)
    from captioner.train.data import load_dataset

    dataset = load_dataset(unpacked)
    assert {str(e.image.relative_to(unpacked)): e.caption for e in dataset.examples} == expected


def test_the_sidecar_export_and_the_tables(tmp_path):
    review = reviewed(tmp_path)
    sidecar_zip(review, tmp_path / "kohya.zip")
    with zipfile.ZipFile(tmp_path / "kohya.zip") as archive:
        names = set(archive.namelist())
        assert "trip/b.txt" in names and "broken.jpg" not in names and "broken.txt" not in names
        assert archive.read("trip/b.txt") == b"tok, reviewed by hand\n"
        assert archive.read("trip/day 1/c d.webp") == (tmp_path / "set" / "trip" / "day 1" / "c d.webp").read_bytes()
    table(review, tmp_path / "table.csv")
    with (tmp_path / "table.csv").open(encoding="utf-8", newline="") as handle:
        rows = {r["file"]: r for r in csv.DictReader(handle)}
    assert "'=SUM(1).png" in rows  # spreadsheet-safe: no formula runs when the table is opened
    assert rows["broken.jpg"]["caption"] == "" and rows["broken.jpg"]["error"] == "not an image"
    assert rows["trip/b.png"]["origin"] == "edited"
    table(review, tmp_path / "table.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "table.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["file"] for r in lines} == set(review.rows) and all(isinstance(r["flags"], list) for r in lines)
    import pyarrow.parquet as pq

    table(review, tmp_path / "table.parquet")
    parquet = pq.read_table(tmp_path / "table.parquet").to_pylist()
    assert len(parquet) == 7 and {r["file"] for r in parquet} >= {"caf\\xe9.png", "trip/b.png"}
    with pytest.raises(ReviewError, match="a table is one of"):
        table(review, tmp_path / "table.xlsx")


def test_exports_of_nothing_and_clashing_caption_files_are_one_message(tmp_path):
    folder = tmp_path / "uncaptioned"
    folder.mkdir()
    photo(1).save(folder / "x.jpg")
    photo(2).save(folder / "x.png")
    review = ReviewSet(read_folder(folder).rows)
    with pytest.raises(ReviewError, match="nothing to export: no image in this set has a caption yet"):
        imagefolder_zip(review, tmp_path / "out.zip")
    review.set_model_captions({"x.jpg": ("one", None), "x.png": ("two", None)})
    with pytest.raises(ReviewError, match="x.jpg and x.png would share the caption file x.txt"):
        sidecar_zip(review, tmp_path / "out.zip")
    with pytest.raises(ReviewError, match="the set is empty"):
        table(ReviewSet([]), tmp_path / "t.csv")
