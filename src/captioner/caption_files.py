"""Captions a set of images already has, on disk: imagefolder metadata (metadata.jsonl or
metadata.csv) and caption files beside the images (sidecars, photo.jpg -> photo.txt). One copy of
the readers for every subsystem that meets such a set: fine-tuning reads it, bulk captioning
leaves a person's caption alone, and a review loads and keeps it.

A caption file is replaced whole (`write_atomically`): a kill at any moment leaves either the old
text or the new one, never half of either.
"""

from __future__ import annotations

import csv
import ctypes
import io
import json
import os
from pathlib import Path

from .errors import CaptionError, one_line

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")


class DatasetError(CaptionError):
    """The data folder is missing, empty, or in no format we know."""


FileRow = tuple[Path | None, object, str]  # image, caption (any JSON value), where (for the report)


def imagefolder(metadata: Path) -> list[FileRow]:
    root = metadata.parent
    rows: list[FileRow] = []
    if metadata.suffix == ".jsonl":
        for number, line in enumerate(read_text(metadata).splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                rows.append((None, "", f"{metadata.name}:{number} (not a JSON object)"))
                continue
            rows.append(_folder_row(root, record, f"{metadata.name}:{number}"))
        return rows
    reader = csv.DictReader(io.StringIO(read_text(metadata), newline=""))
    columns = reader.fieldnames or []
    if "file_name" not in columns or not {"text", "caption"} & set(columns):
        raise DatasetError(f"{metadata} needs the columns file_name and text (it has: {', '.join(map(one_line, columns)) or 'none'})")
    try:
        for number, record in enumerate(reader, 2):
            rows.append(_folder_row(root, record, f"{metadata.name}:{reader.line_num}"))
    except csv.Error as error:
        raise DatasetError(f"{metadata} line {reader.line_num}: not valid CSV ({error})") from None
    return rows


def read_text(path: Path) -> str:
    """A data file's text; one that cannot be read is one line naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from None


def _folder_row(root: Path, record: dict, where: str) -> FileRow:
    name = record.get("file_name")
    text = record.get("text")
    if text is None:
        text = record.get("caption") or ""
    return ((root / name) if isinstance(name, str) and name else None, text, where)


def read_sidecar(path: Path) -> str | None:
    """The caption in a sidecar file, stripped; None when there is no such file. A file that is not
    UTF-8 keeps its bytes (as surrogate escapes), so writing it back changes nothing."""
    if not path.is_file():  # none, or a pipe or a folder of that name: nothing to read (and no hang)
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from None
    return data.decode("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8", "surrogateescape").strip()


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: written beside it, flushed to the disk, then renamed over it, so
    a kill or a power cut leaves the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    _sync_folder(path.parent)


def write_all_atomically(files: dict[Path, bytes | None]) -> None:
    """Replace (or, for None, remove) many files, each whole or not at all, as write_atomically
    does one, and all on the disk when this returns. The data of every file goes to the disk in one
    sync of its file system, not one flush a file: a bulk edit of thousands of caption files
    would spend seconds in fsync alone. A kill midway leaves each file old or new, never torn."""
    if len(files) <= 4:
        for path, data in files.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                write_atomically(path, data)
        return
    partials: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            if data is None:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            partials.append((partial, path))
            partial.write_bytes(data)
        _sync_file_systems({p.parent for p, _ in partials})
        for partial, path in partials:
            os.replace(partial, path)
        for path, data in files.items():
            if data is None:
                path.unlink(missing_ok=True)
    finally:
        for partial, _ in partials:
            partial.unlink(missing_ok=True)
    for folder in {p.parent for p in files}:
        _sync_folder(folder)


def _sync_file_systems(folders: set[Path]) -> None:
    """Everything written so far to the file systems holding `folders`, on the disk (Linux's
    syncfs; os.sync, which waits for every file system, where it is missing)."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        os.sync()
        return
    seen: set[int] = set()
    for folder in folders:
        device = os.stat(folder).st_dev
        if device in seen:
            continue
        seen.add(device)
        handle = os.open(folder, os.O_RDONLY)
        try:
            if syncfs(handle) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(folder))
        finally:
            os.close(handle)


def _sync_folder(folder: Path) -> None:
    try:  # the renames themselves, on the disk
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot sync a folder; the renames are still atomic
    finally:
        os.close(handle)
