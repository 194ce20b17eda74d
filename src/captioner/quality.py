"""Which captions need a look: one set of quality flags for every door (the review table, the
many-images tab, `/caption_many`, the CLI's rows), so a script filters the way the page does.

A flag is a short name and a sentence; a row carries the names, and the page shows the sentences,
so no flag is told by colour alone. Some flags belong to one caption (`caption_flags`), some to
the caption among the others of its set (`set_flags`): a caption written for hundreds of images,
or a score far below the rest of the set.
"""

from __future__ import annotations

import functools
import re
import statistics
from typing import Iterable, Sequence

FLAG_TEXT = {
    "error": "the image could not be read",
    "empty": "no caption",
    "short": "very short",
    "repeated": "repeats words",
    "duplicate": "the same caption as other images",
    "low_score": "a low score for this set",
}
FLAGS = tuple(FLAG_TEXT)
SHORT_WORDS = 3  # fewer words than this is "very short": "a dog" says little as alt text
LOW_SCORE_SHARE = 0.1  # the lowest tenth of a set's scores is "low"...
LOW_SCORE_MIN_ROWS = 10  # ...once there are enough scores for a tenth to mean something

_WORD = re.compile(r"[\w']+")
# Words that repeat in good captions ("a man on a bench in front of a house"): a repeat made of
# these alone is not flagged.
_FUNCTION_WORDS = frozenset(
    "a an the of on in at to with and or by for from near next its it is are while".split()
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeats(text: str) -> list[str]:
    """What repeats in `text`: a word twice in a row ("dog dog"), a phrase of two to four words
    that holds a content word and comes back ("a man ... a man"), or a content word three times.

    >>> repeats("a man a man a man standing")
    ['a man a man']
    >>> repeats("a group of people next to a group of people")
    ['a group of people']
    >>> repeats("a cat on a table in front of a window")
    []
    """
    tokens = words(text)
    found: list[str] = []
    for first, second in zip(tokens, tokens[1:]):
        if first == second and first not in found:
            found.append(first)
    for size in (4, 3, 2):  # the longest repeat names it; the shorter ones inside it add nothing
        seen: set[tuple[str, ...]] = set()
        for start in range(len(tokens) - size + 1):
            gram = tuple(tokens[start : start + size])
            if all(t in _FUNCTION_WORDS for t in gram):
                continue
            if gram in seen and not any(_holds(f.split(), gram) for f in found):
                found.append(" ".join(gram))
            seen.add(gram)
    counts: dict[str, int] = {}
    for token in tokens:
        if token not in _FUNCTION_WORDS:
            counts[token] = counts.get(token, 0) + 1
    found += [t for t, n in counts.items() if n >= 3 and not any(t in f.split() for f in found)]
    return found


def _holds(longer: Sequence[str], shorter: Sequence[str]) -> bool:
    size = len(shorter)
    return any(list(longer[i : i + size]) == list(shorter) for i in range(len(longer) - size + 1))


def caption_flags(text: str | None, error: str | None = None) -> list[str]:
    """The flags a caption earns on its own, in FLAGS order.

    >>> caption_flags("a dog a dog a dog")
    ['repeated']
    >>> caption_flags("", error="not an image")
    ['error']
    """
    if error:
        return ["error"]
    return list(_own_flags(text or ""))


@functools.lru_cache(maxsize=65536)
def _own_flags(text: str) -> tuple[str, ...]:
    """A caption's own flags; cached, since a set's flags are worked out again after every edit."""
    text = text.strip()
    if not text:
        return ["empty"]
    flags = []
    if len(words(text)) < SHORT_WORDS:
        flags.append("short")
    if repeats(text):
        flags.append("repeated")
    return tuple(flags)


def same_caption_key(text: str) -> str:
    """Two captions are "the same" when they differ only in case, spacing and end punctuation."""
    return " ".join(words(text))


def set_flags(captions: Sequence[str | None], scores: Sequence[float | None] | None = None,
              errors: Sequence[str | None] | None = None) -> list[list[str]]:
    """Every row's flags, its own and those it earns among the set, in FLAGS order.

    >>> set_flags(["a red bus", "A red bus.", "a cat on a sofa"])
    [['duplicate'], ['duplicate'], []]
    """
    count = len(captions)
    scores = scores if scores is not None else [None] * count
    errors = errors if errors is not None else [None] * count
    flags = [caption_flags(c, e) for c, e in zip(captions, errors)]
    low = low_score_threshold(s for s, e in zip(scores, errors) if not e)
    for row, others, score in zip(flags, same_caption_counts(captions, errors), scores):
        if others:
            row.append("duplicate")
        if low is not None and score is not None and score <= low and not row[:1] == ["error"]:
            row.append("low_score")
        row.sort(key=FLAGS.index)
    return flags


def same_caption_counts(captions: Sequence[str | None], errors: Sequence[str | None] | None = None) -> list[int]:
    """For each row, how many other rows of the set have the same caption (errors share none)."""
    errors = errors if errors is not None else [None] * len(captions)
    keys = [same_caption_key(c) if c and not e else "" for c, e in zip(captions, errors)]
    uses: dict[str, int] = {}
    for key in keys:
        if key:
            uses[key] = uses.get(key, 0) + 1
    return [uses[key] - 1 if key else 0 for key in keys]


def low_score_threshold(scores: Iterable[float | None]) -> float | None:
    """The score at or under which a caption is low for its set: the lowest tenth, once the set
    has LOW_SCORE_MIN_ROWS scores; None before that."""
    known = sorted(float(s) for s in scores if s is not None)
    if len(known) < LOW_SCORE_MIN_ROWS:
        return None
    return statistics.quantiles(known, n=round(1 / LOW_SCORE_SHARE), method="inclusive")[0]


def describe(flags: Iterable[str], duplicates: int | None = None) -> str:
    """The flags as words for a person: "repeats words; the same caption as 3 other images"."""
    parts = []
    for flag in flags:
        if flag == "duplicate" and duplicates:
            parts.append(f"the same caption as {duplicates} other image{'s' if duplicates != 1 else ''}")
        else:
            parts.append(FLAG_TEXT[flag])
    return "; ".join(parts)
