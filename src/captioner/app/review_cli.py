"""`python -m captioner review FOLDER`: its flags, checked before anything loads, and its run,
which loads the model and gradio only then (review_folder.py says what the page does)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..arguments import MODEL_HELP, add_precision_argument, model_source, port, text
from ..errors import CaptionError


def folder(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a folder")
    return path


def add_review_command(commands) -> None:
    review = commands.add_parser("review", help="review and edit a folder's captions in the browser, "
                                                "on this machine")
    review.add_argument("folder", type=folder, help="the folder of images; captions are read from and "
                                                    "written to caption files beside them")
    review.add_argument("--sidecar", default=".txt", type=text,
                        help="the caption files' extension (default .txt: photo.jpg -> photo.txt)")
    review.add_argument("--metadata", action="store_true",
                        help="read and write the captions in the folder's metadata.jsonl (imagefolder layout) "
                             "instead of sidecar files")
    review.add_argument("--model", type=model_source, help=MODEL_HELP)
    add_precision_argument(review, default="float32")
    review.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    review.add_argument("--port", type=port, default=7860, help=f"{port.allowed} (default 7860)")
    review.set_defaults(handler=run_review)


def run_review(args: argparse.Namespace) -> int:
    from ..engine.inference import Captioner
    from ..images import IMAGE_SUFFIXES
    from .accessibility import page_options
    from .ui import build_demo

    if not args.sidecar.startswith(".") or args.sidecar.lower() in IMAGE_SUFFIXES or "/" in args.sidecar:
        raise CaptionError(f"--sidecar {args.sidecar} is not a caption file extension; use e.g. .txt")
    captioner = Captioner.from_pretrained(args.model, dtype=args.dtype)
    demo = build_demo(captioner, review_folder=(args.folder, args.sidecar, args.metadata))
    print(f"Reviewing {args.folder.absolute()} at http://{args.host}:{args.port}/ (Ctrl-C stops; every edit "
          "is already in the folder)")
    demo.launch(server_name=args.host, server_port=args.port, show_error=False, quiet=True, **page_options())
    return 0
