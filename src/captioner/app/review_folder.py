"""`python -m captioner review FOLDER`: the review page for a folder on this machine.

The folder's own caption files are the review: a sidecar beside each image (photo.jpg ->
photo.txt), or with --metadata the folder's imagefolder `metadata.jsonl`, is read when the page
starts and replaced the moment a caption changes (atomically: a kill leaves the old text or the
new, never half). The undo history is kept beside the images, in `.captioner-review.json`, so
undo works after a restart. Thumbnails go to a cache folder of their own, not into the person's
folder. Served on 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tempfile
from pathlib import Path

from ..caption_files import METADATA_NAMES, DatasetError, read_text, write_all_atomically, write_atomically
from ..review import ReviewError, ReviewSet
from ..review.sources import OWN_FILES, read_folder
from .review_service import ReviewService
from .service import CaptionService

HISTORY = OWN_FILES + "-review.json"


class FolderReviews(ReviewService):
    """One review: the folder's. Every change goes to its caption files before it is acknowledged."""

    def __init__(self, service: CaptionService, folder: Path, sidecar: str = ".txt", metadata: bool = False) -> None:
        self.folder = Path(folder).absolute()
        key = hashlib.sha256(str(self.folder).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        super().__init__(service, Path(tempfile.gettempdir()) / "captioner-folder-reviews" / key)
        self.token = key
        self.sidecar = sidecar
        self.history = self.folder / HISTORY
        self.metadata = MetadataFile(self.folder) if metadata else None
        self._remove_partials()
        found = read_folder(self.folder, None if metadata else sidecar)
        self.not_images = len(found.not_images)
        review = ReviewSet(found.rows)
        self._restore_history(review)
        self._written = {r.name: r.caption for r in review.rows.values()}
        self._check_writable()
        self._keep(self.token, review)

    def start(self, files, folder_files=None, folder_paths="") -> tuple[str, ReviewSet, int]:
        """The folder is the set: the page's Load button captions what has no caption."""
        return self.token, self.get(self.token), self.not_images

    def get(self, token: str | None) -> ReviewSet:
        return super().get(self.token)

    def save(self, token: str, review: ReviewSet) -> None:
        """Each caption that changed, to its file; then the history. An image's caption file is
        removed only when its caption went back to none (an undo of a first caption)."""
        changed = {n: r for n, r in review.rows.items() if self._written.get(n) != r.caption}
        if changed and self.metadata is not None:
            self.metadata.write({n: r.caption for n, r in changed.items()})
        elif changed:
            files = {Path(row.image).with_suffix(self.sidecar): (row.caption.encode("utf-8", "surrogateescape") + b"\n"
                                                                 if row.caption or row.origin else None)
                     for row in changed.values()}
            try:
                write_all_atomically(files)
            except OSError as error:
                target = error.filename or next(iter(files))
                raise ReviewError(f"cannot write {target}: {error.strerror or error}; each caption file is whole, "
                                  "and the ones not yet written are as they were") from None
        self._written.update((n, r.caption) for n, r in changed.items())
        state = review.history_state()  # the captions are the files'; only the undo history goes here
        write_atomically(self.history, json.dumps(state, ensure_ascii=False).encode("utf-8", "surrogateescape"))

    def _restore_history(self, review: ReviewSet) -> None:
        """Undo after a restart: the steps come back; the captions are the files' (edited outside
        the page or not, the files are the truth)."""
        try:
            state = json.loads(self.history.read_bytes().decode("utf-8", "surrogateescape"))
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            return  # an unreadable history loses undo, never a caption
        try:
            restored = ReviewSet.from_state({"rows": [], **state})
        except ReviewError:
            return
        known = set(review.rows)
        steps = [s for s in restored.steps if all(n in known for n, _, _ in s.before + s.after)]
        if len(steps) == len(restored.steps):
            review.steps, review.position = steps, restored.position

    def _remove_partials(self) -> None:
        """What a kill left half-written (write_atomically's `.name.partial` files): never a caption,
        since the file it was to replace is whole; it is removed so it does not clutter the folder."""
        ours = (f"{self.sidecar}.partial", "metadata.jsonl.partial", f"{HISTORY}.partial")
        for partial in self.folder.rglob(".*.partial"):
            if partial.name.endswith(ours) and partial.is_file():
                partial.unlink(missing_ok=True)

    def _check_writable(self) -> None:
        probe = self.folder / f"{OWN_FILES}-probe.partial"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ReviewError(f"{self.folder} cannot be written ({error.strerror or error}): the review writes "
                              "each caption beside its image; copy the folder somewhere writable") from None


class MetadataFile:
    """The folder's `metadata.jsonl` as the review's caption file: rewritten whole (atomically) on
    each change, each line keeping its other columns and its place; lines for files that are not
    in the set stay as they were. A file the review could not write back unchanged is refused."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "metadata.jsonl"
        others = [p for p in folder.rglob("metadata.*") if p.name in METADATA_NAMES and p != self.path]
        if others:
            raise ReviewError(f"--metadata writes {self.path}, but this folder keeps captions in "
                              f"{others[0].relative_to(folder)} too; review it with sidecars, or merge them first")
        self.records: list[dict] = []
        if self.path.exists():
            try:
                lines = read_text(self.path).splitlines()
            except DatasetError as error:
                raise ReviewError(str(error)) from None
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
                    raise ReviewError(f"{self.path}:{number} is not a JSON object with a file_name; fix that "
                                      "line first (the review rewrites the file and would lose it)")
                self.records.append(record)

    def write(self, captions: dict[str, str]) -> None:
        by_name = {posixpath.normpath(r["file_name"]): r for r in self.records}
        for name, caption in captions.items():
            record = by_name.get(name)
            if record is None:
                if not caption:
                    continue
                record = by_name[name] = {"file_name": name}
                self.records.append(record)
            key = "text" if "text" in record or "caption" not in record else "caption"
            record[key] = caption
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records)
        try:
            write_atomically(self.path, text.encode("utf-8", "surrogateescape"))
        except OSError as error:
            raise ReviewError(f"cannot write {self.path}: {error.strerror or error}; the captions on disk are "
                              "unchanged") from None
