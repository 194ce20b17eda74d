"""`python -m captioner train|evaluate ...`: the flags of fine-tuning and evaluation, and the runs
that wire a dataset, the Trainer or the metrics together. The work itself is in data.py,
training.py and evaluation.py; datasets, matplotlib and pycocoevalcap load only when a run starts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..arguments import (
    MODEL_HELP, add_image_limit_arguments, add_precision_argument, add_settings_arguments,
    image_limits_from_arguments, integer, model_source, number, output_file, output_folder, settings_from_arguments,
)
from ..errors import CaptionError, require

# transformers' SchedulerType values (a test keeps this list equal to the installed transformers'):
# listed here so that a typo is refused before transformers is even imported.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay", "greedy")


def add_train_command(commands) -> None:
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


def add_evaluate_command(commands) -> None:
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
    from ..engine.inference import Captioner

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
