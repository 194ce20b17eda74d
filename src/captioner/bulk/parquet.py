"""Parquet in and out, with pyarrow: streamed record batch by record batch, never a whole table.

A Parquet file is complete only once its footer is written, so a run appends its results to a
JSON-lines journal beside the output (`OUT.parquet.partial.jsonl`, flushed batch by batch) and
builds the Parquet file from it when every image is done. A killed run keeps the journal;
`--resume` goes on from it.
"""

from __future__ import annotations

import bisect
import json
import os
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

from ..exports import AppendFile, OutputError, json_line, path_from_text, path_text, read_jsonl_keys
from ..images import image_cell
from .outputs import refuse_existing
from .pipeline import Item, Result, SourceError

READ_ROWS = 256  # rows read at once: a batch of images' bytes, not the dataset


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError("Parquet needs pyarrow: pip install -r requirements-ray.txt (or pip install pyarrow)") from None

    return pa, pq


class ParquetSource:
    """`--dataset PATH`: a Parquet file, or a folder of them, in the Hugging Face layout: an image
    column of `{bytes, path}` structs (the `datasets` Image feature) or of path strings."""

    def __init__(self, path: str | os.PathLike, image_column: str = "image") -> None:
        _, pq = _pyarrow()
        root = Path(path)
        if root.is_dir():
            self.files = sorted(root.rglob("*.parquet"))
        elif root.is_file():
            self.files = [root]
        else:
            raise SourceError(f"--dataset {path} does not exist")
        if not self.files:
            raise SourceError(f"--dataset {path} holds no .parquet files")
        self.image_column = image_column
        try:
            self.schema = pq.read_schema(self.files[0])
            self.num_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise SourceError(f"--dataset {path} is not readable Parquet ({error})") from None
        if image_column not in self.schema.names:
            raise SourceError(
                f"{self.files[0].name} has no column '{image_column}' (it has: {', '.join(self.schema.names)}); "
                "name the image column with --image-column"
            )

    def items(self) -> Iterator[Item]:
        """Each row's image, as bytes or as a path (resolved beside its Parquet file), in order."""
        _, pq = _pyarrow()
        index = 0
        for file in self.files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=READ_ROWS, columns=[self.image_column]):
                for value in batch.column(0).to_pylist():
                    yield Item(str(index), image_cell(value, file.parent))
                    index += 1

    def references(self) -> Iterator[Item]:
        """Each row as a (file, row) reference, from the files' footers alone: for Ray, whose
        actors read the images themselves (RowReader), so the driver never holds them."""
        _, pq = _pyarrow()
        index = 0
        for file in self.files:
            for row in range(pq.ParquetFile(file).metadata.num_rows):
                yield Item(str(index), RowRef(str(file.absolute()), row))
                index += 1

    def record_batches(self):
        _, pq = _pyarrow()
        for file in self.files:
            yield from pq.ParquetFile(file).iter_batches(batch_size=READ_ROWS)


class RowRef(NamedTuple):
    """Row `row` of the Parquet file `file`: where a Ray actor reads a dataset row's image."""

    file: str
    row: int


class RowReader:
    """Reads rows' images by position, a row group at a time, keeping the last group: a batch's
    rows are neighbours, so a group is read once, not once per row."""

    def __init__(self, column: str) -> None:
        self.column = column
        self._file: tuple[str, object, list[int]] | None = None  # path, ParquetFile, group starts
        self._group: tuple[int, list] | None = None  # index, its image values

    def image(self, ref: RowRef) -> str | bytes:
        _, pq = _pyarrow()
        if self._file is None or self._file[0] != ref.file:
            handle = pq.ParquetFile(ref.file)
            sizes = [handle.metadata.row_group(g).num_rows for g in range(handle.num_row_groups)]
            self._file, self._group = (ref.file, handle, [sum(sizes[:g]) for g in range(len(sizes))]), None
        _, handle, starts = self._file
        group = bisect.bisect_right(starts, ref.row) - 1
        if self._group is None or self._group[0] != group:
            table = handle.read_row_group(group, columns=[self.column])
            self._group = (group, table.column(0).to_pylist())
        return image_cell(self._group[1][ref.row - starts[group]], Path(ref.file).parent)


