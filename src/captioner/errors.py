"""Errors whose messages are written for the person who sent the request.

The UI turns a CaptionError into gr.Error and the CLI into one line on stderr; anything else is
a bug and stays loud.
"""

from __future__ import annotations


class CaptionError(Exception):
    """Base class: the message is safe and useful to show to a user as written."""


class InvalidImage(CaptionError):
    """The input is not an image we can caption (empty, corrupt, unsupported, too large...)."""


class InvalidSettings(CaptionError, ValueError):
    """A generation setting is out of range or of the wrong type; the message names it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ModelLoadError(CaptionError):
    """The model could not be loaded; the message says what to do about it."""


class RequestTooLarge(CaptionError):
    """A request asks for more work than the configured limits allow."""


def one_line(text: object) -> str:
    """`text` on one line: a newline or any control character it quotes (a file name, a column, an
    argument) is shown as its escape.

    >>> one_line("bad\\nname")
    'bad\\\\nname'
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class MissingPackage(CaptionError):
    """An optional package a feature needs is not installed; the message names what brings it."""


def require(module: str, feature: str, requirements: str) -> None:
    """Raise MissingPackage unless `module` can be imported (checked without importing it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingPackage(f"{feature} needs the {module} package: pip install -r {requirements}")
