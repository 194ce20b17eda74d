"""`python -m captioner caption|review|train|evaluate ...`: a thin shell over the library.

Each command's flags and run live with its subsystem (bulk/cli.py, app/review_cli.py, train/cli.py); this module
only puts them under one parser and turns a CaptionError into one line and exit 2.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from .app.review_cli import add_review_command
from .arguments import Parser
from .bulk.cli import add_caption_command
from .errors import CaptionError, one_line
from .train.cli import add_evaluate_command, add_train_command


def build_parser() -> Parser:
    parser = Parser(prog="python -m captioner", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_caption_command(commands)
    add_review_command(commands)
    add_train_command(commands)
    add_evaluate_command(commands)
    return parser


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
