"""`python -m captioner caption|train|evaluate ...`: a thin shell over the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from .arguments import MAX_FILE_MB, MAX_MEGAPIXELS, Parser, integer, model_source, number, output_file, output_folder, setting
from .bulk_cli import add_bulk_arguments, check_arguments, run_caption
from .errors import CaptionError, one_line, require
from .images import DEFAULT_LIMITS
from .settings import DEFAULT_SETTINGS, STRATEGIES, CaptionSettings

# transformers' SchedulerType values (a test keeps this list equal to the installed transformers'):
# listed here so that a typo is refused before transformers is even imported.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay", "greedy")
MODEL_HELP = "Hub id or local checkpoint directory (default: $CAPTIONER_MODEL, then the model card's)"


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per CaptionSettings field, named after it (--num-beams, --max-length, ...)."""
    group = parser.add_argument_group("generation settings (defaults: the model card's call)")
    group.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_SETTINGS.strategy)
    for name in ("max_length", "num_beams", "temperature", "top_k", "top_p", "repetition_penalty",
                 "no_repeat_ngram_size", "num_captions", "seed"):
        kind = setting(name)
        group.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(DEFAULT_SETTINGS, name),
                           help=f"{kind.allowed} (default {getattr(DEFAULT_SETTINGS, name)})")


def add_image_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The app's image limits, for the files and links a command reads."""
    parser.add_argument("--max-file-mb", type=integer(*MAX_FILE_MB), default=DEFAULT_LIMITS.max_file_bytes // 2**20,
                        help="larger image files and downloads are refused (default %(default)s)")
    parser.add_argument("--max-megapixels", type=integer(*MAX_MEGAPIXELS),
                        default=DEFAULT_LIMITS.max_pixels // 1_000_000,
                        help="images that decode to more pixels are refused, as decompression bombs (default %(default)s)")


def image_limits_from_arguments(args: argparse.Namespace):
    return DEFAULT_LIMITS.with_caps(args.max_file_mb, args.max_megapixels)


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    from .inference import PRECISIONS

    parser.add_argument("--dtype", default="float32", choices=PRECISIONS, help=PRECISION_HELP)


PRECISION_HELP = "int8: opt-in CPU fast mode (not exact); bfloat16/float16: for GPUs"


