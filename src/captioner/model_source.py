"""Where a model comes from: a Hub id or a local `save_pretrained` folder, checked before any load.

Every command and the app take the same `--model` (or $CAPTIONER_MODEL, then the model card's
checkpoint), so a typo in it gets the same one-line answer wherever it is made. No torch here:
the command line checks the source while it parses its flags.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ModelLoadError

DEFAULT_MODEL = "nlpconnect/vit-gpt2-image-captioning"
MODEL_ENV_VAR = "CAPTIONER_MODEL"
# The dtypes a model loads in; "int8" loads fp32 weights and quantizes the linear layers
# (CPU, opt-in fast mode, not exact).
PRECISIONS = ("float32", "bfloat16", "float16", "int8")
PRECISION_HELP = "int8: opt-in CPU fast mode (not exact); bfloat16/float16: for GPUs"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_source(source: str | os.PathLike | None) -> str:
    """The source given, else $CAPTIONER_MODEL, else the model card's checkpoint."""
    return str(source or os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL)


def check_source(source: str) -> None:
    """A folder must hold a saved checkpoint; anything else must read as a Hub id."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"'{source}' is a file; --model / {MODEL_ENV_VAR} takes a checkpoint directory or a Hub id")
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"'{source}' is not a saved captioning checkpoint (it has no config.json). "
                f"Point --model / {MODEL_ENV_VAR} at a directory written by save_pretrained."
            )
    elif not _HUB_ID.match(source):
        raise ModelLoadError(
            f"model directory '{source}' does not exist. Point --model / {MODEL_ENV_VAR} at a "
            "checkpoint directory or a Hub id."
        )


def load_failure_message(source: str, error: Exception) -> str:
    if Path(source).expanduser().is_dir():
        return f"could not load the checkpoint in '{source}': {error}"
    return (
        f"could not load model '{source}' from the Hugging Face Hub (no network, or not cached). "
        f"Download it once where there is a network, or copy a saved checkpoint here, and set "
        f"{MODEL_ENV_VAR} (or --model) to its local directory."
    )
