"""`caption --ray`: the same job on Ray Data, for when one machine is not enough.

The driver lists the images (and skips those already done, as the single-process path does);
Ray Data spreads them over a fixed pool of actors, each of which loads the Captioner once and
captions a batch at a time with the same `caption_chunk`; the results come back in input order
and go to the same writers on the driver. A Parquet dataset's rows travel as (file, row)
references, and the actors read the images themselves, so the driver never holds them.
Ray is optional: `pip install -r requirements-ray.txt`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import CaptionError
from ..images import DEFAULT_LIMITS, ImageLimits
from ..settings import CaptionSettings
from .parquet import RowReader, RowRef
from .pipeline import Item, Result, caption_chunk, decode

log = logging.getLogger("captioner.bulk.ray_data")
PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # the whole captioner package


class RayUnavailable(CaptionError):
    """Ray is not installed, or the cluster cannot be reached."""


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
                   "http_proxy", "https_proxy", "all_proxy", "no_proxy")
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection fails at once


@contextlib.contextmanager
def phoning_nowhere():
    """While a local Ray starts, the processes it spawns (the head's dashboard process among them)
    inherit HTTP(S) proxies that are a closed loopback port. Ray's usage-stats module asks the
    cloud metadata services (169.254.169.254, metadata.google.internal) which cloud it runs on even
    with usage stats off, and Ray has no switch for that; through the proxy the question fails on
    loopback without a packet or a DNS lookup leaving the machine. Loopback stays direct."""
    saved = {name: os.environ.get(name) for name in PROXY_VARIABLES}
    os.environ.update({name: CLOSED_PORT for name in PROXY_VARIABLES if "no_proxy" not in name.lower()})
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_ray(address: str | None = None):
    """Join the cluster at `address` (or $RAY_ADDRESS); without one, start a local Ray that
    listens on loopback only. Returns the ray module and the seconds the start took."""
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        # A one-machine cluster has no reason to be reachable from the network. Ray on Linux maps
        # 127.0.0.1 to the machine's network address unless this is off (ray_constants.py); it
        # is read when ray is imported, and the processes Ray starts inherit it.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray: pip install -r requirements-ray.txt") from None
    started = time.perf_counter()
    if not ray.is_initialized():
        # The package travels with the job, so workers on other machines import the same code.
        job = dict(log_to_driver=False, logging_level=logging.WARNING,
                   runtime_env={"py_modules": [PACKAGE_DIR], "env_vars": _forwarded_environment()})
        try:
            if address:
                ray.init(address=address, **job)
            else:
                # Workers get this process's own proxy settings back: their links and Hub
                # downloads go out as the CLI's would; only Ray's own processes are guarded.
                job["runtime_env"]["env_vars"].update({name: os.environ.get(name, "") for name in PROXY_VARIABLES})
                with phoning_nowhere():
                    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", **job)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise RayUnavailable(f"cannot start or reach Ray at {address or 'a local cluster'}: {error}") from None
        if not address and ray.util.get_node_ip_address() != "127.0.0.1":
            ray.shutdown()  # ray was imported before this could keep it on loopback
            raise RayUnavailable("a local Ray must listen on 127.0.0.1: set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
                                 "before ray is imported, or give --ray-address")
    return ray, time.perf_counter() - started


class CaptionActor:
    """One per Ray actor: loads the Captioner once, then captions whatever batches it is sent."""

    def __init__(self, model: str | None, dtype: str, settings: CaptionSettings, threads: int,
                 prefix: str, suffix: str, allow_private_urls: bool = False, image_column: str = "image",
                 image_limits: ImageLimits = DEFAULT_LIMITS) -> None:
        started = time.perf_counter()
        import torch

        from ..engine.inference import Captioner

        torch.set_num_threads(threads)  # actors on one machine must not fight over its cores
        self.captioner = Captioner.from_pretrained(model, dtype=dtype, image_limits=image_limits)
        self.settings, self.prefix, self.suffix = settings, prefix, suffix
        self.allow_private_urls = allow_private_urls
        self.rows = RowReader(image_column)  # for a dataset's (file, row) references
        self.load_seconds = time.perf_counter() - started

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        items, decoded = [], []
        for key, image, file, row in zip(batch["key"], batch["image"], batch["file"], batch["row"]):
            file = os.fsdecode(bytes(file))
            try:
                item = Item(str(key), self._image(image, file, int(row)))
                decoded.append(decode(item, self.captioner, self.allow_private_urls))
            except (OSError, ValueError) as error:  # the Parquet file moved, or pyarrow cannot read it
                log.info("cannot read row %s of %s: %s", row, file, error)
                item = Item(str(key), "")
                decoded.append(CaptionError(f"cannot read row {row} of {Path(file).name}"))
            items.append(item)
        results = caption_chunk(self.captioner, items, decoded, self.settings, self.prefix, self.suffix)
        encoded = [json.dumps({"texts": r.texts, "scores": r.scores, "error": r.error}) for r in results]
        return {"key": batch["key"], "result": np.array(encoded, dtype=object),
                "load_seconds": np.full(len(encoded), self.load_seconds)}

    def _image(self, image, file: str, row: int) -> str | bytes:
        if row < 0:
            return os.fsdecode(bytes(image))
        return self.rows.image(RowRef(file, row))


def _ray_row(position: int, item: Item) -> dict:
    """Every row has the same columns: an image (path or link), or a dataset's file and row. Paths
    travel as bytes: Arrow strings must be UTF-8, and a file name need not be."""
    if isinstance(item.image, RowRef):
        return {"key": str(position), "image": b"", "file": os.fsencode(item.image.file), "row": item.image.row}
    return {"key": str(position), "image": os.fsencode(item.image), "file": b"", "row": -1}


def ray_batches(
    ray,
    items: Sequence[Item],
    settings: CaptionSettings,
    *,
    model: str | None,
    dtype: str = "float32",
    batch_size: int = 8,
    actors: int = 2,
    threads_per_actor: int = 1,
    prefix: str = "",
    suffix: str = "",
    allow_private_urls: bool = False,
    image_column: str = "image",
    image_limits: ImageLimits = DEFAULT_LIMITS,
    loaded: Callable[[float], None] = lambda seconds: None,
) -> Iterator[list[Result]]:
    """Yield result batches in input order, captioned by a pool of `actors` Ray actors
    (`ray` as `start_ray` returns it). `loaded` hears each batch's actor's model load seconds."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one bar (the CLI's), not Ray's plan and logs
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order, as the writers expect
    context.enable_progress_bars = False  # the CLI has its own bar
    cpus = ray.cluster_resources().get("CPU", 1.0)
    # Actors reserve less than a whole CPU when the cluster is small, so Ray's own tasks still find
    # one: on two cores, two actors at one CPU each leave nothing for the rest and wait for ever.
    per_actor = max(0.25, min(float(threads_per_actor), (cpus - 0.5) / actors))
    dataset = ray.data.from_items([_ray_row(position, item) for position, item in enumerate(items)])
    captioned = dataset.map_batches(
        CaptionActor,
        fn_constructor_kwargs=dict(model=model, dtype=dtype, settings=settings, threads=threads_per_actor,
                                   prefix=prefix, suffix=suffix, allow_private_urls=allow_private_urls,
                                   image_column=image_column, image_limits=image_limits),
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=per_actor,
    )
    position = 0
    for batch in captioned.iter_batches(batch_size=batch_size, batch_format="numpy"):
        loaded(float(batch["load_seconds"].min()))
        results = []
        for key, encoded in zip(batch["key"], batch["result"]):
            item = items[position]
            position += 1
            if str(key) != str(position - 1):
                raise RuntimeError(f"Ray returned row {key} where {position - 1} was expected")
            data = json.loads(encoded)
            results.append(Result(item, data["texts"], data["scores"], data["error"]))
        yield results


def _forwarded_environment() -> dict[str, str]:
    names = ("HF_HUB_OFFLINE", "HF_HOME", "CAPTIONER_MODEL", "CAPTIONER_CACHE")
    return {name: os.environ[name] for name in names if name in os.environ}
