"""A review set: one row an image, the caption's origin and flags, and an undo history.

A person's words are worth more than the model's. A caption that was already there or that a
person wrote (origin "existing" or "edited") is replaced by the model only through an explicit
recaption, and that too is a step that can be undone. Every change is one `Step` (a single edit,
a bulk edit, a recaption) holding each row's text before and after, so undo and redo restore
exactly, and the state (rows and history) goes to JSON and back for a reload of the page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..quality import FLAGS, describe, same_caption_counts, set_flags
from .edits import REGEX_SECONDS, BulkEdit, ReviewError

ORIGINS = ("", "existing", "model", "edited")  # "": not captioned yet
PERSON = ("existing", "edited")  # origins the model never replaces without being asked
MAX_STEPS = 500  # undo history kept; the oldest step goes first
SORTS = ("flags", "score", "name", "caption")
PREVIEW_ROWS = 5


@dataclass
class Row:
    """One image of the set. `name` is its path inside the set (the key); `image` where it is read."""

    name: str
    image: str
    caption: str = ""
    origin: str = ""
    score: float | None = None
    error: str | None = None
    flags: list[str] = field(default_factory=list)  # set by ReviewSet.refresh_flags


@dataclass
class Step:
    """One change that undo takes back whole: (name, caption, origin) before and after, each row."""

    label: str
    before: list[tuple[str, str, str]]
    after: list[tuple[str, str, str]]


@dataclass(frozen=True)
class Preview:
    """What a bulk edit would do: how many rows change, and a few of them before and after."""

    changed: int
    samples: list[tuple[str, str, str]]  # (name, before, after)


class ReviewSet:
    """The rows of one review, in the order they came, with their history.

    >>> review = ReviewSet([Row("a.jpg", "/tmp/a.jpg", "a cat", "existing")])
    >>> review.edit("a.jpg", "a grey cat").label
    'edit a.jpg'
    >>> review.undo().label, review.rows["a.jpg"].caption
    ('edit a.jpg', 'a cat')
    """

    def __init__(self, rows: Iterable[Row] = (), steps: Sequence[Step] = (), position: int | None = None) -> None:
        self.rows: dict[str, Row] = {}
        for row in rows:
            if row.name in self.rows:
                raise ReviewError(f"two images are named {row.name!r}")
            if row.origin not in ORIGINS:
                raise ReviewError(f"{row.name}: unknown origin {row.origin!r}")
            self.rows[row.name] = row
        self.steps: list[Step] = list(steps)
        self.position = len(self.steps) if position is None else position  # steps[:position] are applied
        self.refresh_flags()

    # ---- reading -----------------------------------------------------------------------------
    def refresh_flags(self) -> None:
        rows = list(self.rows.values())
        # A score is the model's about its own caption: once a person changed it, it says nothing.
        scores = [r.score if r.origin == "model" else None for r in rows]
        captions, errors = [r.caption for r in rows], [r.error for r in rows]
        for row, flags in zip(rows, set_flags(captions, scores, errors)):
            row.flags = flags
        self._same_captions = dict(zip(self.rows, same_caption_counts(captions, errors)))

    def uncaptioned(self) -> list[Row]:
        """Rows the model should caption: readable images with no caption from anyone yet."""
        return [r for r in self.rows.values() if not r.origin and not r.error]

    def flag_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(FLAGS, 0)
        for row in self.rows.values():
            for flag in row.flags:
                counts[flag] += 1
        return counts

    def view(self, sort: str = "flags", flag: str | None = None, search: str = "") -> list[Row]:
        """The rows to show: only those with `flag` and holding `search` (any case), sorted.
        "flags" puts the weakest first: most flags, then the lowest score."""
        if sort not in SORTS:
            raise ReviewError(f"sort by one of {', '.join(SORTS)}; got {sort!r}")
        if flag is not None and flag not in FLAGS:
            raise ReviewError(f"filter by one of {', '.join(FLAGS)}; got {flag!r}")
        needle = search.casefold()
        rows = [r for r in self.rows.values()
                if (flag is None or flag in r.flags) and (not needle or needle in r.caption.casefold()
                                                            or needle in r.name.casefold())]
        keys = {
            "flags": lambda r: (-len(r.flags), _score_key(r), r.name),
            "score": lambda r: (_score_key(r), r.name),
            "name": lambda r: r.name,
            "caption": lambda r: (r.caption.casefold(), r.name),
        }
        return sorted(rows, key=keys[sort])

    def flag_text(self, row: Row) -> str:
        """The row's flags as words, with how many others share its caption."""
        return describe(row.flags, self._same_captions.get(row.name))

    # ---- changing ----------------------------------------------------------------------------
    def edit(self, name: str, caption: str) -> Step:
        """A person's caption for one image."""
        row = self._row(name)
        if row.error:
            raise ReviewError(f"{name} could not be read ({row.error}), so it has no caption to edit")
        return self._commit(f"edit {name}", {name: (caption, "edited")})

    def preview(self, edit: BulkEdit, names: Iterable[str] | None = None) -> Preview:
        changes = self._bulk(edit, names)
        samples = [(n, self.rows[n].caption, text) for n, (text, _) in list(changes.items())[:PREVIEW_ROWS]]
        return Preview(len(changes), samples)

    def apply(self, edit: BulkEdit, names: Iterable[str] | None = None) -> Step:
        """The bulk edit on `names` (all rows when None) as one step; rows it would not change stay
        out of the step. Nothing to change is an error: the person expected something to happen."""
        changes = self._bulk(edit, names)
        if not changes:
            raise ReviewError(f"{edit.describe()} changes no caption here")
        return self._commit(f"{edit.describe()} on {len(changes)} caption{'s' * (len(changes) != 1)}", changes)

    def set_model_captions(self, captions: dict[str, tuple[str, float | None]], replace: bool = False) -> Step | None:
        """The model's captions for the rows named. Without `replace` (the explicit recaption) a
        row that already has a caption keeps it, whoever wrote it."""
        changes, scores = {}, {}
        for name, (text, score) in captions.items():
            row = self._row(name)
            if row.error or (row.origin and not replace):
                continue
            changes[name] = (text, "model")
            scores[name] = score
        if not changes:
            return None
        step = self._commit(f"{'recaption' if replace else 'caption'} {len(changes)} image"
                            f"{'s' * (len(changes) != 1)}", changes, record=replace)
        for name, score in scores.items():
            self.rows[name].score = score
        self.refresh_flags()
        return step

    def set_errors(self, errors: dict[str, str]) -> None:
        """Images that could not be read (found when captioning or drawing them): error rows,
        which keep any caption they had out of the way but not lost (it stays in the row)."""
        for name, message in errors.items():
            self._row(name).error = message
        self.refresh_flags()

    def undo(self) -> Step:
        if self.position == 0:
            raise ReviewError("nothing to undo")
        self.position -= 1
        step = self.steps[self.position]
        self._put(step.before)
        return step

    def redo(self) -> Step:
        if self.position == len(self.steps):
            raise ReviewError("nothing to redo")
        step = self.steps[self.position]
        self.position += 1
        self._put(step.after)
        return step

    # ---- state for a reload ------------------------------------------------------------------
    def to_state(self) -> dict:
        """Rows and history as JSON-ready values (flags are derived, so not kept)."""
        # By hand, not dataclasses.asdict: its deep copies took most of a save's time on large sets.
        rows = [{"name": r.name, "image": r.image, "caption": r.caption, "origin": r.origin, "score": r.score,
                 "error": r.error} for r in self.rows.values()]
        return {"rows": rows, **self.history_state()}

    def history_state(self) -> dict:
        """The undo history alone, as to_state writes it (a folder's review keeps its rows in files)."""
        steps = [{"label": s.label, "before": [list(t) for t in s.before], "after": [list(t) for t in s.after]}
                 for s in self.steps]
        return {"steps": steps, "position": self.position}

    @classmethod
    def from_state(cls, state: dict) -> ReviewSet:
        try:
            rows = [Row(**row) for row in state["rows"]]
            steps = [Step(s["label"], [tuple(t) for t in s["before"]], [tuple(t) for t in s["after"]])
                     for s in state["steps"]]
            position = int(state["position"])
        except (KeyError, TypeError, ValueError) as error:
            raise ReviewError(f"the saved review is not one this version can read ({error})") from None
        if not 0 <= position <= len(steps):
            raise ReviewError("the saved review's history is damaged (its position is out of range)")
        return cls(rows, steps, position)

    # ---- inside ------------------------------------------------------------------------------
    def _row(self, name: str) -> Row:
        try:
            return self.rows[name]
        except KeyError:
            raise ReviewError(f"no image named {name!r} in this set") from None

    def _bulk(self, edit: BulkEdit, names: Iterable[str] | None) -> dict[str, tuple[str, str]]:
        rows = self.rows.values() if names is None else [self._row(n) for n in names]
        deadline = time.monotonic() + REGEX_SECONDS
        changes = {}
        for row in rows:
            if row.error or not row.origin:  # no caption yet: nothing to edit
                continue
            text = edit.apply(row.caption, deadline)
            if text != row.caption:
                changes[row.name] = (text, "edited")
        return changes

    def _commit(self, label: str, changes: dict[str, tuple[str, str]], record: bool = True) -> Step:
        before = [(n, self.rows[n].caption, self.rows[n].origin) for n in changes]
        after = [(n, text, origin) for n, (text, origin) in changes.items()]
        step = Step(label, before, after)
        self._put(after)
        if record:
            del self.steps[self.position:]  # a new change ends the redo branch
            self.steps.append(step)
            if len(self.steps) > MAX_STEPS:
                del self.steps[0]
            self.position = len(self.steps)
        return step

    def _put(self, states: list[tuple[str, str, str]]) -> None:
        for name, caption, origin in states:
            row = self.rows[name]
            row.caption, row.origin = caption, origin
        self.refresh_flags()


def _score_key(row: Row) -> float:
    return row.score if row.score is not None else float("inf")
