"""Captioning collections: sources of images -> the Captioner, batch by batch -> writers.

Only paths (or, for a Parquet dataset, one record batch at a time) are held up front; images are
decoded a few batches ahead of the model on a small thread pool (Pillow releases the GIL while it
decodes), and each finished batch goes to the writers at once (outputs.py). The Ray path
(ray_data.py) feeds the same writers with the same `Result` batches.
"""

from __future__ import annotations

import collections
import itertools
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..caption_files import METADATA_NAMES
from ..engine.inference import Caption, Captioner
from ..errors import CaptionError
from ..fetch import FetchPolicy, fetch_bytes, is_url
from ..images import IMAGE_SUFFIXES, load_image
from ..quality import caption_flags
from ..settings import CaptionSettings


class SourceError(CaptionError):
    """The inputs hold no images, or a dataset lacks what is needed to read it."""


@dataclass(frozen=True)
class Item:
    """One image to caption. `key` names it in the output: the path as given, or a dataset row."""

    key: str
    image: str | bytes  # what load_image reads (on Ray, a dataset row's parquet.RowRef)
    relative: str = ""  # the path below the inputs' common folder (sidecars, metadata file_name)


@dataclass
class Result:
    item: Item
    texts: list[str] = field(default_factory=list)  # best first; prefix and suffix applied
    scores: list[float] | None = None  # with several captions per image
    error: str | None = None

    def row(self, key_name: str = "path") -> dict:
        """The JSON-lines / CSV / Parquet row: path and caption, or captions and scores, or error;
        then the quality flags the (best) caption earns on its own (quality.py). The flags that
        compare a caption with the rest of its set need the whole set, which a streamed,
        resumable run does not hold; `/caption_many` and a review add those."""
        row: dict = {key_name: self.item.key}
        if self.error is not None:
            row["error"] = self.error
        elif self.scores is None:
            row["caption"] = self.texts[0]
        else:
            row["captions"], row["scores"] = self.texts, self.scores
        row["flags"] = caption_flags(self.texts[0] if self.texts else "", self.error)
        return row


@dataclass
class Summary:
    captioned: int = 0
    skipped: int = 0  # already done: in the output being resumed, or a caption file kept
    failed: int = 0
    seconds: float = 0.0  # the captioning itself, from the first batch asked for to the last written
    startup_seconds: float = 0.0  # starting or joining Ray, before that
    # Loading the model: before `seconds` in one process; on Ray, the actors load theirs once the
    # run has begun, inside `seconds` (the quickest actor's load: no captioning before it).
    model_load_seconds: float = 0.0
    # Files in the folders given that are not images (by suffix), never passed over in silence:
    # counted in the line, named in the JSON summary and with --verbose.
    not_images: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = self.captioned / self.seconds if self.seconds > 0 else 0.0
        left_out = len(self.not_images)
        others = ("" if not left_out else ", skipped 1 file that is not an image" if left_out == 1
                  else f", skipped {left_out} files that are not images")
        return (f"captioned {self.captioned}, skipped {self.skipped} as already done{others}, failed {self.failed}, "
                f"in {self.seconds:.1f} s ({rate:.2f} images/s)")


CAPTION_SUFFIXES = (".txt", ".caption", ".json")  # a caption file beside its image: not "left out"


