"""Clocks and tallies for bench/speed.py: the time a paused app was let run, and per-path results."""

from __future__ import annotations

import collections
import itertools

class RunningClock:
    """The seconds a path has been let run (resumed), however its turns were spread out."""

    def __init__(self) -> None:
        self.turns: list[tuple[float, float]] = []

    def add(self, began: float, ended: float) -> None:
        self.turns.append((began, ended))

    def at(self, t: float) -> float:
        return sum(max(0.0, min(t, ended) - began) for began, ended in self.turns)

    def turn_of(self, t: float) -> int:
        """The index of the turn in which `t` fell (the last turn for anything after it)."""
        return next((i for i, (_, ended) in enumerate(self.turns) if t <= ended), len(self.turns) - 1)


def batch_ends(answered_at: list[float], batches: list[int]) -> list[float]:
    """When each of the server's batches was answered: batches run one at a time, so the requests
    answered first belong to the first batch, and so on; a batch's end is its last answer."""
    if sum(batches) != len(answered_at):
        raise SystemExit(f"the server's log has {sum(batches)} batched requests, the clients {len(answered_at)} answers")
    times = sorted(answered_at)
    return [times[end - 1] for end in itertools.accumulate(batches)]


def steady_blocks(ends: list[float], batches: list[int], clock: RunningClock, until: float,
                  turn_block: list[int]) -> list[tuple[int, float]]:
    """Images and running seconds of each block of turns, from the end of the first batch (which
    held only the clients that got there first) to the end of the last batch answered before
    `until` (when the clients stopped asking). Each later batch counts in the block where it
    ended, from the end of the batch before it, so the blocks add up to the whole window."""
    blocks = [(0, 0.0)] * (max(turn_block) + 1)
    for index in range(1, len(batches)):
        if ends[index] > until:
            break
        block = turn_block[clock.turn_of(ends[index])]
        images, seconds = blocks[block]
        blocks[block] = (images + batches[index], seconds + clock.at(ends[index]) - clock.at(ends[index - 1]))
    return blocks


class Tally:
    """One path's measurements: single-request latencies per round; batched images and running
    seconds per block of turns; the captions of each image."""

    def __init__(self, rounds: int, blocks: int) -> None:
        self.latencies: list[list[float]] = [[] for _ in range(rounds)]
        self.page_latencies: list[float] = []  # the app only: the page's protocol, not gradio_client
        self.page_captions: dict[str, str] = {}
        self.blocks = [(0, 0.0)] * blocks
        self.single_captions: dict[str, str] = {}
        self.batch_sizes: collections.Counter = collections.Counter()
        self.captions: dict[str, str] = {}

    def add(self, block: int, images: int, seconds: float) -> None:
        self.blocks[block] = (self.blocks[block][0] + images, self.blocks[block][1] + seconds)

    @property
    def latency_s(self) -> float:
        every = [t for round_ in self.latencies for t in round_]
        return sum(every) / len(every)

    @property
    def images(self) -> int:
        return sum(images for images, _ in self.blocks)

    @property
    def images_per_s(self) -> float:
        seconds = sum(seconds for _, seconds in self.blocks)
        return self.images / seconds if seconds else float("nan")

    def block_images_per_s(self, index: int) -> float:
        images, seconds = self.blocks[index]
        return images / seconds if seconds else float("nan")


