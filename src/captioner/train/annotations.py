"""Caption files on disk -> rows of (image path, caption, where): imagefolder metadata, COCO
captions (and VizWiz-Captions), TextCaps and Flickr token files. A file that cannot be read is one
DatasetError naming it (and the line or key where there is one); a bad row is a row without an
image or a caption, which data.py counts and reports."""

from __future__ import annotations

import json
from pathlib import Path

from ..caption_files import DatasetError, FileRow, read_text


def coco(annotations: Path) -> list[FileRow]:
    try:
        data = json.loads(read_text(annotations))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{annotations} is not valid JSON: {error.msg} at line {error.lineno}, "
                           f"column {error.colno}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list) and "annotations" not in data:
        return textcaps(annotations, data["data"])
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{annotations} is not COCO captions (an object with 'images' and 'annotations' "
                           "lists) or TextCaps (an object with a 'data' list)")
    names = {image["id"]: image["file_name"] for image in _records(data.get("images"))
             if _is_key(image.get("id")) and isinstance(image.get("file_name"), str)}
    folders = _candidate_folders(annotations.parent)
    rows: list[FileRow] = []
    found: dict[str, Path | None] = {}  # COCO has five captions an image: look each up once
    for number, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            rows.append((None, "", f"{annotations.name} annotation {number} (not an object)"))
            continue
        if annotation.get("is_rejected") or annotation.get("is_precanned"):
            continue  # VizWiz-Captions: captions its annotators rejected or wrote from a template
        key = annotation.get("image_id")
        name = names.get(key) if _is_key(key) else None
        if name and name not in found:
            found[name] = _find(folders, name)
        image = found.get(name) if name else None
        rows.append((image, annotation.get("caption", ""), f"{annotations.name} id {annotation.get('id')}"))
    return rows


def _records(value) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _is_key(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def textcaps(annotations: Path, entries: list) -> list[FileRow]:
    folders = _candidate_folders(annotations.parent)
    rows: list[FileRow] = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict):
            rows.append((None, "", f"{annotations.name} entry {number} (not an object)"))
            continue
        names = [str(entry[k]) for k in ("image_path", "image_name") if entry.get(k)]
        names += [Path(names[0]).name] if names else []
        names += [f"{entry['image_name']}.jpg"] if entry.get("image_name") else []
        image = next(filter(None, (_find(folders, name) for name in names)), None)
        rows.append((image, entry.get("caption_str", ""), f"{annotations.name} entry {number}"))
    return rows


def flickr(tokens: Path) -> list[FileRow]:
    folders = _candidate_folders(tokens.parent)
    rows: list[FileRow] = []
    for number, line in enumerate(read_text(tokens).splitlines(), 1):
        if not line.strip():
            continue
        key, _, caption = line.partition("\t")
        name = key.split("#")[0].strip()
        rows.append((_find(folders, name) if name else None, caption, f"{tokens.name}:{number}"))
    return rows


def _candidate_folders(start: Path) -> list[Path]:
    folders = [start, start.parent]
    for base in (start, start.parent):
        try:
            folders += sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            pass  # a folder we may not list holds no images we could read either
    return list(dict.fromkeys(folders))


def _find(folders: list[Path], name: str) -> Path | None:
    for index, folder in enumerate(folders):
        candidate = folder / name
        if candidate.is_file():
            # A dataset's images are nearly all in one folder: look there first next time.
            folders.insert(0, folders.pop(index))
            return candidate
    return None
