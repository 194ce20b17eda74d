"""Captioning datasets on disk -> (image path, caption) pairs, with bad rows reported, not fatal.

Formats, detected from what `--data` holds:
- imagefolder: a folder with `metadata.jsonl` or `metadata.csv` (`file_name` + `text`), as
  Hugging Face's imagefolder loader reads it; several rows per image are several captions.
- COCO captions: a `captions_*.json` file (or a folder holding one, also under `annotations/`);
  images are looked up next to the JSON, in its parent, and in their sub-folders (`train2017/`...).
- Flickr8k / Flickr30k: a token file (`*.token.txt`, `*.token`) of `name.jpg#N<TAB>caption`
  lines; images next to it or in a sub-folder (`Images/`, `Flicker8k_Dataset/`, `flickr30k-images/`).
"""

from __future__ import annotations

import collections
import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CaptionError, InvalidImage
from .images import load_image


class DatasetError(CaptionError):
    """The data folder is missing, empty, or in no format we know."""


@dataclass(frozen=True)
class Example:
    image: Path
    caption: str


@dataclass
class CaptionDataset:
    examples: list[Example]
    format: str
    skipped: collections.Counter = field(default_factory=collections.Counter)  # reason -> rows
    skipped_rows: list[str] = field(default_factory=list)  # first few, for the report

    @property
    def images(self) -> list[Path]:
        return list(dict.fromkeys(e.image for e in self.examples))

    def references(self) -> dict[Path, list[str]]:
        grouped: dict[Path, list[str]] = {}
        for example in self.examples:
            grouped.setdefault(example.image, []).append(example.caption)
        return grouped

    def report(self) -> str:
        line = f"{len(self.examples)} captions of {len(self.images)} images ({self.format})"
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            line += f"; skipped {sum(self.skipped.values())} bad rows: {reasons}"
        return line

    def split(self, validation_share: float, seed: int = 0) -> tuple[CaptionDataset, CaptionDataset]:
        """Split by image (never one image's captions on both sides)."""
        images = self.images
        random.Random(seed).shuffle(images)
        count = round(len(images) * validation_share) if validation_share > 0 else 0
        if validation_share > 0 and len(images) > 1:
            count = min(max(count, 1), len(images) - 1)
        held_out = set(images[:count])
        train = [e for e in self.examples if e.image not in held_out]
        validation = [e for e in self.examples if e.image in held_out]
        return CaptionDataset(train, self.format), CaptionDataset(validation, self.format)


def load_dataset(data: str | Path) -> CaptionDataset:
    """Read any supported layout; rows with a missing file, an unreadable image or an empty
    caption are counted in `skipped` and left out."""
    path = Path(data).expanduser()
    if not path.exists():
        raise DatasetError(f"--data '{data}' does not exist")
    kind, rows = _detect(path)
    dataset = CaptionDataset([], kind)
    checked: dict[Path, str | None] = {}
    for image, caption, where in rows:
        caption = (caption or "").strip()
        reason = None
        if not caption:
            reason = "empty caption"
        elif image is None or not image.is_file():
            reason = "missing image file"
        else:
            if image not in checked:
                checked[image] = _unreadable(image)
            reason = checked[image]
        if reason:
            dataset.skipped[reason] += 1
            if len(dataset.skipped_rows) < 20:
                dataset.skipped_rows.append(f"{where}: {reason}")
            continue
        dataset.examples.append(Example(image, " ".join(caption.split())))
    if not dataset.examples:
        raise DatasetError(f"no usable captions in '{data}' ({dataset.report()})")
    return dataset


def _unreadable(image: Path) -> str | None:
    try:
        load_image(image)
    except InvalidImage:
        return "unreadable image"
    return None


Row = tuple[Path | None, str, str]  # image, caption, where (for the report)


def _detect(path: Path) -> tuple[str, list[Row]]:
    if path.is_file():
        if path.suffix == ".json":
            return "coco", _coco(path)
        if ".token" in path.name:
            return "flickr", _flickr(path)
        if path.name in ("metadata.jsonl", "metadata.csv"):
            return "imagefolder", _imagefolder(path)
        raise DatasetError(f"'{path}' is not a COCO captions JSON, a Flickr token file or a metadata file")
    for name in ("metadata.jsonl", "metadata.csv"):
        if (path / name).is_file():
            return "imagefolder", _imagefolder(path / name)
    coco = sorted(path.glob("captions_*.json")) + sorted(path.glob("annotations/captions_*.json"))
    if coco:
        return "coco", _coco(coco[0])
    tokens = sorted(p for p in path.glob("*.token*") if p.is_file())
    if tokens:
        return "flickr", _flickr(tokens[0])
    raise DatasetError(
        f"'{path}' holds no metadata.jsonl / metadata.csv, captions_*.json or Flickr *.token.txt"
    )


def _imagefolder(metadata: Path) -> list[Row]:
    root = metadata.parent
    rows: list[Row] = []
    if metadata.suffix == ".jsonl":
        for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                rows.append((None, "", f"{metadata.name}:{number} (not JSON)"))
                continue
            rows.append(_folder_row(root, record, f"{metadata.name}:{number}"))
    else:
        with metadata.open(newline="", encoding="utf-8") as handle:
            for number, record in enumerate(csv.DictReader(handle), 2):
                rows.append(_folder_row(root, record, f"{metadata.name}:{number}"))
    return rows


def _folder_row(root: Path, record: dict, where: str) -> Row:
    name = record.get("file_name") or ""
    text = record.get("text")
    if text is None:
        text = record.get("caption") or ""
    return ((root / name) if name else None, str(text), where)


def _coco(annotations: Path) -> list[Row]:
    data = json.loads(annotations.read_text(encoding="utf-8"))
    names = {image["id"]: image["file_name"] for image in data.get("images", [])}
    folders = _candidate_folders(annotations.parent)
    rows: list[Row] = []
    for annotation in data.get("annotations", []):
        name = names.get(annotation.get("image_id"))
        image = _find(folders, name) if name else None
        rows.append((image, annotation.get("caption") or "", f"{annotations.name} id {annotation.get('id')}"))
    return rows


def _flickr(tokens: Path) -> list[Row]:
    folders = _candidate_folders(tokens.parent)
    rows: list[Row] = []
    for number, line in enumerate(tokens.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, caption = line.partition("\t")
        name = key.split("#")[0].strip()
        rows.append((_find(folders, name) if name else None, caption, f"{tokens.name}:{number}"))
    return rows


def _candidate_folders(start: Path) -> list[Path]:
    folders = [start, start.parent]
    for base in (start, start.parent):
        folders += sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    return list(dict.fromkeys(folders))


def _find(folders: list[Path], name: str) -> Path | None:
    for folder in folders:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None
