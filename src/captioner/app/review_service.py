"""The review tab's handlers: a visitor's set on disk, captioned where it has no captions, edited,
and exported; the page only draws what `review/` holds.

Each review lives in a folder of its own under the system's temporary folder, named by a random
token that the visitor's browser keeps (gr.BrowserState): its images, thumbnails, exports and
the review's state, written atomically after every change, so a reload of the page, or a restart
of the server, finds every edit. Reviews untouched for a day are removed when a new one starts.
"""

from __future__ import annotations

import collections
import json
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from ..caption_files import write_atomically
from ..errors import CaptionError
from ..images import IMAGE_SUFFIXES
from ..review import BulkEdit, ReviewError, ReviewSet
from ..review.exports import imagefolder_zip, sidecar_zip, table
from ..review.sources import extract_zip, read_folder
from .service import CaptionService, settings_from_widgets

STATE = ".captioner-review.json"
KEEP_S = 24 * 3600
PAGE_ROWS = 50
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
CAPTION_FILES = (".txt", ".jsonl", ".csv")
EXPORTS = {"imagefolder .zip (images + metadata.jsonl)": "imagefolder", "kohya .zip (images + .txt files)": "kohya",
           "table .csv": ".csv", "table .jsonl": ".jsonl", "table .parquet": ".parquet"}


class ReviewService:
    """Reviews by token: open ones in memory (a few), every one on disk."""

    def __init__(self, service: CaptionService, root: Path | None = None, max_open: int = 32) -> None:
        self.service = service
        base = root or Path(tempfile.gettempdir()) / "captioner-reviews"
        self.root = base / "sets"  # served to the page (thumbnails), each review under its token
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret = self._secret(base / ".secret")  # beside the served folder, never in it
        self._open: collections.OrderedDict[str, ReviewSet] = collections.OrderedDict()
        self.max_open = max_open
        self._locks = [threading.RLock() for _ in range(64)]  # striped: bounded, whatever the visitors

    def lock(self, token: str | None) -> threading.RLock:
        """The lock a review's changes take, so two events of one review never interleave."""
        return self._locks[hash(token or "") % len(self._locks)]

    # ---- loading and captioning ------------------------------------------------------------
    def start(self, files: list[str] | None, folder_files: list[str] | None = None,
              folder_paths: str = "") -> tuple[str, ReviewSet, int]:
        """A new review of the uploaded files (images, caption files, zips) and of an uploaded
        folder, kept in its sub-folders where the browser told their paths (`folder_paths`):
        (token, set, files that are not images)."""
        files, folder_files = list(files or []), list(folder_files or [])
        if not files and not folder_files:
            raise ReviewError("Add images, their caption files, a folder, or a .zip first.")
        self._remove_old()
        token = secrets.token_urlsafe(18)
        folder = self.root / token / "set"
        limit = self.service.limits.max_file_mb * 2**20
        skipped: list[str] = []
        if len(files) == 1 and not folder_files and Path(files[0]).suffix.lower() == ".zip":
            skipped += extract_zip(Path(files[0]), folder, max_file_bytes=limit)  # its own folders are the set's
        else:
            folder.mkdir(parents=True)
            for path in map(Path, files):
                if path.suffix.lower() == ".zip":
                    skipped += extract_zip(path, _free_name(folder / path.stem), max_file_bytes=limit)
                else:
                    shutil.copyfile(path, _free_name(folder / path.name))
            for path, inside in folder_places(folder_files, folder_paths):
                target = _free_name(folder.joinpath(*inside))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        found = read_folder(folder)
        review = ReviewSet(found.rows)
        self._keep(token, review)
        self.save(token, review)
        return token, review, len(found.not_images) + len(skipped)

    def caption(self, token: str, review: ReviewSet, names: list[str], settings_values: tuple,
                replace: bool = False) -> Iterator[int]:
        """Caption `names` in half-batch pieces that let other visitors' photos go first; yields
        how many are done after each piece (the page redraws), saving as it goes."""
        settings = settings_from_widgets(*settings_values)
        step = max(1, self.service.limits.max_batch_size // 2)
        for start in range(0, len(names), step):
            piece = names[start : start + step]
            results = self.service.caption_each(
                len(piece), lambda i: (self.service.decode_image(review.rows[piece[i]].image), settings), bulk=True)
            with self.lock(token):
                review.set_errors({n: str(r) for n, r in zip(piece, results) if isinstance(r, CaptionError)})
                review.set_model_captions({n: (r[0].text, r[0].score) for n, r in zip(piece, results)
                                           if not isinstance(r, CaptionError)}, replace=replace)
                self.save(token, review)
            yield start + len(piece)

    # ---- finding a review again ------------------------------------------------------------
    def get(self, token: str | None) -> ReviewSet:
        if not token:
            raise ReviewError("Load a set of images first.")
        review = self._open.get(token)
        if review is None:
            state = self.root / token / STATE if _TOKEN.fullmatch(token) else None
            if state is None or not state.is_file():
                raise ReviewError("This review is no longer on the server (reviews are kept for a day); "
                                  "load the images again.")
            review = ReviewSet.from_state(json.loads(state.read_text(encoding="utf-8")))
            self._keep(token, review)
        self._open.move_to_end(token)
        return review

    def save(self, token: str, review: ReviewSet) -> None:
        """The review's state on disk, whole or not at all (write_atomically)."""
        text = json.dumps(review.to_state(), ensure_ascii=False)
        write_atomically(self.root / token / STATE, text.encode("utf-8", "surrogateescape"))

    # ---- what the page shows ---------------------------------------------------------------
    def thumbnail(self, token: str, review: ReviewSet, name: str) -> str | None:
        """A small JPEG of the image, made the first time it is shown; None if it cannot be read
        (the row then becomes an error row, saying why)."""
        row = review.rows[name]
        if row.error:
            return None
        index = list(review.rows).index(name)
        path = self.root / token / "thumbs" / f"{index}.jpg"
        if not path.exists():
            try:
                image = self.service.decode_image(row.image)
            except CaptionError as error:
                review.set_errors({name: str(error)})
                self.save(token, review)
                return None
            image.thumbnail((160, 160))
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, "JPEG", quality=80)
        return str(path)

    def export(self, token: str, choice: str) -> str:
        review = self.get(token)
        kind = EXPORTS.get(choice)
        if kind is None:
            raise ReviewError(f"export as one of: {', '.join(EXPORTS)}")
        folder = self.root / token / "exports" / time.strftime("%H%M%S")
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "imagefolder":
            report = imagefolder_zip(review, folder / "reviewed-imagefolder.zip")
        elif kind == "kohya":
            report = sidecar_zip(review, folder / "reviewed-kohya.zip")
        else:
            report = table(review, folder / f"reviewed{kind}")
        self.last_report = report.summary()
        return str(report.path)

    # ---- inside ----------------------------------------------------------------------------
    @staticmethod
    def _secret(path: Path) -> str:
        """The key the browser's copy of the token is sealed with, kept on disk: a restarted
        server still reads the tokens its visitors hold (gradio's own key is new at every start)."""
        try:
            return path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            secret = secrets.token_hex(32)
            path.touch(mode=0o600)
            write_atomically(path, secret.encode("ascii"))
            return secret

    def _keep(self, token: str, review: ReviewSet) -> None:
        self._open[token] = review
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)  # still on disk; read again when asked for

    def _remove_old(self) -> None:
        cutoff = time.time() - KEEP_S
        for folder in self.root.iterdir():
            try:
                if folder.is_dir() and folder.stat().st_mtime < cutoff and (folder / STATE).stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    self._open.pop(folder.name, None)
            except OSError:
                continue  # being written, or gone already