class ParquetOutput:
    """`--output FILE.parquet` for files: columns path, caption (or captions and scores), error, flags."""

    key_name = "path"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = AppendFile(path.with_name(path.name + ".partial.jsonl"))
        self.keys: set[str] = set()

    def start(self, mode: str) -> None:
        journal = self.journal.path
        refuse_existing(self.path, mode)
        refuse_existing(journal, mode)
        if mode == "resume" and not journal.exists() and self.path.exists():
            self._journal_from_output()  # a finished run, resumed to add new images
        resume = mode == "resume" and journal.exists()
        self.journal.start(resume)
        if resume:
            self.keys = set(read_jsonl_keys(journal, self.key_name))

    def done(self, item: Item) -> bool:
        return item.key in self.keys

    def write(self, results: Sequence[Result]) -> None:
        self.journal.append("".join(json_line(r.row(self.key_name)) for r in results))

    def finish(self) -> None:
        """Build the Parquet file from the journal, replace the output with it, drop the journal."""
        pa, pq = _pyarrow()
        self.journal.close()
        schema = self._schema(pa)
        partial = self.path.with_name(self.path.name + ".writing")
        try:
            with pq.ParquetWriter(partial, schema) as writer:
                for table in self._tables(pa, schema):
                    writer.write_table(table)
            os.replace(partial, self.path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise OutputError(f"cannot write {self.path}: {error.strerror or error}; every row is kept in "
                              f"{self.journal.path}: make room and run the same command again with --resume") from None
        self.journal.path.unlink()

    def close(self) -> None:
        self.journal.close()

    def _journal_rows(self, chunk: int = 4096) -> Iterator[list[dict]]:
        rows: list[dict] = []
        with self.journal.path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    rows.append(json.loads(line))
                if len(rows) == chunk:
                    yield rows
                    rows = []
        if rows:
            yield rows

    def _result_fields(self, pa) -> list:
        seen: set[str] = set()
        for rows in self._journal_rows():
            for row in rows:
                seen.update(row)
        fields = []
        if "caption" in seen or "captions" not in seen:
            fields.append(pa.field("caption", pa.string()))
        if "captions" in seen:
            fields += [pa.field("captions", pa.list_(pa.string())), pa.field("scores", pa.list_(pa.float64()))]
        if "error" in seen:
            fields.append(pa.field("error", pa.string()))
        if "flags" in seen:
            fields.append(pa.field("flags", pa.list_(pa.string())))
        return fields

    def _schema(self, pa):
        return pa.schema([pa.field("path", pa.string()), *self._result_fields(pa)])

    def _tables(self, pa, schema):
        for rows in self._journal_rows():
            # Parquet strings are UTF-8: a file name that is not becomes \xNN text (exports.path_text).
            for row in rows:
                for name in ("path", "error"):
                    if isinstance(row.get(name), str):
                        row[name] = path_text(row[name])
            yield pa.Table.from_pylist(rows, schema=schema)

    def _journal_from_output(self) -> None:
        _, pq = _pyarrow()
        with self.journal.path.open("w", encoding="utf-8") as handle:
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    if row.get("path") is not None:
                        row["path"] = path_from_text(row["path"])  # the key a resumed run compares
                    handle.write(json_line({k: v for k, v in row.items() if v is not None}))


class DatasetOutput(ParquetOutput):
    """`--dataset IN --output OUT.parquet`: the input's rows, in order, plus `caption` (and
    `captions`/`caption_scores` with several, `caption_error` where one failed, and `caption_flags`)."""

    key_name = "row"

    def __init__(self, path: Path, source: ParquetSource, caption_column: str = "caption") -> None:
        super().__init__(path)
        self.source = source
        self.column = caption_column
        taken = set(self._renamed().values())
        clash = taken & set(source.schema.names)
        if clash:
            raise OutputError(
                f"the dataset already has a column {sorted(clash)[0]!r}; name the new one with --caption-column"
            )

    def _renamed(self) -> dict[str, str]:
        """The journal's names -> the output's columns, all named after --caption-column."""
        return {"caption": self.column, "captions": self.column + "s", "scores": self.column + "_scores",
                "error": self.column + "_error", "flags": self.column + "_flags"}

    def _schema(self, pa):
        renamed = self._renamed()
        fields = [f.with_name(renamed[f.name]) for f in self._result_fields(pa)]
        return pa.schema([*self.source.schema, *fields])

    def _tables(self, pa, schema):
        """The input's record batches beside the journal's rows, which are in row order."""
        extra = schema.names[len(self.source.schema):]
        journal = (row for rows in self._journal_rows() for row in rows)
        expected = 0
        for batch in self.source.record_batches():
            columns: dict[str, list] = {name: [] for name in extra}
            for _ in range(batch.num_rows):
                row = next(journal, None)
                if row is None or row.get("row") != str(expected):
                    raise OutputError(f"{self.journal.path} does not hold row {expected}; run again with --resume")
                expected += 1
                values = {key: row.get(key) for key in self._renamed()}
                if row.get("captions") and "caption" not in row:
                    values["caption"] = row["captions"][0]
                by_name = {column: values[key] for key, column in self._renamed().items()}
                for name in extra:
                    columns[name].append(by_name[name])
            table = pa.Table.from_batches([batch])
            for name in extra:
                table = table.append_column(schema.field(name), pa.array(columns[name], schema.field(name).type))
            yield table.cast(schema)

    def _result_fields(self, pa) -> list:
        fields = super()._result_fields(pa)
        if any(f.name == "captions" for f in fields) and not any(f.name == "caption" for f in fields):
            fields.insert(0, pa.field("caption", pa.string()))
        return fields

    def _journal_from_output(self) -> None:
        _, pq = _pyarrow()
        names = {column: key for key, column in self._renamed().items()}
        with self.journal.path.open("w", encoding="utf-8") as handle:
            index = 0
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=4096, columns=[
                    n for n in names if n in pq.read_schema(self.path).names]):
                for row in batch.to_pylist():
                    record = {"row": str(index), **{names[k]: v for k, v in row.items() if v is not None}}
                    handle.write(json_line(record))
                    index += 1
