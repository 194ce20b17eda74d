"""Where bulk results go: JSON lines, CSV, the imagefolder metadata file, caption files beside the
images, or the terminal. Parquet (a file that is written once, at the end) lives in parquet.py.

Each writer takes a mode when it starts: "new" refuses an existing file and leaves it untouched,
"resume" repairs a torn last line and remembers what is done, "overwrite" starts over. Writers
append whole batches and flush them, so a killed run keeps every finished batch.
"""

from __future__ import annotations

import errno
import os
import posixpath
import sys
from pathlib import Path
from typing import Sequence

from ..caption_files import write_atomically
from ..exports import (
    CSV_COLUMNS, FORMULA_START, AppendFile, OutputError, csv_header, json_line, path_text, read_csv_keys,
    read_jsonl_keys, write_csv_rows,
)
from ..fetch import is_url
from ..images import IMAGE_SUFFIXES
from .pipeline import Item, Result

MODES = ("new", "resume", "overwrite")
# A caption file that cannot be written for one of these reasons stops the run: the next would fail too.
_RUN_ENDING = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
SIDECAR_POLICIES = ("skip", "overwrite", "append", "prepend")


def refuse_existing(path: Path, mode: str) -> None:
    if mode == "new" and path.exists():
        raise OutputError(f"{path} already exists; add --resume to go on from it, or --overwrite to replace it")


class RowsOutput:
    """`--output FILE.jsonl|.csv`: one row per image, keyed by its path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_csv = path.suffix.lower() == ".csv"
        self.file = AppendFile(path, csv_header(CSV_COLUMNS) if self.is_csv else "", quoted_newlines=self.is_csv)
        self.keys: set[str] = set()

    def start(self, mode: str) -> None:
        refuse_existing(self.path, mode)
        resume = mode == "resume" and self.path.exists() and self.path.stat().st_size > 0
        if resume and self.is_csv:
            self._check_columns()
        self.file.start(resume)
        if resume:
            self.keys = set(self.read_keys())

    def _check_columns(self) -> None:
        """Rows appended under another header would not line up with it (a file from an older
        version, before the flags column)."""
        with self.path.open(encoding="utf-8", newline="") as handle:
            first = handle.readline()
        if first != self.file.header and first.rstrip("\r\n") != self.file.header.rstrip("\r\n"):
            raise OutputError(f"{self.path} has the columns {first.strip()!r}, not {self.file.header.strip()!r}; "
                              "start over with --overwrite, or write to another --output")

    def read_keys(self):
        return read_csv_keys(self.path, "path") if self.is_csv else read_jsonl_keys(self.path, "path")

    def done(self, item: Item) -> bool:
        return item.key in self.keys

    def write(self, results: Sequence[Result]) -> None:
        if self.is_csv:
            self.file.append(_csv_text([r.row() for r in results], CSV_COLUMNS))
        else:
            self.file.append("".join(json_line(r.row()) for r in results))

    def finish(self) -> None:
        pass

    def close(self) -> None:
        self.file.close()


class MetadataOutput(RowsOutput):
    """`--output DIR/metadata.jsonl|.csv`: the imagefolder layout (`file_name` relative to DIR, `text`),
    which `datasets`' imagefolder loader and `captioner train --data DIR` read. A failed image gets
    no row (a loader would stop at it); several captions of one image are several rows."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.root = path.parent.absolute()
        self.file.header = csv_header(("file_name", "text")) if self.is_csv else ""

    def check(self, items: Sequence[Item]) -> None:
        for item in items:
            if is_url(item.image):
                raise OutputError(f"{self.path.name} lists local image files, and {item.key} is a link; use another --output")
            if self.file_name(item).startswith("../"):
                raise OutputError(
                    f"{self.path.name} must sit in a folder that holds every image; {item.key} is outside "
                    f"{self.root}"
                )

    def file_name(self, item: Item) -> str:
        return Path(os.path.relpath(Path(item.image).absolute(), self.root)).as_posix()

    def read_keys(self):
        keys = read_csv_keys(self.path, "file_name") if self.is_csv else read_jsonl_keys(self.path, "file_name")
        return (posixpath.normpath(key) for key in keys)

    def done(self, item: Item) -> bool:
        return self.file_name(item) in self.keys

    def write(self, results: Sequence[Result]) -> None:
        rows = [{"file_name": self.file_name(r.item), "text": text} for r in results if r.error is None for text in r.texts]
        if self.is_csv:
            # "./" keeps a loader's path intact and stops a spreadsheet reading the name as a formula.
            for row in rows:
                if row["file_name"].startswith(FORMULA_START):
                    row["file_name"] = "./" + row["file_name"]
            self.file.append(_csv_text(rows, ("file_name", "text")))
        else:
            self.file.append("".join(json_line(row) for row in rows))


