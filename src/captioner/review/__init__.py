"""A review of captions before they are trusted: a set of images with their captions, where each
came from (already there, the model, a person), quality flags, edits and bulk edits with undo,
and exports that a trainer reads. The page and the `review` command both draw this model; it
imports only the core, so it holds no model and no web page of its own.

    rows.py     a set's rows, edits and bulk edits with undo and redo, sorting and filtering
    edits.py    bulk edits (prefix, suffix, find and replace, trim, case) and their preview
    sources.py  a folder or a .zip in, with the captions it already has
    exports.py  an imagefolder .zip, a .zip of caption files, the table as CSV/JSONL/Parquet
"""

from .edits import BulkEdit
from .rows import ReviewError, ReviewSet, Row

__all__ = ["BulkEdit", "ReviewError", "ReviewSet", "Row"]
