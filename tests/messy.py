"""A messy folder, as real disks hold them, and how to read back what the CLI wrote about it."""

import csv
import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from captioner.exports import path_from_text, spreadsheet_unsafe
from helpers import encode, photo

# A name from an old camera, a Windows share or a zip file: bytes that are not UTF-8.
RAW_NAME = os.fsdecode(b"caf\xe9 \xff photo.jpg")
GOOD_NAMES = [
    "plain.jpg", RAW_NAME, "new\nline.png", "tab\there.png", 'say "cheese", it\'s.jpg', '=HYPERLINK("x").png',
    "-starts-with-a-dash.jpg", " spaces around .png", "émoji 📷.webp", "UPPER.JPG", "100% #1 ?.png",
    "back\\slash.png", "+plus.gif", "@at.bmp", "'quoted.tiff",
]
FORMATS = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP", ".tiff": "TIFF"}


def messy_folder(root: Path, copies: int = 1) -> tuple[list[str], list[str]]:
    """What real disks hold besides photos. Returns the paths the CLI names (as it lists them) of
    the images, and of the files that must come back as error rows; the rest must not be listed."""
    good, bad = [], []
    for copy in range(copies):
        folder = root / f"copy {copy:03d}" if copies > 1 else root
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(GOOD_NAMES):
            (folder / name).write_bytes(encode(photo(i + copy, (24, 24)), FORMATS[Path(name).suffix.lower()]))
            good.append(folder / name)
        (folder / "album.jpg").mkdir()  # a folder whose name looks like a photo
        (folder / "album.jpg" / "inside.png").write_bytes(encode(photo(40, (24, 24))))
        good.append(folder / "album.jpg" / "inside.png")
        os.symlink(folder / "plain.jpg", folder / "alias.jpg")  # a link to a photo is a photo
        good.append(folder / "alias.jpg")
        os.symlink(folder / "gone.jpg", folder / "dangling.jpg")  # not listed: no file behind it
        os.mkfifo(folder / "pipe.jpg")  # not listed: reading it would hang
        junk = {
            "._plain.jpg": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ",  # macOS AppleDouble
            "empty.png": b"",
            "truncated.jpg": encode(photo(5, (64, 64)), "JPEG")[:200],
            "saved-page.jpg": b"<!DOCTYPE html><html><body>Access denied</body></html>",
            os.fsdecode(b"\xff\xfe.png"): b"GIF87a",
        }
        for name, data in junk.items():
            (folder / name).write_bytes(data)
            bad.append(folder / name)
        for name in (".DS_Store", "Thumbs.db", "desktop.ini", "notes.txt", "photo.jpg.part"):
            (folder / name).write_bytes(b"\x00junk")
    return sorted(map(str, good)), sorted(map(str, bad))


def read_rows(out: Path) -> list[dict]:
    """Rows as written, with each path turned back into the name the file system gave."""
    name = out.name.lower()
    if name.endswith(".parquet"):
        rows = pq.read_table(out).to_pylist()
    elif name.endswith(".csv"):
        with out.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    key = "file_name" if name.startswith("metadata.") else "path"
    for row in rows:
        row[key] = path_from_text(spreadsheet_unsafe(row[key]))
        if key == "file_name":
            row[key] = str(out.parent / row[key])
        row["path"] = row.pop(key)
    return rows


def assert_each_once(rows: list[dict], good: list[str], bad: list[str], errors: bool = True) -> None:
    paths = [row["path"] for row in rows]
    assert sorted(paths) == sorted(good + bad if errors else good), set(paths) ^ set(good + bad)
    for row in rows:
        if row["path"] in good:
            assert row.get("caption") or row.get("text"), row
        else:
            assert row.get("error"), row
