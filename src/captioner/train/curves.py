"""Training curves from the Trainer's log history: training loss per logging step, validation loss
and perplexity per epoch, drawn with matplotlib into OUTPUT/training_curves.png.

The plotted series are also written beside it (training_curves.json), so what the picture shows
can be checked, and compared across runs, without reading pixels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def series(log_history: list[dict]) -> dict[str, list[list[float]]]:
    """[[step, loss]] for training; [[epoch, loss, perplexity]] for validation."""
    train = [[entry["step"], entry["loss"]] for entry in log_history if "loss" in entry and "step" in entry]
    validation = [[entry["epoch"], entry["eval_loss"], math.exp(min(entry["eval_loss"], 50))]
                  for entry in log_history if "eval_loss" in entry]
    return {"train": train, "validation": validation}


def plot(log_history: list[dict], output: Path) -> Path:
    """Write training_curves.png (and .json) into `output`; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file, on a server or in CI
    import matplotlib.pyplot as plt

    data = series(log_history)
    figure, (loss_axes, perplexity_axes) = plt.subplots(1, 2, figsize=(11, 4))
    if data["train"]:
        steps, losses = zip(*data["train"])
        loss_axes.plot(steps, losses, label="training loss (per logging step)", color="tab:blue")
    if data["validation"]:
        epochs, losses, perplexities = zip(*data["validation"])
        steps_per_epoch = _steps_per_epoch(log_history)
        loss_axes.plot([e * steps_per_epoch for e in epochs], losses, "o-", color="tab:orange",
                       label="validation loss (per epoch)")
        perplexity_axes.plot(epochs, perplexities, "o-", color="tab:green")
    loss_axes.set(xlabel="optimizer step", ylabel="loss", title="Loss")
    loss_axes.legend()
    perplexity_axes.set(xlabel="epoch", ylabel="perplexity", title="Validation perplexity")
    figure.tight_layout()
    path = output / "training_curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    (output / "training_curves.json").write_text(json.dumps(data), encoding="utf-8")
    return path


def _steps_per_epoch(log_history: list[dict]) -> float:
    for entry in reversed(log_history):
        if entry.get("epoch") and entry.get("step"):
            return entry["step"] / entry["epoch"]
    return 1.0
