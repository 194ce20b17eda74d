"""Every use of transformers' private parts, gated on the releases it was checked on, and logged.

1. Grouped cross-attention (speedups.py) replaces GPT-2's cross-attention modules, relying on
   GPT2Attention's forward signature and cache handling. Fallback: the stock modules.
2. Resuming training: the Trainer reloads checkpoint-*/model.safetensors with a raw
   `load_state_dict`, where `save_pretrained` wrote ViT's weights under their legacy names, so they
   would be reported missing and silently stay at their starting values. On a checked release the
   Trainer's private `_load_from_checkpoint` loads through `from_pretrained`, which maps the names
   back. Fallback: the checkpoint's weights are loaded by name before the Trainer's own load,
   which then leaves the names it does not know as they are.

tests/test_speedups.py and tests/test_training.py run both fallbacks.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("captioner.engine")

CHECKED_TRANSFORMERS = ("5.23.",)  # the releases whose private parts below were read and tested


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def checked_transformers() -> bool:
    return transformers_version().startswith(CHECKED_TRANSFORMERS)


def gpt2_attention_class():
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    return GPT2Attention


def load_checkpoints_by_name(trainer_class: type) -> bool:
    """Change 2 above, on `trainer_class` (a Trainer subclass of our own). False where it cannot
    be made: call `preload_checkpoint` before resuming."""
    if checked_transformers() and callable(getattr(trainer_class, "_load_from_checkpoint", None)):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            target = getattr(model, "module", model) if model is not None else self.model
            saved = type(self.model).from_pretrained(resume_from_checkpoint)
            target.load_state_dict(saved.state_dict(), strict=True)

        trainer_class._load_from_checkpoint = _load_from_checkpoint
        log.info("transformers %s, resuming: the Trainer loads checkpoints by name", transformers_version())
        return True
    log.info("transformers %s, resuming: checkpoints preloaded by name (the Trainer's loader is unchecked "
             "on this release)", transformers_version())
    return False


def preload_checkpoint(model, checkpoint: str | Path) -> None:
    """Load the weights saved in `checkpoint` (a checkpoint-* folder) into `model`, by name."""
    model.load_state_dict(type(model).from_pretrained(checkpoint).state_dict(), strict=True)