def find_images(paths: Sequence[str | os.PathLike], not_images: list[str] | None = None) -> list[Path]:
    """Files and image links as given; folders searched recursively for image suffixes, sorted.
    The other files of those folders go to `not_images`, except what belongs to the images: a
    caption file beside one (photo.txt), an imagefolder metadata file, a file being written."""
    found: list = []
    for raw in paths:
        if is_url(raw):
            found.append(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            found.extend(images)
            if not_images is not None:
                stems = {p.with_suffix("") for p in images}
                not_images.extend(str(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES
                                  and not _belongs_to_images(p, stems))
        else:
            found.append(path)
    return found


def _belongs_to_images(path: Path, image_stems: set[Path]) -> bool:
    return (path.name in METADATA_NAMES or path.name.endswith(".partial")
            or (path.suffix.lower() in CAPTION_SUFFIXES and path.with_suffix("") in image_stems))


def read_path_list(list_file: str | os.PathLike) -> list[str]:
    """`--from-list`: one path (file or folder) per line, as on the command line; blank lines and
    lines starting with # are skipped."""
    try:
        data = Path(list_file).read_bytes()
    except OSError as error:
        raise SourceError(f"cannot read the list {list_file}: {error.strerror or error}") from None
    # File names are bytes: a list made by `find` may hold names that are not UTF-8, kept as the
    # file system's own (surrogate escapes), as names found in a folder are.
    lines = (os.fsdecode(line).strip() for line in data.removeprefix(b"\xef\xbb\xbf").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def file_items(paths: Sequence[str | os.PathLike], not_images: list[str] | None = None) -> list[Item]:
    """Items for image files, links and folders, each file with its path below the folder they all share."""
    images = find_images(paths, not_images)
    if not images:
        raise SourceError("no images found in the given paths")
    local = [p.absolute() for p in images if not is_url(p)]
    root = Path(os.path.commonpath([p.parent for p in local])) if local else Path.cwd()
    return [Item(p, p, "") if is_url(p) else Item(str(p), str(p), p.absolute().relative_to(root).as_posix())
            for p in images]


def decorate(captions: Sequence[Caption], prefix: str = "", suffix: str = "", scored: bool = False):
    """Texts with prefix and suffix joined exactly as given; scores when several were asked for."""
    texts = [f"{prefix}{c.text}{suffix}" for c in captions]
    return texts, ([round(c.score, 4) for c in captions] if scored else None)


def caption_chunk(captioner: Captioner, items: Sequence[Item], decoded: Sequence, settings: CaptionSettings,
                  prefix: str = "", suffix: str = "") -> list[Result]:
    """Caption one batch whose images are decoded (or an error each): results in input order."""
    results = [Result(item) for item in items]
    good = [i for i, image in enumerate(decoded) if not isinstance(image, CaptionError)]
    for i, image in enumerate(decoded):
        if isinstance(image, CaptionError):
            results[i].error = str(image)
    if good:
        captions = captioner.caption([decoded[i] for i in good], settings)
        for i, image_captions in zip(good, captions):
            results[i].texts, results[i].scores = decorate(
                image_captions, prefix, suffix, scored=settings.num_captions > 1
            )
    return results


def decode(item: Item, captioner: Captioner, allow_private_urls: bool = False):
    """The item's image (a link fetched by the safe fetcher first), or the CaptionError that says
    why it cannot be captioned."""
    try:
        image = item.image
        if is_url(image):
            image = fetch_bytes(image, FetchPolicy(captioner.image_limits.max_file_bytes, allow_private_urls))
        return load_image(image, captioner.image_limits)
    except CaptionError as error:
        return error


def caption_batches(
    captioner: Captioner,
    items: Iterable[Item],
    settings: CaptionSettings,
    *,
    batch_size: int = 8,
    prefix: str = "",
    suffix: str = "",
    decode_workers: int = 2,
    ahead: int = 2,
    allow_private_urls: bool = False,
) -> Iterator[list[Result]]:
    """Yield the results batch by batch, in input order, while the next `ahead` batches decode."""
    with ThreadPoolExecutor(decode_workers, thread_name_prefix="captioner-decode") as pool:
        pending: collections.deque[tuple[list[Item], list[Future]]] = collections.deque()

        def finish() -> list[Result]:
            chunk, futures = pending.popleft()
            return caption_chunk(captioner, chunk, [f.result() for f in futures], settings, prefix, suffix)

        for chunk in _batched(items, batch_size):
            pending.append((chunk, [pool.submit(decode, item, captioner, allow_private_urls) for item in chunk]))
            if len(pending) > ahead:
                yield finish()
        while pending:
            yield finish()


def _batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def run(batches: Iterable[list[Result]], writers: Sequence, summary: Summary,
        progress: Callable[[list[Result]], None] = lambda results: None) -> Summary:
    """Hand each finished batch to every writer before the next is asked for; count it."""
    started = time.perf_counter()
    try:
        for results in batches:
            for writer in writers:
                writer.write(results)
            failed = sum(r.error is not None for r in results)
            summary.failed += failed
            summary.captioned += len(results) - failed
            progress(results)
    finally:
        summary.seconds = time.perf_counter() - started
    return summary
