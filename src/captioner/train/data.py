"""Captioning datasets on disk -> (image path, caption) pairs, with bad rows reported, not fatal.

Formats, detected from what `--data` holds:
- imagefolder: a folder with `metadata.jsonl` or `metadata.csv` (`file_name` + `text`), as
  Hugging Face's imagefolder loader reads it; several rows per image are several captions.
- COCO captions: a `captions_*.json` file (or a folder holding one, also under `annotations/`);
  images are looked up next to the JSON, in its parent, and in their sub-folders (`train2017/`...).
- Flickr8k / Flickr30k: a token file (`*.token.txt`, `*.token`) of `name.jpg#N<TAB>caption`
  lines; images next to it or in a sub-folder (`Images/`, `Flicker8k_Dataset/`, `flickr30k-images/`).
- Parquet in the Hugging Face layout (a file, or a folder of them), or a Hub dataset
  (`hf://datasets/NAME`): an image column of `{bytes, path}` structs or of paths, and a text
  column; several rows of one image are several captions. Read with `datasets`, whose Arrow files
  are memory-mapped: images stay on disk until a batch needs them.
- VizWiz-Captions uses COCO's layout; its rejected and pre-canned captions are left out.
- TextCaps: its JSON (`TextCaps_0.1_train.json`), a `data` list of one caption per entry;
  images (`image_path` or `image_name`.jpg) looked up as for COCO (`train_images/`...).

The caption files (imagefolder, COCO, TextCaps, Flickr) are read by annotations.py; Parquet and Hub
datasets here. Images are not decoded here: a COCO-sized folder is ready in seconds. An image that fails to decode
is skipped when training reaches it (training.py), and counted there.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..caption_files import DatasetError, imagefolder
from ..errors import one_line, require
from ..images import image_cell
from .annotations import coco, flickr


@dataclass(frozen=True)
class TableImage:
    """An image in a row of an Arrow table (Parquet or a Hub dataset), read only when needed.
    Rows naming the same image (its `path`) are the same image, with several captions."""

    name: str
    row: int = field(compare=False)
    table: Any = field(compare=False, repr=False)
    column: str = field(compare=False, default="image")
    folder: Path = field(compare=False, default=Path("."))  # what a relative `path` is relative to

    def __str__(self) -> str:
        return self.name

    def load(self) -> bytes | str:
        return image_cell(self.table[self.row][self.column], self.folder)


def image_input(image: Path | TableImage) -> Path | bytes | str:
    """What load_image reads for an example's image."""
    return image.load() if isinstance(image, TableImage) else image


@dataclass(frozen=True)
class Example:
    image: Path | TableImage
    caption: str


@dataclass
class CaptionDataset:
    examples: list[Example]
    format: str
    skipped: collections.Counter = field(default_factory=collections.Counter)  # reason -> rows
    skipped_rows: list[str] = field(default_factory=list)  # first few, for the report

    @property
    def images(self) -> list[Path | TableImage]:
        return list(dict.fromkeys(e.image for e in self.examples))

    def references(self) -> dict[Path | TableImage, list[str]]:
        grouped: dict[Path | TableImage, list[str]] = {}
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


def load_dataset(data: str | Path, image_column: str = "image", text_column: str = "text",
                 split: str = "train") -> CaptionDataset:
    """Read any supported layout; rows with a missing file or an empty caption are counted in
    `skipped` and left out. `hf://datasets/NAME` loads a Hub dataset's `split`."""
    if str(data).startswith(HUB_PREFIX):
        kind, rows = "hub", _table_rows(_hub_table(str(data)[len(HUB_PREFIX):], split), image_column,
                                        text_column, str(data), Path.cwd())
    else:
        path = Path(data).expanduser()
        if not path.exists():
            raise DatasetError(f"--data '{data}' does not exist")
        kind, rows = _detect(path, image_column, text_column)
    dataset = CaptionDataset([], kind)
    exists: dict[Path, bool] = {}
    for image, caption, where in rows:
        caption = caption.strip() if isinstance(caption, str) else None
        reason = None
        if caption is None:
            reason = "caption is not text"
        elif not caption:
            reason = "empty caption"
        elif image is None or (isinstance(image, Path) and not _exists(image, exists)):
            reason = "missing image file"
        if reason:
            dataset.skipped[reason] += 1
            if len(dataset.skipped_rows) < 20:
                dataset.skipped_rows.append(f"{where}: {reason}")
            continue
        dataset.examples.append(Example(image, " ".join(caption.split())))
    if not dataset.examples:
        raise DatasetError(f"no usable captions in '{data}' ({dataset.report()})")
    return dataset


