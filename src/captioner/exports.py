"""Caption files that are written as work finishes and can be read back to resume.

Every writer appends whole batches and flushes them, so a killed run leaves every finished batch
on disk and at most a torn last line, which `open_output(..., resume=True)` cuts off before
appending. Parquet cannot be appended to (its footer is written last), so its rows go to a
JSON-lines journal beside it and the Parquet file is built from the journal at the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from .errors import CaptionError

# OWASP "CSV injection": a cell starting with one of these runs as a formula in a spreadsheet.
# The quote itself is included so that neutralising can be undone exactly when resuming.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
CSV_COLUMNS = ("path", "caption", "error", "flags")  # flags last: scripts reading by position still work


class OutputError(CaptionError):
    """An output file cannot be written, or is not one this tool can resume."""


# Linux file names are bytes; Python hands one that is not UTF-8 over with each stray byte as a
# lone surrogate (U+DC80..U+DCFF), which no UTF-8 file can hold. JSON writes it as a \udcXX escape
# (json.loads gives the same str back); text cells (CSV, Parquet) write the byte as \xNN.
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_BYTE = re.compile(rb"\\x([89a-f][0-9a-f])")


def json_line(row: dict) -> str:
    """One JSON line, UTF-8 safe: readable text, and a name that is not UTF-8 as \\u escapes."""
    text = json.dumps(row, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


def path_text(text: str) -> str:
    """`text` as valid UTF-8: each byte of a file name that is not UTF-8 becomes `\\xNN` (80-ff).

    >>> path_text("caf\\udce9.jpg")
    'caf\\\\xe9.jpg'
    """
    if not _SURROGATE.search(text):
        return text
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name holds: show it as its escape
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def path_from_text(text: str) -> str:
    """Undo `path_text`: the name the file system gave, for resuming and for opening the file.
    (A name that literally holds backslash-x-and-two-hex-digits-from-80 reads back as that byte.)"""
    if "\\x" not in text:
        return text
    raw = _ESCAPED_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8"))
    return os.fsdecode(raw)


def spreadsheet_safe(text: str) -> str:
    """Prefix a quote to a cell that a spreadsheet would read as a formula.

    >>> spreadsheet_safe("=HYPERLINK(1)"), spreadsheet_safe("a cat")
    ("'=HYPERLINK(1)", 'a cat')
    """
    return "'" + text if text.startswith(FORMULA_START) else text


def spreadsheet_unsafe(text: str) -> str:
    """Undo `spreadsheet_safe` (the key a resumed run compares)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


def write_csv_rows(handle, rows: Iterable[dict], columns: Iterable[str] = CSV_COLUMNS) -> None:
    """CSV rows with every cell neutralised for spreadsheets; shared by the CLI and the app."""
    writer = csv.writer(handle)
    for row in rows:
        writer.writerow([spreadsheet_safe(_cell(row.get(column))) for column in columns])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " | ".join(path_text(str(v)) for v in value)
    return path_text(str(value))


class AppendFile:
    """A text file that grows by whole batches; `rows` are what is already in it."""

    def __init__(self, path: Path, header: str = "", quoted_newlines: bool = False) -> None:
        self.path = path
        self.header = header
        self.quoted_newlines = quoted_newlines  # CSV: a quoted cell may hold a newline (a file name can)
        self.repaired = False
        self.handle: io.TextIOWrapper | None = None

    def start(self, resume: bool) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume and self.path.exists():
                self.repaired = _cut_torn_csv(self.path) if self.quoted_newlines else _cut_torn_tail(self.path)
            else:
                self.path.write_text(self.header, encoding="utf-8")
            self.handle = self.path.open("a", encoding="utf-8", newline="")
        except OSError as error:
            raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from None

    def append(self, text: str) -> None:
        assert self.handle is not None, "start() first"
        try:
            self.handle.write(text)  # one write per batch: a kill tears at most the last line
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as error:  # the disk is full, or gone: the run stops, what is written stays
            raise OutputError(
                f"cannot write {self.path}: {error.strerror or error}; the rows written so far are kept: "
                "make room and run the same command again with --resume"
            ) from None

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            try:
                handle.close()
            except OSError:
                pass  # what could not be flushed was already reported by append()


def _cut_torn_tail(path: Path) -> bool:
    """Drop a last line that has no newline (a write cut short by a kill). True if one was cut."""
    with path.open("rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return False
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return False
        # Read back in chunks to the last newline; a header-only or one-line file may have none.
        position = size
        while position > 0:
            step = min(65536, position)
            handle.seek(position - step)
            chunk = handle.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                handle.truncate(position - step + cut + 1)
                return True
            position -= step
        handle.truncate(0)
        return True


def _cut_torn_csv(path: Path) -> bool:
    """`_cut_torn_tail` for CSV, whose quoted cells may hold newlines: a record ends at a newline
    outside quotes (an even count of `"` so far, as RFC 4180 doubles a quote inside a cell)."""
    data = path.read_bytes()
    end, quotes, position = 0, 0, 0
    while (newline := data.find(b"\n", position)) >= 0:
        quotes += data.count(b'"', position, newline)
        position = newline + 1
        if quotes % 2 == 0:
            end = position
    if end == len(data):
        return False
    with path.open("rb+") as handle:
        handle.truncate(end)
    return True


def read_jsonl_keys(path: Path, key: str) -> Iterator[str]:
    """Each row's `key`, in order; a line that is no row of ours stops the resume with a message."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or key not in row:
                raise OutputError(
                    f"line {number} of {path} is not a row this tool wrote (no JSON object with "
                    f"'{key}'); fix or remove that line, or start over with --overwrite"
                )
            yield str(row[key])  # a name that is not UTF-8 comes back from its \udcXX escapes


def read_csv_keys(path: Path, key: str) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        if key not in header:
            raise OutputError(
                f"{path} has no '{key}' column, so it was not written by this tool; "
                "choose another --output, or start over with --overwrite"
            )
        column = header.index(key)
        for number, cells in enumerate(reader, 2):
            if len(cells) != len(header):
                raise OutputError(
                    f"row {number} of {path} has {len(cells)} cells, not {len(header)}; "
                    "fix or remove it, or start over with --overwrite"
                )
            yield path_from_text(spreadsheet_unsafe(cells[column]))


def csv_header(columns: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(list(columns))
    return buffer.getvalue()


def write_downloads(rows: list[dict[str, str]], directory: Path) -> tuple[str, str]:
    """The app's many-images downloads: captions.csv (spreadsheet-safe) and captions.jsonl."""
    csv_path, jsonl_path = directory / "captions.csv", directory / "captions.jsonl"
    columns = ("file", "caption", "flags", "error")
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        handle.write(csv_header(columns))
        write_csv_rows(handle, rows, columns)
    jsonl_path.write_text("".join(json_line({c: r.get(c) for c in columns}) for r in rows), encoding="utf-8")
    return str(csv_path), str(jsonl_path)