def _csv_text(rows: list[dict], columns) -> str:
    import io

    buffer = io.StringIO()
    write_csv_rows(buffer, rows, columns)
    return buffer.getvalue()


class Sidecars:
    """`--sidecar .txt`: the caption in a UTF-8 file beside each image (or under `output_dir`,
    mirroring the tree), as LoRA and fine-tuning trainers read them. Several captions: one a line.

    `policy` for an image whose caption file exists: skip (default: not captioned, file untouched,
    so a person's caption is never lost), overwrite, append or prepend (joined with one space).
    """

    def __init__(self, extension: str, policy: str = "skip", output_dir: Path | None = None) -> None:
        self.extension = extension if extension.startswith(".") else "." + extension
        if self.extension.lower() in IMAGE_SUFFIXES or len(self.extension) < 2 or "/" in self.extension:
            raise OutputError(f"--sidecar {extension} would overwrite images or is not a file extension; use e.g. .txt")
        if policy not in SIDECAR_POLICIES:
            raise OutputError(f"--existing must be one of {', '.join(SIDECAR_POLICIES)}; got {policy!r}")
        self.policy = policy
        self.output_dir = output_dir

    def target(self, item: Item) -> Path:
        base = self.output_dir / item.relative if self.output_dir else Path(item.image)
        return base.with_suffix(self.extension)

    def check(self, items: Sequence[Item]) -> None:
        """Two images that would share a caption file (photo.jpg, photo.png) stop the run first."""
        seen: dict[Path, str] = {}
        for item in items:
            if is_url(item.image):
                raise OutputError(f"caption files go beside local images, and {item.key} is a link; use --output")
            target = self.target(item).absolute()
            if target in seen:
                raise OutputError(f"{seen[target]} and {item.key} would both write {target}; rename one of them")
            seen[target] = item.key

    def start(self, mode: str) -> None:
        pass

    def done(self, item: Item) -> bool:
        return self.policy == "skip" and self.target(item).exists()

    def write(self, results: Sequence[Result]) -> None:
        """Write each caption file. One that cannot be written (a read-only folder, a name too long)
        becomes that image's error, which the other outputs then record (sidecars write first)."""
        for result in results:
            if result.error is None:
                target = self.target(result.item)
                try:
                    self._write_one(target, "\n".join(result.texts))
                except OSError as error:
                    if error.errno in _RUN_ENDING:
                        raise OutputError(
                            f"cannot write {target}: {error.strerror}; the caption files written so far are "
                            "kept: make room and run the same command again"
                        ) from None
                    result.error = f"cannot write its caption file {target.name}: {error.strerror or error}"
                    result.texts, result.scores = [], None

    def _write_one(self, target: Path, text: str) -> None:
        # A person's caption file is kept byte for byte, even when it is not UTF-8.
        data = text.encode("utf-8", "surrogateescape")
        if self.policy in ("append", "prepend") and target.exists():
            old = target.read_bytes().strip()
            if old:
                data = old + b" " + data if self.policy == "append" else data + b" " + old
        write_atomically(target, data + b"\n")  # a kill never leaves half a caption file

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


class Printer:
    """Rows on standard output as they are done: `path<TAB>caption`, or JSON lines with --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def start(self, mode: str) -> None:
        pass

    def done(self, item: Item) -> bool:
        return False

    def write(self, results: Sequence[Result]) -> None:
        for result in results:
            print(format_row(result.row(), self.as_json))
        sys.stdout.flush()

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def format_row(row: dict, as_json: bool) -> str:
    if as_json:
        return json_line(row)[:-1]
    path = _one_line(row["path"])  # a name with a tab or newline must not split the row
    if "error" in row:
        return f"{path}\tERROR: {_one_line(row['error'])}"
    text = row["caption"] if "caption" in row else " | ".join(row["captions"])
    return f"{path}\t{_one_line(text)}"


def _one_line(text: str) -> str:
    """Terminal rows: a tab, newline or carriage return in a name is shown as its escape."""
    return path_text(text).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
