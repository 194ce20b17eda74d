"""`python -m captioner caption|train|evaluate ...`: a thin shell over the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from .bulk_cli import add_bulk_arguments, run_caption
from .errors import CaptionError
from .settings import BOUNDS, DEFAULT_SETTINGS, STRATEGIES, CaptionSettings


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per CaptionSettings field, named after it (--num-beams, --max-length, ...)."""
    group = parser.add_argument_group("generation settings (defaults: the model card's call)")
    group.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_SETTINGS.strategy)
    for name, kind in [
        ("max_length", int), ("num_beams", int), ("temperature", float), ("top_k", int),
        ("top_p", float), ("repetition_penalty", float), ("no_repeat_ngram_size", int),
        ("num_captions", int), ("seed", int),
    ]:
        low, high = BOUNDS[name]
        group.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=getattr(DEFAULT_SETTINGS, name),
            help=f"{low:g}..{high:g} (default {getattr(DEFAULT_SETTINGS, name)})",
        )


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
    parser = argparse.ArgumentParser(prog="python -m captioner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    caption = commands.add_parser("caption", help="caption images, folders, lists of paths or a Parquet dataset")
    caption.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders (searched recursively)")
    caption.add_argument("--model", help="Hub id or local checkpoint directory (default: $CAPTIONER_MODEL, then the model card's)")
    add_bulk_arguments(caption)
    add_precision_argument(caption)
    add_settings_arguments(caption)
    caption.set_defaults(handler=run_caption)

    train = commands.add_parser("train", help="fine-tune on your own captions (imagefolder, COCO, Flickr, Parquet, Hub)")
    train.add_argument("--data", required=True, help="folder or file with images and captions (format detected), "
                                                     "or hf://datasets/NAME")
    add_data_arguments(train)
    train.add_argument("--output", required=True, help="where the fine-tuned checkpoint is saved")
    train.add_argument("--model", help="checkpoint to start from (default: $CAPTIONER_MODEL, then the model card's)")
    train.add_argument("--encoder", help="with --decoder: a fresh model from two pretrained halves")
    train.add_argument("--decoder")
    train.add_argument("--epochs", type=float, default=3)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--learning-rate", type=float, default=5e-5)
    train.add_argument("--gradient-accumulation", type=int, default=1)
    train.add_argument("--warmup-ratio", type=float, default=0.05)
    train.add_argument("--scheduler", default="linear", help="transformers' lr_scheduler_type (linear, cosine, constant...)")
    train.add_argument("--validation-share", type=float, default=0.1, help="share of images held out for validation")
    train.add_argument("--max-target-length", type=int, default=32, help="caption tokens kept, EOS included")
    train.add_argument("--staged-unfreezing", action="store_true",
                       help="train cross-attention first, then the decoder, then everything (thirds of the epochs)")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--resume", action="store_true", help="go on from the last checkpoint in OUTPUT/checkpoints")
    train.add_argument("--workers", type=int, default=default_workers(),
                       help=f"data loader processes decoding images ahead (default here: {default_workers()})")
    train.add_argument("--report-to", choices=("none", "tensorboard", "trackio"), default="none",
                       help="also log the run for TensorBoard or Trackio (their package must be installed)")
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("evaluate", help="BLEU-1..4, METEOR, ROUGE-L and CIDEr on a dataset")
    evaluate.add_argument("--data", required=True, help="as train's --data")
    add_data_arguments(evaluate)
    evaluate.add_argument("--model", help="Hub id or local checkpoint directory")
    evaluate.add_argument("--output", type=Path, default=Path("evaluation.csv"), help="per-image captions and references (CSV)")
    evaluate.add_argument("--json", action="store_true", help="print only the JSON line")
    add_precision_argument(evaluate)
    add_settings_arguments(evaluate)
    evaluate.set_defaults(handler=run_evaluate)
    return parser


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
    print(json.dumps(summary))
    print(f"saved to {summary['output']}" + (f", curves in {summary['curves']}" if summary["curves"] else "")
          + f"; caption with it: python app.py --model {summary['output']}", file=sys.stderr)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .data import load_dataset
    from .evaluation import evaluate, format_table
    from .inference import Captioner

    dataset = load_dataset(args.data, args.image_column, args.text_column, args.split)
    print(dataset.report(), file=sys.stderr)
    captioner = Captioner.from_pretrained(args.model, dtype=args.dtype)
    with tqdm(total=len(dataset.images), unit="image", file=sys.stderr) as bar:
        result = evaluate(captioner, dataset, settings_from_arguments(args), args.output, progress=bar.update)
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
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return args.handler(args)
    except CaptionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `... | head`: the reader left; say nothing more and leave quietly.
        sys.stdout = open(os.devnull, "w")
        return 1
