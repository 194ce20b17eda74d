"""Bulk edits of captions: a prefix or suffix (a trigger word for a LoRA), find and replace in
plain text or as a regular expression, trimming spaces, and case. Each is a value that says what
it does to one caption; the set previews it (how many rows change, a few before and after) and
applies it as one step that can be undone.

Regular expressions run on the `regex` package (already installed with transformers) for its
timeout: Python's own `re` cannot stop a pattern that backtracks for ever, and on a shared Space
one visitor's pattern would hold a server thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import regex

from ..errors import CaptionError, one_line

KINDS = ("prefix", "suffix", "replace", "trim", "case")
CASES = ("lower", "upper", "sentence")
REGEX_SECONDS = 2.0  # for one bulk edit over the whole set
MAX_PATTERN_CHARS = 1000


class ReviewError(CaptionError):
    """A review action that cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class BulkEdit:
    """One edit for many captions.

    >>> BulkEdit("prefix", text="tok, ").apply("a cat")
    'tok, a cat'
    >>> BulkEdit("replace", find=r"\\bman\\b", text="person", regex=True).apply("a man and a man")
    'a person and a person'
    """

    kind: str
    text: str = ""  # the prefix, the suffix, or the replacement
    find: str = ""  # replace: what to find
    regex: bool = False  # replace: `find` is a regular expression (`text` may use \\1 or \\g<name>)
    case: str = "lower"  # case: lower, upper or sentence

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ReviewError(f"a bulk edit is one of {', '.join(KINDS)}; got {one_line(self.kind)!r}")
        if self.kind == "case" and self.case not in CASES:
            raise ReviewError(f"case is one of {', '.join(CASES)}; got {one_line(self.case)!r}")
        if self.kind in ("prefix", "suffix") and not self.text:
            raise ReviewError(f"type the {self.kind} to add first")
        if self.kind == "replace":
            if not self.find:
                raise ReviewError("type what to find first")
            if len(self.find) > MAX_PATTERN_CHARS:
                raise ReviewError(f"what to find is {len(self.find)} characters; at most {MAX_PATTERN_CHARS}")
            if self.regex:
                object.__setattr__(self, "_pattern", _compile(self.find))
                _check_replacement(self._pattern, self.text)

    def describe(self) -> str:
        """The edit in words, for the history ("prefix 'tok, '")."""
        if self.kind in ("prefix", "suffix"):
            return f"{self.kind} {self.text!r}"
        if self.kind == "replace":
            return f"replace {'pattern ' if self.regex else ''}{self.find!r} with {self.text!r}"
        return "trim spaces" if self.kind == "trim" else f"{self.case} case"

    def apply(self, caption: str, deadline: float | None = None) -> str:
        """`caption` after the edit. A prefix or suffix already there is not added twice, so
        applying the same trigger word again changes nothing."""
        if self.kind == "prefix":
            return caption if caption.startswith(self.text) else self.text + caption
        if self.kind == "suffix":
            return caption if caption.endswith(self.text) else caption + self.text
        if self.kind == "trim":
            return " ".join(caption.split())
        if self.kind == "case":
            if self.case == "lower":
                return caption.lower()
            if self.case == "upper":
                return caption.upper()
            stripped = caption.lstrip()
            return caption[: len(caption) - len(stripped)] + stripped[:1].upper() + stripped[1:]
        if not self.regex:
            return caption.replace(self.find, self.text)
        left = REGEX_SECONDS if deadline is None else deadline - time.monotonic()
        try:
            return self._pattern.sub(self.text, caption, timeout=max(left, 0.001))
        except TimeoutError:
            raise ReviewError(
                f"the pattern {one_line(self.find)!r} took too long (over {REGEX_SECONDS:g} s for the set); "
                "simplify it, e.g. without nested repeats such as (a+)+"
            ) from None


def _compile(pattern: str):
    try:
        return regex.compile(pattern, regex.VERSION0)
    except regex.error as error:
        where = f" at position {error.pos}" if getattr(error, "pos", None) is not None else ""
        message = str(error).split(" at position")[0]
        raise ReviewError(f"{one_line(pattern)!r} is not a valid regular expression: {message}{where}") from None


_ESCAPES = set("ntrfvab\\")
_REFERENCE = regex.compile(r"\\(?:g<([^>]*)>|([0-9]{1,2})|(.?))", regex.DOTALL)


def _check_replacement(pattern, replacement: str) -> None:
    """A replacement that names a group the pattern lacks is refused now: `regex` itself would
    only find out at the first caption that matches, halfway through the set."""
    for match in _REFERENCE.finditer(replacement):
        name, number, other = match.groups()
        if name is not None:
            known = name in pattern.groupindex or (name.isdigit() and int(name) <= pattern.groups)
            problem = None if known else f"the pattern has no group {name!r}"
        elif number is not None:
            problem = None if int(number) <= pattern.groups else f"the pattern has no group {number}"
        elif other == "":
            problem = "it ends with a lone backslash (write \\\\ for one)"
        else:
            problem = None if other in _ESCAPES else f"\\{other} is not an escape a replacement knows"
        if problem:
            raise ReviewError(f"the replacement {one_line(replacement)!r} does not fit: {problem}")
