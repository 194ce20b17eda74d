"""`python -m captioner review FOLDER`: the review page for a folder on this machine.

The folder's own caption files are the review: a sidecar beside each image (photo.jpg ->
photo.txt) is read when the page starts and replaced the moment a caption changes (atomically:
a kill leaves the old text or the new, never half). The undo history is kept beside the images,
in `.captioner-review.json`, so undo works after a restart. Thumbnails go to a cache folder of
their own, not into the person's folder. Served on 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from ..caption_files import write_atomically
from ..review import ReviewError, ReviewSet
from ..review.sources import OWN_FILES, read_folder
from .review_service import ReviewService
from .service import CaptionService

HISTORY = OWN_FILES + "-review.json"


class FolderReviews(ReviewService):
    """One review: the folder's. Every change goes to its caption files before it is acknowledged."""

    def __init__(self, service: CaptionService, folder: Path, sidecar: str = ".txt") -> None:
        self.folder = Path(folder).absolute()
        key = hashlib.sha256(str(self.folder).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        super().__init__(service, Path(tempfile.gettempdir()) / "captioner-folder-reviews" / key)
        self.token = key
        self.sidecar = sidecar
        self.history = self.folder / HISTORY
        found = read_folder(self.folder, sidecar)
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
        for name, row in review.rows.items():
            if self._written.get(name) == row.caption:
                continue
            target = Path(row.image).with_suffix(self.sidecar)
            try:
                if row.caption or row.origin:
                    write_atomically(target, row.caption.encode("utf-8", "surrogateescape") + b"\n")
                else:
                    target.unlink(missing_ok=True)
            except OSError as error:
                raise ReviewError(f"cannot write {target}: {error.strerror or error}; the caption on disk is "
                                  "unchanged") from None
            self._written[name] = row.caption
        state = {"steps": review.to_state()["steps"], "position": review.position}
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

    def _check_writable(self) -> None:
        probe = self.folder / f"{OWN_FILES}-probe.partial"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ReviewError(f"{self.folder} cannot be written ({error.strerror or error}): the review writes "
                              "each caption beside its image; copy the folder somewhere writable") from None
