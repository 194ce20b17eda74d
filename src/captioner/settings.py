"""Generation settings: one frozen, validated, hashable object per request.

Only this module knows transformers' `generate()` argument names, and every door builds its
controls from the table here: the CLI's flags (arguments.py), the page's widgets (app/ui.py) and
the MCP tools' parameters (app/tools.py) take their names, ranges, defaults and help from
CaptionSettings' fields, BOUNDS and SETTING_HELP, and all of them read RANDOM_SEED as "no seed".

The defaults reproduce the model card's call, `generate(pixel_values, max_length=16, num_beams=4)`,
so a default caption equals the one the model card's example code prints.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from .errors import InvalidSettings

Strategy = Literal["beam", "greedy", "sample"]
STRATEGIES: tuple[str, ...] = ("beam", "greedy", "sample")

# Bounds keep every request's work finite: at most 64 tokens x 8 beams x 8 captions per image.
BOUNDS: dict[str, tuple[float, float]] = {
    "max_length": (2, 64),
    "num_beams": (1, 8),
    "temperature": (0.05, 5.0),
    "top_k": (0, 1000),
    "top_p": (0.05, 1.0),
    "repetition_penalty": (1.0, 3.0),
    "no_repeat_ngram_size": (0, 6),
    "num_captions": (1, 8),
    "seed": (0, 2**32 - 1),
}
# "No seed" (fresh randomness each call) where a door needs a number: a flag, a widget, a tool parameter.
RANDOM_SEED = -1
SETTING_HELP: dict[str, str] = {
    "strategy": "how words are chosen: 'beam' (beam search, the model card's default), 'greedy', "
                "or 'sample' (random; uses temperature, top_k, top_p and seed)",
    "max_length": "the longest caption in tokens, counting the start token",
    "num_beams": "beams searched (beam search only)",
    "temperature": "randomness of sampling (sample only); lower is more conservative",
    "top_k": "sample among the k likeliest tokens (sample only; 0 = off)",
    "top_p": "sample among the likeliest tokens whose probabilities add up to p (sample only; 1 = off)",
    "repetition_penalty": "discourages repeated words (1 = off)",
    "no_repeat_ngram_size": "forbids repeating any run of this many tokens (0 = off)",
    "num_captions": "captions to return, best first with scores (at most num_beams with beam search; 1 with greedy)",
    "seed": f"makes sampling reproducible ({RANDOM_SEED} = random)",
}
INT_FIELDS = frozenset(
    {"max_length", "num_beams", "top_k", "no_repeat_ngram_size", "num_captions", "seed"}
)
FLOAT_FIELDS = frozenset({"temperature", "top_p", "repetition_penalty"})


@dataclass(frozen=True)
class CaptionSettings:
    """How to decode a caption. Hashable, so a batch can be grouped by it.

    >>> CaptionSettings().generate_kwargs()
    {'max_length': 16, 'num_return_sequences': 1, 'do_sample': False, 'num_beams': 4}
    >>> CaptionSettings(strategy="sample", seed=7, temperature=0.8).strategy
    'sample'
    """

    strategy: Strategy = "beam"
    max_length: int = 16  # counts the decoder start token, as transformers does
    num_beams: int = 4  # beam search only
    temperature: float = 1.0  # sampling only
    top_k: int = 50  # sampling only; 0 turns it off
    top_p: float = 1.0  # sampling only; 1.0 turns it off
    repetition_penalty: float = 1.0  # 1.0 turns it off
    no_repeat_ngram_size: int = 0  # 0 turns it off
    num_captions: int = 1  # captions returned per image, best first
    seed: int | None = None  # sampling only; None draws fresh randomness each call

    def __post_init__(self) -> None:
        if type(self.seed) is int and self.seed == RANDOM_SEED:
            object.__setattr__(self, "seed", None)  # frozen: the one normalisation, before hashing
        if self.strategy not in STRATEGIES:
            raise InvalidSettings(
                f"strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}", "strategy"
            )
        for name in INT_FIELDS | FLOAT_FIELDS:
            value = getattr(self, name)
            if name == "seed" and value is None:
                continue
            _check_number(name, value, integer=name in INT_FIELDS)
        if self.strategy == "beam" and self.num_captions > self.num_beams:
            raise InvalidSettings(
                f"num_captions ({self.num_captions}) cannot exceed num_beams ({self.num_beams}) "
                "with beam search",
                "num_captions",
            )
        if self.strategy == "greedy" and self.num_captions != 1:
            raise InvalidSettings(
                "greedy decoding gives exactly one caption; use beam search or sampling "
                f"for num_captions={self.num_captions}",
                "num_captions",
            )

    @classmethod
    def from_values(cls, values: Mapping[str, Any], base: CaptionSettings | None = None) -> CaptionSettings:
        """Build settings from loosely typed values (sliders and JSON send 4.0 for 4).

        Integral floats become ints; anything else is checked by __post_init__ as given.
        """
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidSettings(f"unknown setting(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if name in INT_FIELDS and isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            if name == "seed" and (value == "" or value is None or value == RANDOM_SEED):
                value = None
            changes[name] = value
        return dataclasses.replace(base or cls(), **changes)

    @property
    def is_deterministic(self) -> bool:
        return self.strategy != "sample" or self.seed is not None

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for `model.generate`; neutral options are left out so the
        default call is exactly the model card's."""
        kwargs: dict[str, Any] = {
            "max_length": self.max_length,
            "num_return_sequences": self.num_captions,
        }
        if self.strategy == "beam":
            kwargs.update(do_sample=False, num_beams=self.num_beams)
        elif self.strategy == "greedy":
            kwargs.update(do_sample=False, num_beams=1)
        else:
            kwargs.update(
                do_sample=True,
                num_beams=1,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
            )
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        return kwargs


def _check_number(name: str, value: Any, *, integer: bool) -> None:
    low, high = BOUNDS[name]
    kind = "an integer" if integer else "a number"
    allowed = f"{kind} from {_fmt(low)} to {_fmt(high)}"
    # bool is an int subclass; True is never a sensible beam count.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidSettings(f"{name} must be {allowed}; got {value!r}", name)
    if integer and not isinstance(value, int):
        raise InvalidSettings(f"{name} must be {allowed}; got {value!r}", name)
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidSettings(f"{name} must be {allowed}; got {value!r}", name)


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


DEFAULT_SETTINGS = CaptionSettings()
SETTING_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(CaptionSettings))


def shown_default(name: str) -> Any:
    """A field's default as a door shows it: RANDOM_SEED for "no seed"."""
    value = getattr(DEFAULT_SETTINGS, name)
    return RANDOM_SEED if name == "seed" and value is None else value