def folder_places(files: list[str], paths_json: str) -> list[tuple[Path, list[str]]]:
    """Where each file of a folder upload goes inside the set: its path in the folder as the
    browser told it (`[[relative path, size], ...]`, in the order the files were picked), so
    sub-folders, their metadata.jsonl and same-named photos in two folders stay apart. The
    upload itself carries only base names: a file takes the first unused path of its name and
    size; a file with no match (or a path that is not plain) goes to the set's top folder under
    its own name, as a plain upload of many files does."""
    try:
        told = [(str(p), int(n)) for p, n in json.loads(paths_json or "[]")]
    except (ValueError, TypeError):
        told = []
    unused: dict[tuple[str, int], list[list[str]]] = collections.defaultdict(list)
    for relative, size in told:
        parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
        if len(parts) > 1 and ".." not in parts and "\x00" not in relative and not parts[0].endswith(":"):
            parts = parts[1:]  # the folder's own name, which the person picked
        else:
            parts = []
        unused[(parts[-1] if parts else "", size)].append(parts)
    places = []
    for path in map(Path, files):
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        candidates = unused.get((path.name, size))
        places.append((path, candidates.pop(0) if candidates else [path.name]))
    return places


def _free_name(path: Path) -> Path:
    """Two uploads with one name (from two folders) both stay: "photo (2).jpg"."""
    candidate, number = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem} ({number}){path.suffix}")
        number += 1
    return candidate


UPLOAD_TYPES = sorted(IMAGE_SUFFIXES | {".zip", *CAPTION_FILES})


def bulk_edit(kind: str, text: str, find: str, regex: bool, case: str) -> BulkEdit:
    return BulkEdit(kind, text=text or "", find=find or "", regex=bool(regex), case=case or "lower")


def view_rows(review: ReviewSet, sort: str, flag: str, search: str) -> list:
    return review.view(sort or "flags", None if flag in (None, "", "all") else flag, search or "")


def summary(review: ReviewSet, total_shown: int, first: int = 0) -> str:
    counts = {f: n for f, n in review.flag_counts().items() if n}
    flagged = sum(1 for r in review.rows.values() if r.flags)
    text = f"{len(review.rows)} images, {flagged} need a look"
    if counts:
        text += ": " + ", ".join(f"{n} {f.replace('_', ' ')}" for f, n in counts.items())
    if total_shown > PAGE_ROWS:
        return text + f". Showing {first + 1}-{min(first + PAGE_ROWS, total_shown)} of {total_shown}."
    return text + f". Showing {total_shown} of {total_shown}."

