"""Flags checked as they are parsed: a mistake is one line on stderr naming the flag, and exit 2.

Every command (`caption`, `train`, `evaluate`) and app.py build their parsers from `Parser` and
type their values with these helpers, so a typo is answered before any model loads, never with a
traceback, and a range is written the same way everywhere.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Callable, NoReturn

from .errors import CaptionError, one_line
from .images import DEFAULT_LIMITS, ImageLimits
from .model_source import PRECISIONS, PRECISION_HELP, check_source
from .settings import BOUNDS, INT_FIELDS, RANDOM_SEED, SETTING_HELP, SETTING_NAMES, STRATEGIES, CaptionSettings, \
    shown_default

# Limits an operator may set (app.py, and the CLI's image limits): wide, but each one finite.
MAX_FILE_MB = (1, 1024)
MAX_MEGAPIXELS = (1, 1000)


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as a single line (`--help` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        # An argument holding a newline (or any control character) must not split the line.
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else f"{bound:g}"


def _range_text(kind: str, low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        if not low_open and not high_open:
            return f"{kind} from {_fmt(low)} to {_fmt(high)}"
        lower = f"above {_fmt(low)}" if low_open else f"at least {_fmt(low)}"
        upper = f"below {_fmt(high)}" if high_open else f"at most {_fmt(high)}"
        return f"{kind} {lower} and {upper}"
    if low is not None:
        return f"{kind} {'above' if low_open else 'of at least'} {_fmt(low)}"
    return f"{kind}" if high is None else f"{kind} {'below' if high_open else 'of at most'} {_fmt(high)}"


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type=` for an integer within [low, high]."""
    allowed = _range_text("an integer", low, high, False, False)

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:  # also a number too long for int() to read
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {_shown(text)}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {_shown(text)}")
        return value

    parse.__name__ = allowed
    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """An argparse `type=` for a finite number within [low, high] (or open at either end)."""
    allowed = _range_text("a number", low, high, low_open, high_open)

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {_shown(text)}") from None
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {_shown(text)}")
        return value

    parse.__name__ = allowed
    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


def setting(name: str) -> Callable[[str], float]:
    """The type of the flag for CaptionSettings field `name`, from its BOUNDS."""
    low, high = BOUNDS[name]
    if name == "seed":  # RANDOM_SEED too, as on every other door
        parse = integer(RANDOM_SEED, int(high))
        parse.allowed = f"an integer from {int(low)} to {int(high)}"  # type: ignore[attr-defined]
        return parse
    return integer(int(low), int(high)) if name in INT_FIELDS else number(low, high)


MODEL_HELP = "Hub id or local checkpoint directory (default: $CAPTIONER_MODEL, then the model card's)"


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per CaptionSettings field, named after it (--num-beams, --max-length, ...)."""
    group = parser.add_argument_group("generation settings (defaults: the model card's call)")
    for name in SETTING_NAMES:
        flag = "--" + name.replace("_", "-")
        if name == "strategy":
            group.add_argument(flag, choices=STRATEGIES, default=shown_default(name), help=SETTING_HELP[name])
            continue
        kind = setting(name)
        group.add_argument(flag, type=kind, default=shown_default(name),
                           help=f"{SETTING_HELP[name]}: {kind.allowed} (default {shown_default(name)})")


def settings_from_arguments(args: argparse.Namespace) -> CaptionSettings:
    return CaptionSettings.from_values({name: getattr(args, name) for name in SETTING_NAMES})


def add_image_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The app's image limits, for the files and links a command reads."""
    parser.add_argument("--max-file-mb", type=integer(*MAX_FILE_MB), default=DEFAULT_LIMITS.max_file_bytes // 2**20,
                        help="larger image files and downloads are refused (default %(default)s)")
    parser.add_argument("--max-megapixels", type=integer(*MAX_MEGAPIXELS),
                        default=DEFAULT_LIMITS.max_pixels // 1_000_000,
                        help="images that decode to more pixels are refused, as decompression bombs (default %(default)s)")


def image_limits_from_arguments(args: argparse.Namespace) -> ImageLimits:
    return DEFAULT_LIMITS.with_caps(args.max_file_mb, args.max_megapixels)


def add_precision_argument(parser: argparse.ArgumentParser, default: str = "float32") -> None:
    parser.add_argument("--dtype", default=default, choices=PRECISIONS, help=PRECISION_HELP)


port = integer(1, 65535)


def model_source(text: str) -> str:
    """`--model`: a checkpoint folder that exists and holds a config.json, or a Hub id."""
    try:
        check_source(text)
    except CaptionError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def output_file(text: str) -> Path:
    """A file to write: not a folder, and in a folder that exists or can be made."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"must name a file to write; {_shown(text)} is a folder")
    folder = _nearest_existing(path.absolute().parent)
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {_shown(text)}: {folder} is a file, not a folder")
    return path


def output_folder(text: str) -> str:
    """A folder to write into: it may exist (as a folder) or be made."""
    path = Path(text)
    if not text or (path.exists() and not path.is_dir()):
        raise argparse.ArgumentTypeError(f"must be a folder; {_shown(text)} is a file")
    folder = _nearest_existing(path.absolute())
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot make the folder {_shown(text)}: {folder} is a file")
    return text


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def text(value: str) -> str:
    """Text that goes into output files: it must be valid Unicode (not stray bytes from the shell)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"must be UTF-8 text; got {value.encode('utf-8', 'backslashreplace').decode()}") from None
    return value


def from_env(name: str, fallback):
    """A flag's default from the environment as text, so argparse checks it like a typed value."""
    value = os.environ.get(name)
    return fallback if value is None or value == "" else value


def _shown(text) -> str:
    return repr(text) if isinstance(text, str) and (not text or text != text.strip() or not text.isprintable()) \
        else str(text)
