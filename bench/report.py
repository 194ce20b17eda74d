"""How bench/speed.py writes its numbers: rounded for JSON, as percentages and sizes for the table,
with the machine named."""

from __future__ import annotations

import os
from pathlib import Path


def agreement(a: list[str], b: list[str]) -> float | None:
    """The share of pairs that are equal; None when there is nothing to compare."""
    pairs = list(zip(a, b))
    return sum(x == y for x, y in pairs) / len(pairs) if pairs else None


def rounded(value):
    """For the JSON line: floats to 4 places, and None for a block with nothing measured in it."""
    if isinstance(value, float):
        return round(value, 4) if value == value else None
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def percent(value) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def number_text(value, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def sizes_text(sizes: dict[int, int]) -> str:
    return " ".join(f"{size}x{n}" for size, n in sizes.items())


def machine_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "CPU")
    return f"{model}, {os.cpu_count()} cores"

