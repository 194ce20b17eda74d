"""Composition root: read the configuration, load the Captioner once, build the demo, launch.

Spaces runs `python app.py` from the repository root and imports `demo` from here; importing this
module loads the model but never starts a server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# Spaces does not install the project: make src/ importable from a plain checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from captioner.engine.memory import tune_malloc  # noqa: E402

tune_malloc()  # before torch and gradio start threads: keeps a long-running server's RSS flat

from captioner.arguments import (  # noqa: E402
    MAX_FILE_MB, MAX_MEGAPIXELS, MODEL_HELP, Parser, add_precision_argument, from_env, integer, model_source, port,
)


def _check_gradio_environment() -> None:
    """gradio reads GRADIO_SERVER_PORT while it is imported: a bad value gets our one line, not its traceback."""
    value = os.environ.get("GRADIO_SERVER_PORT")
    try:
        if value:
            port(value)
    except argparse.ArgumentTypeError as error:
        print(f"app.py: error: GRADIO_SERVER_PORT {error}", file=sys.stderr)
        raise SystemExit(2) from None


_check_gradio_environment()

from captioner import Captioner, CaptionError  # noqa: E402
from captioner.app.accessibility import page_options  # noqa: E402
from captioner.app.ui import AppLimits, build_demo  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Every flag (and the environment variable behind it) is checked here: a mistake is one line
    naming it, and exit 2, before the model loads."""
    parser = Parser(prog="app.py", description="Image captioning demo")
    parser.add_argument("--model", type=model_source, default=from_env("CAPTIONER_MODEL", None), help=MODEL_HELP)
    parser.add_argument("--host", default=from_env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=port, default=from_env("GRADIO_SERVER_PORT", 7860),
                        help=f"{port.allowed} (default 7860, or $GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a temporary public link")
    add_precision_argument(parser, default=from_env("CAPTIONER_DTYPE", "float32"))
    limit = AppLimits()
    for flag, variable, kind, default, help_text in (
        ("--max-batch-size", "CAPTIONER_MAX_BATCH_SIZE", integer(1, 256), limit.max_batch_size, "images per model call"),
        ("--queue-size", "CAPTIONER_QUEUE_SIZE", integer(1, 100_000), limit.queue_size,
         "waiting requests; more are answered 'busy' at once"),
        ("--max-images", "CAPTIONER_MAX_IMAGES", integer(1, 10_000), limit.max_images_per_request,
         "images in one request (the many-images tab, caption_images)"),
        ("--max-file-mb", "CAPTIONER_MAX_FILE_MB", integer(*MAX_FILE_MB), limit.max_file_mb,
         "uploads and downloaded links"),
        ("--max-megapixels", "CAPTIONER_MAX_MEGAPIXELS", integer(*MAX_MEGAPIXELS), limit.max_megapixels,
         "images that decode to more pixels are refused (decompression bombs)"),
    ):
        parser.add_argument(flag, type=kind, default=from_env(variable, default),
                            help=f"{help_text}: {kind.allowed} (default {default}, or ${variable})")
    parser.add_argument("--allow-private-urls", action="store_true",
                        default=os.environ.get("CAPTIONER_ALLOW_PRIVATE_URLS") == "1",
                        help="fetch image links to loopback and private addresses too (intranets; refused by default)")
    parser.add_argument("--no-mcp", action="store_true", help="do not serve the caption tools over MCP")
    return parser.parse_args(argv)


def create_demo(args: argparse.Namespace):
    captioner = Captioner.from_pretrained(args.model, dtype=args.dtype, max_batch_size=args.max_batch_size)
    limits = AppLimits(
        max_batch_size=args.max_batch_size, queue_size=args.queue_size,
        max_images_per_request=args.max_images, max_file_mb=args.max_file_mb,
        max_megapixels=args.max_megapixels, allow_private_urls=args.allow_private_urls,
    )
    return build_demo(captioner, limits), limits


def launch_options(limits: AppLimits, host: str, port: int | None, mcp: bool = True) -> dict:
    """launch() settings for a public deployment; the tests launch with these too."""
    return dict(
        **page_options(),  # theme, focus ring, announcements (captioner/app/accessibility.py)
        server_name=host, server_port=port, max_file_size=f"{limits.max_file_mb}mb",
        mcp_server=mcp,  # the caption tools for agents at /gradio_api/mcp/
        show_error=False,  # visitors see our messages (gr.Error), never internal exception text
        footer_links=["api", "gradio"],
    )


def launch(demo, limits: AppLimits, args: argparse.Namespace) -> None:
    options = launch_options(limits, args.host, args.port, mcp=not args.no_mcp)
    if args.share:
        try:
            demo.launch(share=True, prevent_thread_lock=True, **options)
        except Exception as error:  # noqa: BLE001 - any failure to tunnel must not stop local serving
            print(f"Could not create a share link ({error}); serving locally only.", file=sys.stderr)
            demo.launch(share=False, prevent_thread_lock=True, **options)
        if not getattr(demo, "share_url", None):
            print(f"No share link (no internet?); serving locally at {demo.local_url}", file=sys.stderr)
        demo.block_thread()
    else:
        demo.launch(**options)


def _load_for_spaces():
    """Spaces imports `demo` from this module; a failed model load must say what to do."""
    try:
        return create_demo(parse_args([]))[0]
    except CaptionError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    # One line per batch on stderr (the Space's log): size and time, read by bench/speed.py too.
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("captioner").setLevel(logging.INFO)
    arguments = parse_args()
    try:
        demo, app_limits = create_demo(arguments)
    except CaptionError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    launch(demo, app_limits, arguments)
else:
    demo = _load_for_spaces()