def settings_from_arguments(args: argparse.Namespace) -> CaptionSettings:
    return CaptionSettings(
        strategy=args.strategy, max_length=args.max_length, num_beams=args.num_beams,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
        num_captions=args.num_captions, seed=args.seed,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m captioner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    caption = commands.add_parser("caption", help="caption images, folders, lists of paths or a Parquet dataset")
    caption.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders (searched recursively)")
    caption.add_argument("--model", type=model_source, help=MODEL_HELP)
    add_bulk_arguments(caption)
    add_image_limit_arguments(caption)
    add_precision_argument(caption)
    add_settings_arguments(caption)
    caption.set_defaults(handler=run_caption, check=check_arguments)

    train = commands.add_parser("train", help="fine-tune on your own captions (imagefolder, COCO, Flickr, Parquet, Hub)")
    train.add_argument("--data", required=True, help="folder or file with images and captions (format detected), "
                                                     "or hf://datasets/NAME")
    add_data_arguments(train)
    train.add_argument("--output", required=True, type=output_folder, help="where the fine-tuned checkpoint is saved")
    train.add_argument("--model", type=model_source, help="checkpoint to start from (default: $CAPTIONER_MODEL, then the model card's)")
    train.add_argument("--encoder", type=model_source, help="with --decoder: a fresh model from two pretrained halves")
    train.add_argument("--decoder", type=model_source)
    train.add_argument("--epochs", type=number(0, 1000, low_open=True), default=3, help="%(type)s (default 3)")
    train.add_argument("--batch-size", type=integer(1, 4096), default=8, help="%(type)s (default 8)")
    train.add_argument("--learning-rate", type=number(0, 1, low_open=True), default=5e-5, help="%(type)s (default 5e-5)")
    train.add_argument("--gradient-accumulation", type=integer(1, 1024), default=1, help="%(type)s (default 1)")
    train.add_argument("--warmup-ratio", type=number(0, 1, high_open=True), default=0.05,
                       help="share of the steps spent warming up: %(type)s (default 0.05)")
    train.add_argument("--scheduler", default="linear", choices=SCHEDULERS, metavar="NAME",
                       help="transformers' lr_scheduler_type: " + ", ".join(SCHEDULERS) + " (default linear)")
    train.add_argument("--validation-share", type=number(0, 1, high_open=True), default=0.1,
                       help="share of images held out for validation: %(type)s (default 0.1)")
    train.add_argument("--max-target-length", type=integer(2, 1024), default=32,
                       help="caption tokens kept, EOS included: %(type)s (default 32)")
    train.add_argument("--staged-unfreezing", action="store_true",
                       help="train cross-attention first, then the decoder, then everything (thirds of the epochs)")
    train.add_argument("--seed", type=integer(0, 2**32 - 1), default=42)
    train.add_argument("--resume", action="store_true", help="go on from the last checkpoint in OUTPUT/checkpoints")
    train.add_argument("--workers", type=integer(0, 64), default=default_workers(),
                       help=f"data loader processes decoding images ahead (default here: {default_workers()})")
    train.add_argument("--report-to", choices=("none", "tensorboard", "trackio"), default="none",
                       help="also log the run for TensorBoard or Trackio (their package must be installed)")
    train.set_defaults(handler=run_train, check=check_train)

    evaluate = commands.add_parser("evaluate", help="BLEU-1..4, METEOR, ROUGE-L and CIDEr on a dataset")
    evaluate.add_argument("--data", required=True, help="as train's --data")
    add_data_arguments(evaluate)
    evaluate.add_argument("--model", type=model_source, help=MODEL_HELP)
    evaluate.add_argument("--output", type=output_file, default=Path("evaluation.csv"),
                          help="per-image captions and references (CSV)")
    evaluate.add_argument("--json", action="store_true", help="print only the JSON line")
    add_image_limit_arguments(evaluate)
    add_precision_argument(evaluate)
    add_settings_arguments(evaluate)
    evaluate.set_defaults(handler=run_evaluate)
    return parser


def check_train(args: argparse.Namespace) -> None:
    if bool(args.encoder) != bool(args.decoder):
        raise CaptionError("--encoder and --decoder go together: give both (a fresh model from two halves) or neither")
    if args.encoder and args.model:
        raise CaptionError("--model starts from a captioning checkpoint, --encoder/--decoder from two halves: give one")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-column", default="image", help="Parquet / Hub: the image column (default image)")
    parser.add_argument("--text-column", default="text", help="Parquet / Hub: the caption column (default text)")
    parser.add_argument("--split", default="train", help="Hub datasets: the split (default train)")


def default_workers() -> int:
    """One data loader process per spare core of this process's share, at most 4."""
    share = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(0, min(4, share - 1))


def run_train(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .training import TrainConfig, is_main_process, train

    dataset = load_dataset(args.data, args.image_column, args.text_column, args.split)
    if is_main_process():
        print(dataset.report(), file=sys.stderr)
        for row in dataset.skipped_rows:
            print(f"  skipped {row}", file=sys.stderr)
    config = TrainConfig(
        output=args.output, model=args.model, encoder=args.encoder, decoder=args.decoder,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        gradient_accumulation=args.gradient_accumulation, warmup_ratio=args.warmup_ratio,
        scheduler=args.scheduler, validation_share=args.validation_share,
        max_target_length=args.max_target_length, staged_unfreezing=args.staged_unfreezing,
        seed=args.seed, resume=args.resume, workers=args.workers, report_to=args.report_to,
    )
    try:
        summary = train(config, dataset)
    except (ImportError, RuntimeError) as error:
        if args.report_to == "none" or args.report_to not in str(error).lower():
            raise
        raise CaptionError(f"--report-to {args.report_to} needs its package: pip install {args.report_to}") from None
    if not summary["main_process"]:
        return 0  # one summary for the run, from the main process
    if summary["skipped_images"]:
        print(f"skipped {summary['skipped_images']} images that could not be decoded, e.g.:", file=sys.stderr)
        for line in summary["first_skipped"]:
            print(f"  {line}", file=sys.stderr)
    if summary.get("curves", "") is None:
        print("no training_curves.png: matplotlib is not installed (pip install -r requirements-train.txt)",
              file=sys.stderr)
    print(json.dumps(summary))
    print(f"saved to {summary['output']}" + (f", curves in {summary['curves']}" if summary["curves"] else "")
          + f"; caption with it: python app.py --model {summary['output']}", file=sys.stderr)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .data import load_dataset
    from .evaluation import evaluate, format_table
    from .inference import Captioner

    settings = settings_from_arguments(args)
    require("pycocoevalcap", "evaluate's metrics", "requirements.txt")
    dataset = load_dataset(args.data, args.image_column, args.text_column, args.split)
    print(dataset.report(), file=sys.stderr)
    captioner = Captioner.from_pretrained(args.model, dtype=args.dtype, image_limits=image_limits_from_arguments(args))
    with tqdm(total=len(dataset.images), unit="image", file=sys.stderr) as bar:
        result = evaluate(captioner, dataset, settings, args.output, progress=bar.update)
    if result["skipped_images"]:
        print(f"left out {result['skipped_images']} images that could not be decoded, e.g.:", file=sys.stderr)
        for line in result["first_skipped"]:
            print(f"  {line}", file=sys.stderr)
    if not args.json:
        print(format_table(result["metrics"]))
        print(f"{result['images']} images; tokenizer: {result['tokenizer']}; per-image captions: {args.output}")
    print(json.dumps({k: v for k, v in result.items() if k != "predictions"}))
    return 0


def quiet_libraries() -> None:
    """Hub retry chatter and weight-loading bars would bury the one line that matters."""
    import huggingface_hub.utils as hub_utils
    import transformers

    hub_utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # a usage error (one line on stderr, exit 2), or --help
        return int(done.code or 0)
    try:
        if getattr(args, "check", None):
            args.check(args)  # flags that only make sense together, before anything loads
        quiet_libraries()
        return args.handler(args)
    except CaptionError as error:
        # One line, whatever the message quotes (a file name or a column may hold a newline).
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `... | head`: the reader left; say nothing more and leave quietly.
        sys.stdout = open(os.devnull, "w")
        return 1
