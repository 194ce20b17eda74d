"""`python -m captioner caption ...`: the flags of bulk captioning, and the run that wires a source,
the Captioner (or Ray) and the writers together. The work itself is in pipeline.py and its writers."""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

from ..arguments import (
    MODEL_HELP, add_image_limit_arguments, add_precision_argument, add_settings_arguments,
    image_limits_from_arguments, integer, model_source, settings_from_arguments, text,
)
from ..errors import CaptionError
from .outputs import SIDECAR_POLICIES, MetadataOutput, Printer, RowsOutput, Sidecars
from .pipeline import Item, Summary, caption_batches, file_items, read_path_list, run

BATCH = 8  # images decoded and captioned together
OUTPUT_SUFFIXES = (".jsonl", ".csv", ".parquet")


def add_caption_command(commands) -> None:
    caption = commands.add_parser("caption", help="caption images, folders, lists of paths or a Parquet dataset")
    caption.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders (searched recursively)")
    caption.add_argument("--model", type=model_source, help=MODEL_HELP)
    add_bulk_arguments(caption)
    add_image_limit_arguments(caption)
    add_precision_argument(caption)
    add_settings_arguments(caption)
    caption.set_defaults(handler=run_caption, check=check_arguments)


def add_bulk_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = parser.add_argument_group("inputs (besides PATHs)")
    inputs.add_argument("--from-list", metavar="FILE", help="a text file of image paths or folders, one per line")
    inputs.add_argument("--dataset", metavar="PATH", help="a Parquet file or folder (Hugging Face layout); needs --output X.parquet")
    inputs.add_argument("--image-column", type=text, default="image", help="the dataset's image column (default image)")
    inputs.add_argument("--caption-column", type=text, default="caption", help="the column added to the dataset (default caption)")
    inputs.add_argument("--allow-private-urls", action="store_true",
                        help="fetch image links to private and loopback addresses too (intranets; refused by default)")
    out = parser.add_argument_group("outputs (rows go to standard output when neither --output nor --sidecar is given)")
    out.add_argument("--output", type=Path, metavar="FILE",
                     help=".jsonl, .csv or .parquet; metadata.jsonl / metadata.csv write the imagefolder layout")
    again = out.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="skip images already in --output and append the rest")
    again.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    out.add_argument("--sidecar", metavar="EXT", help="write each caption beside its image, e.g. .txt (photo.jpg -> photo.txt)")
    out.add_argument("--existing", choices=SIDECAR_POLICIES, default="skip",
                     help="an image whose caption file exists: skip it (default; the file is untouched), "
                          "overwrite, append or prepend")
    out.add_argument("--output-dir", type=Path, help="with --sidecar: write caption files here, mirroring the tree")
    out.add_argument("--prefix", type=text, default="", help="joined before every caption exactly as given (e.g. a trigger word)")
    out.add_argument("--suffix", type=text, default="", help="joined after every caption exactly as given")
    out.add_argument("--json", action="store_true", help="print JSON lines (and the summary as JSON)")
    out.add_argument("--verbose", action="store_true", help="name each file of the folders that is not an image "
                                                           "(the summary counts them)")
    out.add_argument("--batch-size", type=integer(1, 256), default=BATCH, help=f"images per model call, 1 to 256 (default {BATCH})")
    ray = parser.add_argument_group("Ray Data (pip install -r requirements-ray.txt)")
    ray.add_argument("--ray", action="store_true", help="caption on Ray Data: a local Ray, or the cluster at --ray-address")
    ray.add_argument("--ray-address", help="a running cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    ray.add_argument("--actors", type=integer(1, 1024), default=2, help="actors, each with its own model (default 2)")
    ray.add_argument("--threads-per-actor", type=integer(1, 256), default=1, help="torch threads per actor (default 1)")


def check_arguments(args: argparse.Namespace) -> None:
    """The flags that only make sense together; the CLI calls this before anything loads."""
    if args.output and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CaptionError(f"--output must end in .jsonl, .csv or .parquet; got {args.output.name}")
    if args.dataset:
        if args.paths or args.from_list:
            raise CaptionError("--dataset takes no PATHs or --from-list: caption one or the other")
        if not args.output or args.output.suffix.lower() != ".parquet" or args.sidecar:
            raise CaptionError("--dataset writes the dataset's rows plus a caption column: give --output X.parquet")
    elif not args.paths and not args.from_list:
        raise CaptionError("give image files or folders, --from-list FILE or --dataset PATH")
    if args.output_dir and not args.sidecar:
        raise CaptionError("--output-dir goes with --sidecar")
    if (args.resume or args.overwrite) and not args.output:
        raise CaptionError("--resume and --overwrite apply to --output")


def make_writers(args: argparse.Namespace, source):
    writers: list = []
    if args.output:
        name = args.output.name.lower()
        if args.dataset:
            from .parquet import DatasetOutput

            writers.append(DatasetOutput(args.output, source, args.caption_column))
        elif name.endswith(".parquet"):
            from .parquet import ParquetOutput

            writers.append(ParquetOutput(args.output))
        elif name in ("metadata.jsonl", "metadata.csv"):
            writers.append(MetadataOutput(args.output))
        else:
            writers.append(RowsOutput(args.output))
    if args.sidecar:
        # First: a caption file that cannot be written turns into that image's error row below.
        writers.insert(0, Sidecars(args.sidecar, args.existing, args.output_dir))
    if not writers:
        writers.append(Printer(args.json))
    return writers


def run_caption(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    settings = settings_from_arguments(args)
    limits = image_limits_from_arguments(args)
    not_images: list[str] = []
    if args.dataset:
        from .parquet import ParquetSource

        source = ParquetSource(args.dataset, args.image_column)
        # On Ray the actors read the images; the driver sends where each row is.
        items: Iterable[Item] = source.references() if args.ray else source.items()
        total = source.num_rows
    else:
        source = None
        items = file_items([*args.paths, *(read_path_list(args.from_list) if args.from_list else [])], not_images)
        total = len(items)
        if args.output:  # the run's own output, in the folder it captions
            not_images[:] = [n for n in not_images if Path(n).absolute() != Path(args.output).absolute()]
    writers = make_writers(args, source)
    for writer in writers:
        if hasattr(writer, "check"):
            writer.check(items)
    mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    summary = Summary(not_images=not_images)
    # SIGTERM ends the run the way Ctrl-C does: finished batches are on disk either way.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for writer in writers:
            writer.start(mode)
        pending = _not_done(items, writers, summary)
        if isinstance(items, list):
            pending = list(pending)  # the count is known before the bar starts
        skipped = summary.skipped if isinstance(items, list) else sum(len(getattr(w, "keys", ())) for w in writers)
        batches = _batches(args, settings, limits, pending, summary)  # loads the model first, outside the bar's clock
        with tqdm(total=total, initial=skipped, unit="image", file=sys.stderr, disable=total < 2) as bar:
            def progress(results):
                bar.update(len(results))
                bar.set_postfix(failed=summary.failed, refresh=False)

            run(batches, writers, summary, progress)
        for writer in writers:
            writer.finish()
    except KeyboardInterrupt:
        print(f"interrupted: {summary.line()}; run again with --resume to finish", file=sys.stderr)
        return 130
    finally:
        for writer in writers:
            writer.close()
    notes = [f"repaired a torn last line in {w.file.path}" for w in writers if getattr(getattr(w, "file", None), "repaired", False)]
    for note in notes:
        print(note, file=sys.stderr)
    print(json.dumps(vars(summary)) if args.json else summary.line(), file=sys.stderr)
    if args.verbose and not args.json:
        for name in summary.not_images:
            print(f"not an image: {name}", file=sys.stderr)
    return 1 if summary.failed else 0


def _batches(args: argparse.Namespace, settings, limits, pending, summary: Summary):
    pending = iter(pending)
    first = next(pending, None)
    if first is None:
        return iter(())  # nothing left to do: no model to load
    pending = itertools.chain([first], pending)
    if args.ray:
        from .ray_data import ray_batches, start_ray

        ray, summary.startup_seconds = start_ray(args.ray_address)
        return ray_batches(ray, list(pending), settings, model=args.model, dtype=args.dtype,
                           batch_size=args.batch_size, actors=args.actors,
                           threads_per_actor=args.threads_per_actor, prefix=args.prefix, suffix=args.suffix,
                           allow_private_urls=args.allow_private_urls, image_column=args.image_column,
                           image_limits=limits,
                           loaded=lambda seconds: _quickest_load(summary, seconds))
    from ..engine.inference import Captioner

    started = time.perf_counter()
    captioner = Captioner.from_pretrained(args.model, dtype=args.dtype, image_limits=limits)
    summary.model_load_seconds = time.perf_counter() - started
    return caption_batches(captioner, pending, settings, batch_size=args.batch_size,
                           prefix=args.prefix, suffix=args.suffix, allow_private_urls=args.allow_private_urls)


def _quickest_load(summary: Summary, seconds: float) -> None:
    known = summary.model_load_seconds
    summary.model_load_seconds = min(known, seconds) if known else seconds


def _not_done(items: Iterable[Item], writers, summary: Summary) -> Iterator[Item]:
    for item in items:
        if any(writer.done(item) for writer in writers):
            summary.skipped += 1
        else:
            yield item


def _interrupt(signum, frame):
    raise KeyboardInterrupt

