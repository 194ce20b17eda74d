"""A reviewed set out, in the layouts people train on and the tables they read.

- `imagefolder_zip`: the images and a `metadata.jsonl` ({"file_name", "text"}), which
  `datasets.load_dataset("imagefolder", data_dir=...)` and `captioner train --data` read as they are;
- `sidecar_zip`: the images with a caption file beside each (photo.jpg + photo.txt), as kohya_ss
  and most LoRA trainers read them;
- `table`: CSV (spreadsheet-safe), JSON lines or Parquet, one row an image with its origin,
  score, flags and error.

Only rows with a caption and no error become training data; the rest are counted in the report.
Everything is written to disk as it is built, image by image, so a large set never sits in memory
whole. Entry names are the set's own relative paths (checked when the set was read), with a name
that is not UTF-8 written as `\\xNN` escapes, the same in the zip and in its metadata.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import require
from ..exports import csv_header, json_line, path_text, write_csv_rows
from .edits import ReviewError
from .rows import ReviewSet, Row

TABLE_COLUMNS = ("file", "caption", "origin", "score", "flags", "error")
TABLE_FORMATS = (".csv", ".jsonl", ".parquet")


@dataclass
class ExportReport:
    path: Path
    exported: int
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (name, why)

    def summary(self) -> str:
        text = f"{self.exported} image{'s' * (self.exported != 1)} with captions in {self.path.name}"
        if self.left_out:
            text += f"; left out {len(self.left_out)} without a caption (e.g. {self.left_out[0][0]}: {self.left_out[0][1]})"
        return text


def training_rows(review: ReviewSet) -> tuple[list[Row], list[tuple[str, str]]]:
    """Rows fit to train on (a caption, no error), and the others with the reason."""
    keep, left_out = [], []
    for row in review.rows.values():
        if row.error:
            left_out.append((row.name, f"could not be read: {row.error}"))
        elif not row.caption.strip():
            left_out.append((row.name, "no caption"))
        else:
            keep.append(row)
    if not keep:
        raise ReviewError("nothing to export: no image in this set has a caption yet")
    return keep, left_out


def imagefolder_zip(review: ReviewSet, path: Path) -> ExportReport:
    rows, left_out = training_rows(review)
    with _zip(path) as archive:
        for row in rows:
            archive.write(row.image, path_text(row.name))
        with archive.open("metadata.jsonl", "w") as metadata:
            for row in rows:
                metadata.write(json_line({"file_name": path_text(row.name), "text": row.caption}).encode("utf-8"))
    return ExportReport(path, len(rows), left_out)


def sidecar_zip(review: ReviewSet, path: Path, extension: str = ".txt") -> ExportReport:
    rows, left_out = training_rows(review)
    sidecars: dict[str, str] = {}
    for row in rows:
        name = str(PurePosixPath(path_text(row.name)).with_suffix(extension))
        if name.casefold() in sidecars:
            raise ReviewError(f"{sidecars[name.casefold()]} and {row.name} would share the caption file {name}; "
                              "rename one, or export the imagefolder layout")
        sidecars[name.casefold()] = row.name
    with _zip(path) as archive:
        for row in rows:
            name = path_text(row.name)
            archive.write(row.image, name)
            archive.writestr(str(PurePosixPath(name).with_suffix(extension)),
                             row.caption.encode("utf-8", "surrogateescape") + b"\n")
    return ExportReport(path, len(rows), left_out)


def table(review: ReviewSet, path: Path) -> ExportReport:
    """Every row, errors included (as errors, never as captions)."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ReviewError(f"a table is one of {', '.join(TABLE_FORMATS)}; got {path.name}")
    rows = list(review.rows.values())
    if not rows:
        raise ReviewError("nothing to export: the set is empty")
    if suffix == ".parquet":
        _parquet(rows, path)
    else:
        with path.open("w", encoding="utf-8", newline="") as handle:
            if suffix == ".csv":
                handle.write(csv_header(TABLE_COLUMNS))
            for row in rows:
                record = _record(row)
                if suffix == ".csv":
                    write_csv_rows(handle, [record], TABLE_COLUMNS)
                else:
                    handle.write(json_line(record))
    return ExportReport(path, sum(1 for r in rows if r.caption and not r.error))


def _record(row: Row) -> dict:
    return {"file": row.name, "caption": None if row.error else row.caption, "origin": row.origin or None,
            "score": row.score, "flags": list(row.flags), "error": row.error}


def _parquet(rows: list[Row], path: Path) -> None:
    require("pyarrow", "a Parquet table", "requirements.txt")
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("file", pa.string()), ("caption", pa.string()), ("origin", pa.string()),
                        ("score", pa.float64()), ("flags", pa.list_(pa.string())), ("error", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(rows), 1000):
            records = [_record(r) for r in rows[start : start + 1000]]
            for record in records:
                record["file"] = path_text(record["file"])
            writer.write_table(pa.Table.from_pylist(records, schema=schema))


def _zip(path: Path) -> zipfile.ZipFile:
    # Stored, not deflated: photos are compressed already, and deflating them again costs CPU for nothing.
    return zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