def _exists(image: Path, known: dict[Path, bool]) -> bool:
    if image not in known:
        known[image] = image.is_file()
    return known[image]


Row = tuple[Path | TableImage | None, str, str]  # image, caption, where (for the report)
HUB_PREFIX = "hf://datasets/"


def _detect(path: Path, image_column: str, text_column: str) -> tuple[str, list[Row]]:
    parquet = [path] if path.suffix == ".parquet" else sorted(path.rglob("*.parquet")) if path.is_dir() else []
    if parquet and not (path.is_dir() and (path / "metadata.jsonl").is_file()):
        require("datasets", "Training on Parquet", "requirements-train.txt")
        import datasets

        try:
            table = datasets.load_dataset("parquet", data_files=[str(p) for p in parquet], split="train")
        except (OSError, ValueError, datasets.exceptions.DatasetGenerationError) as error:
            raise DatasetError(f"{parquet[0] if len(parquet) == 1 else path} is not readable Parquet "
                               f"({type(error).__name__})") from None
        return "parquet", _table_rows(table, image_column, text_column, parquet[0].name, parquet[0].parent)
    if path.is_file():
        if path.suffix == ".json":
            return "coco", coco(path)
        if ".token" in path.name:
            return "flickr", flickr(path)
        if path.name in ("metadata.jsonl", "metadata.csv"):
            return "imagefolder", imagefolder(path)
        raise DatasetError(f"'{path}' is not a COCO or TextCaps JSON, a Flickr token file or a metadata file")
    for name in ("metadata.jsonl", "metadata.csv"):
        if (path / name).is_file():
            return "imagefolder", imagefolder(path / name)
    found = sorted(path.glob("captions_*.json")) + sorted(path.glob("annotations/captions_*.json"))
    found += sorted(path.glob("TextCaps_*.json"))
    if found:
        return "coco", coco(found[0])
    tokens = sorted(p for p in path.glob("*.token*") if p.is_file())
    if tokens:
        return "flickr", flickr(tokens[0])
    raise DatasetError(
        f"'{path}' holds no metadata.jsonl / metadata.csv, captions_*.json, TextCaps_*.json, "
        "Flickr *.token.txt or *.parquet"
    )


def _hub_table(name: str, split: str):
    require("datasets", "Training on Hub datasets", "requirements-train.txt")
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise DatasetError(f"could not load the Hub dataset '{name}' (split {split}): {error}") from None


def _table_rows(table, image_column: str, text_column: str, where: str, folder: Path) -> list[Row]:
    """Rows of a `datasets.Dataset`: only the text and the images' names are read now."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [c for c in (image_column, text_column) if c not in table.column_names]
    if missing:
        raise DatasetError(f"{where} has no column '{missing[0]}' (it has: {', '.join(map(one_line, table.column_names))}); "
                           "name the columns with --image-column and --text-column")
    if isinstance(table.features[image_column], datasets.Image):
        table = table.cast_column(image_column, datasets.Image(decode=False))
    column = table.data.table.column(image_column)
    texts = table.data.table.column(text_column).to_pylist()
    is_paths = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if not is_paths and not (pa.types.is_struct(column.type) and {"bytes", "path"} & {f.name for f in column.type}):
        raise DatasetError(f"{where}: the column '{image_column}' holds {column.type}, not images "
                           "(paths, or {bytes, path} structs); name the image column with --image-column")
    if is_paths:  # relative to the Parquet file's folder
        return [((folder / name) if name else None, text, f"{where} row {i}")
                for i, (name, text) in enumerate(zip(column.to_pylist(), texts))]
    names = pc.struct_field(column, "path").to_pylist() if "path" in {f.name for f in column.type} else [None] * len(texts)
    return [(TableImage(name or f"{where} row {i}", i, table, image_column, folder), text, f"{where} row {i}")
            for i, (name, text) in enumerate(zip(names, texts))]

