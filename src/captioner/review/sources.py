"""A set to review, from a folder or a .zip, with the captions it already has.

Captions already there are read with the readers fine-tuning uses (`caption_files.py`): an
imagefolder `metadata.jsonl` or `metadata.csv` in any folder of the set, and sidecar files
(photo.jpg -> photo.txt). Where both give an image a caption, the sidecar wins: it is the file
a person edits for that one image. Files that are neither images nor caption files are counted
and named, never dropped in silence.

A .zip comes from a stranger: every entry is checked before anything is written (no absolute
path, no `..`, no link, no duplicate, not too many entries, not too many bytes), then written
under the given folder with its size counted as it is read, so a header that lies about its size
stops at the limit. Names that are not UTF-8 are read as cp437, as `zipfile` does.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..caption_files import METADATA_NAMES, DatasetError, imagefolder, read_sidecar
from ..errors import one_line
from ..images import IMAGE_SUFFIXES
from .edits import ReviewError
from .rows import Row

SIDECAR = ".txt"
OWN_FILES = ".captioner"  # the review's own files beside a folder's photos start so
MAX_ENTRIES = 10_000
MAX_ZIP_BYTES = 2 * 1024**3  # unpacked, the whole archive
CHUNK = 1024 * 1024


@dataclass
class FoundSet:
    """What a folder holds: a row per image (with its caption if it has one) and what was left out."""

    root: Path
    rows: list[Row]
    not_images: list[str] = field(default_factory=list)  # names inside the set
    caption_sources: dict[str, str] = field(default_factory=dict)  # row name -> file its caption came from


def read_folder(root: Path, sidecar: str | None = SIDECAR) -> FoundSet:
    """Every image under `root` (recursively) as a row, in name order, and every other file named.
    With `sidecar` None, captions come from the metadata files alone."""
    root = Path(root)
    if not root.is_dir():
        raise ReviewError(f"{root} is not a folder")
    images: list[Path] = []
    others: list[str] = []
    metadata: list[Path] = []
    for folder, subfolders, files in os.walk(root, onerror=_walk_error):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(OWN_FILES))
        for name in sorted(files):
            path = Path(folder, name)
            if name.startswith(OWN_FILES) or (name.startswith(".") and name.endswith(".partial")):
                continue  # the review's own history, a caption file being replaced this moment
            if not path.is_file():  # a dangling link, a pipe: nothing to read, and reading a pipe hangs
                others.append(_name(root, path))
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(path)
            elif name in METADATA_NAMES:
                metadata.append(path)
            elif sidecar is None or path.suffix.lower() != sidecar.lower() or not _has_image(path):
                others.append(_name(root, path))
    if not images:
        raise ReviewError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    captions: dict[Path, tuple[str, str]] = {}
    for file in metadata:
        try:
            for image, text, _where in imagefolder(file):
                if image is not None and isinstance(text, str):
                    captions[Path(os.path.normpath(image))] = (text.strip(), _name(root, file))
        except DatasetError as error:
            raise ReviewError(str(error)) from None
    found = FoundSet(root, [], others)
    for image in images:
        name = _name(root, image)
        text, source = None, None
        side = image.with_suffix(sidecar) if sidecar else None
        try:
            text = read_sidecar(side) if side else None
        except DatasetError as error:
            raise ReviewError(str(error)) from None
        if text is not None:
            source = _name(root, side)
        elif image in captions:
            text, source = captions[image]
        row = Row(name, str(image), text or "", "existing" if text is not None else "")
        found.rows.append(row)
        if source:
            found.caption_sources[name] = source
    return found


def _has_image(caption_file: Path) -> bool:
    return any(caption_file.with_suffix(s).exists() or caption_file.with_suffix(s.upper()).exists()
               for s in IMAGE_SUFFIXES)


def _name(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _walk_error(error: OSError) -> None:
    raise ReviewError(f"cannot read {error.filename}: {error.strerror or error}")


def extract_zip(archive: Path, into: Path, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_ZIP_BYTES,
                max_file_bytes: int | None = None) -> list[str]:
    """Unpack the images and caption files of `archive` under `into` (a fresh folder of the app's
    own), refusing the whole archive with one line if any entry is unsafe; returns the names of
    the entries left packed (files that are neither images nor captions), to be counted.
    A refusal found while unpacking takes away what was unpacked."""
    if into.exists():
        raise ReviewError(f"{into} exists already; unpack into a fresh folder")
    try:
        return _extract(archive, into, max_entries, max_bytes, max_file_bytes)
    except ReviewError:
        shutil.rmtree(into, ignore_errors=True)
        raise


def _extract(archive: Path, into: Path, max_entries: int, max_bytes: int, max_file_bytes: int | None) -> list[str]:
    try:
        with zipfile.ZipFile(archive) as zipped:
            entries, skipped = _checked_entries(zipped, max_entries, max_bytes, max_file_bytes)
            into.mkdir(parents=True, exist_ok=True)
            written = 0
            for info, name in entries:
                target = into.joinpath(*name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                limit = min(info.file_size, max_file_bytes or info.file_size)
                with zipped.open(info) as source, open(target, "xb") as sink:
                    size = 0
                    while chunk := source.read(CHUNK):
                        size += len(chunk)
                        written += len(chunk)
                        if size > limit or written > max_bytes:
                            raise ReviewError(f"{archive.name}: {one_line(name)} unpacks to more than it says; "
                                              "the archive was refused")
                        sink.write(chunk)
    except zipfile.BadZipFile as error:
        raise ReviewError(f"{archive.name} is not a readable .zip ({error})") from None
    except (OSError, EOFError, zipfile.LargeZipFile, NotImplementedError) as error:
        raise ReviewError(f"{archive.name} could not be unpacked: {getattr(error, 'strerror', None) or error}") from None
    return skipped


def _checked_entries(zipped: zipfile.ZipFile, max_entries: int, max_bytes: int,
                     max_file_bytes: int | None) -> tuple[list[tuple[zipfile.ZipInfo, str]], list[str]]:
    infos = zipped.infolist()
    if len(infos) > max_entries:
        raise ReviewError(f"the archive has {len(infos)} entries; at most {max_entries}")
    wanted, skipped, seen, total = [], [], set(), 0
    for info in infos:
        name = _safe_name(info)
        if name is None:
            continue  # a folder entry
        if name.casefold() in seen:
            raise ReviewError(f"the archive holds {one_line(name)} twice; refused")
        seen.add(name.casefold())
        if info.flag_bits & 0x1:
            raise ReviewError(f"{one_line(name)} is encrypted; unpack the archive yourself and give the folder")
        suffix = posixpath.splitext(name)[1].lower()
        if suffix not in IMAGE_SUFFIXES and suffix != SIDECAR and posixpath.basename(name) not in METADATA_NAMES:
            skipped.append(name)  # not unpacked, but counted and named
            continue
        if max_file_bytes is not None and info.file_size > max_file_bytes and suffix in IMAGE_SUFFIXES:
            raise ReviewError(f"{one_line(name)} is {info.file_size / 2**20:.0f} MB unpacked; "
                              f"at most {max_file_bytes / 2**20:.0f} MB an image")
        total += info.file_size
        if total > max_bytes:
            raise ReviewError(f"the archive unpacks to more than {max_bytes / 2**30:.1f} GB; refused")
        wanted.append((info, name))
    return wanted, skipped


def _safe_name(info: zipfile.ZipInfo) -> str | None:
    """The entry's path inside the set, or None for a folder; an unsafe entry refuses the archive."""
    raw = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ReviewError(f"{one_line(raw)} is a link; archives with links are refused")
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        raise ReviewError(f"{one_line(raw)} is an absolute path; the archive was refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ReviewError(f"{one_line(raw)} points outside the archive's folder; the archive was refused")
    if info.is_dir() or not parts:
        return None
    if parts[0] == "__MACOSX":
        return None  # the resource forks macOS's zip adds: a copy of each name, never a photo
    return "/".join(parts)
