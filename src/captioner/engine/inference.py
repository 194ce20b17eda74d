"""The Captioner: one model, loaded once, serving batched requests from any front door.

This is the only module that calls `model.generate`. The UI, the API, the CLI, evaluation and
the benchmark all go through `Captioner.caption`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from PIL import Image

from ..errors import ModelLoadError, RequestTooLarge
from ..images import DEFAULT_LIMITS, ImageInput, ImageLimits, load_image
from ..model_source import MODEL_ENV_VAR, PRECISIONS, check_source, load_failure_message, resolve_source
from ..settings import DEFAULT_SETTINGS, CaptionSettings
from .batching import DynamicBatcher
from .memory import release_free_memory
from .model_thread import on_model_thread, when_model_idle
from .speedups import SpeedupReport, generation_scope, speed_up

log = logging.getLogger("captioner.engine.inference")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _NoPaddingToMask(logging.Filter):
    """Drops transformers' "The attention mask is not set with a batched input" warning, which
    `generate` logs for every batch of two or more images because GPT-2's pad token is its EOS. It
    is about padded text prompts; the decoder's prompt here is one start token, the same for every
    image, so there is nothing to mask, and a Space's log should not tell of "unexpected behavior".
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The attention mask is not set with a batched input")


logging.getLogger("transformers.generation.utils").addFilter(_NoPaddingToMask())


@dataclass(frozen=True)
class Caption:
    text: str
    score: float | None = None  # mean log-probability per token; set when several are asked for


class Captioner:
    """A loaded captioning model.

    >>> captioner = Captioner.from_pretrained("path/to/checkpoint")  # doctest: +SKIP
    >>> captioner.caption(["photo.jpg"])[0][0].text  # doctest: +SKIP
    'a dog running on the beach'
    """

    def __init__(
        self,
        model,
        tokenizer,
        image_processor,
        *,
        source: str = "",
        max_batch_size: int = 16,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        max_images_per_call: int = 256,
        speedups: bool = True,
        int8: bool = False,
    ) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        # Exact (captions unchanged) CPU speed-ups; see speedups.py. False keeps stock transformers.
        # int8 is the opt-in fast mode: faster, not exact.
        self.speedups = (
            on_model_thread(speed_up, self.model, int8=int8) if speedups or int8 else SpeedupReport(0, 0, "turned off")
        )
        report = self.speedups
        if report.linear_layers:
            release_free_memory()  # the replaced weights, freed: back to the OS now, not after a batch
        # A Space's log should say whether the fast path is on, and if not, why.
        log.info("speed-ups: %d linear layers (%s), %d cross-attentions grouped%s", report.linear_layers,
                 report.linear_kind or "stock", report.grouped_cross_attention,
                 f"; not applied: {report.skipped}" if report.skipped else "")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.source = source
        self.max_batch_size = max_batch_size
        self.image_limits = image_limits
        self.max_images_per_call = max_images_per_call
        # GPT-2 has no pad token; padding finished beams with EOS is what the model card does.
        generation_config = self.model.generation_config
        if generation_config.pad_token_id is None:
            generation_config.pad_token_id = generation_config.eos_token_id or tokenizer.eos_token_id
        # generate() mutates shared state and the fast tokenizer is not re-entrant: one batch at a
        # time, on the model thread (model_thread.py); throughput comes from batching.
        self._lock = threading.Lock()
        self.generate_batch_sizes: collections.Counter[int] = collections.Counter()
        self._batcher = DynamicBatcher(self._caption_batch_here, lambda: self.max_batch_size,
                                       lambda settings: self._chunk_size(settings) == 1)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike | None = None,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str = "float32",
        **options,
    ) -> Captioner:
        """Load model, tokenizer and image processor from a Hub id or a local directory.

        `source` defaults to $CAPTIONER_MODEL, then to the model card's checkpoint.
        """
        source = resolve_source(source)
        if dtype not in PRECISIONS:
            raise ModelLoadError(f"dtype must be one of {', '.join(PRECISIONS)}; got {dtype!r}")
        if dtype == "int8":
            if device not in (None, "cpu"):
                raise ModelLoadError("dtype int8 (dynamic quantization) runs on the CPU only")
            options["int8"], device = True, "cpu"
        check_source(source)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

        try:
            config = AutoConfig.from_pretrained(source, revision=revision)
            if config.model_type != "vision-encoder-decoder":
                raise ModelLoadError(
                    f"'{source}' is a {config.model_type!r} model, not a vision-encoder-decoder "
                    f"captioning checkpoint. Set {MODEL_ENV_VAR} or --model to one."
                )
            # On the model thread, like every later generate(): the loading's parallel kernels
            # would otherwise leave this thread an OpenMP team of its own (model_thread.py).
            model = on_model_thread(
                lambda: VisionEncoderDecoderModel.from_pretrained(
                    source, revision=revision, dtype=DTYPES.get(dtype, torch.float32)
                ).to(device)
            )
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
            # The PIL backend: torchvision is large and PyPI's build does not pair with ours.
            image_processor = AutoImageProcessor.from_pretrained(source, revision=revision, backend="pil")
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(load_failure_message(source, error)) from error
        return cls(model, tokenizer, image_processor, source=source, **options)

    def caption(
        self,
        images: Sequence[ImageInput],
        settings: CaptionSettings | Sequence[CaptionSettings] = DEFAULT_SETTINGS,
        *,
        bulk: bool = False,
    ) -> list[list[Caption]]:
        """Caption each image; returns, per image and in order, `num_captions` captions, best first.

        `settings` is one CaptionSettings for all images or one per image. Images that share
        settings go through `generate` together, in batches of at most `max_batch_size`.
        `bulk` marks a piece of a larger set that can wait: other callers' requests go first
        and never share a batch with it (batching.py).
        """
        if isinstance(settings, CaptionSettings):
            per_image = [settings] * len(images)
        else:
            per_image = list(settings)
            if len(per_image) != len(images):
                raise ValueError(f"{len(images)} images but {len(per_image)} settings")
        if len(images) > self.max_images_per_call:
            raise RequestTooLarge(
                f"{len(images)} images in one call; the limit is {self.max_images_per_call}"
            )
        decoded = [self._as_rgb(image) for image in images]
        results: list[list[Caption] | None] = [None] * len(images)
        for group_settings, indices in _group_by_settings(per_image).items():
            for chunk in _chunks(indices, self._chunk_size(group_settings)):
                # Joins whatever other callers (threads, the app's doors) have waiting with the same settings.
                captions = self._batcher.caption([decoded[i] for i in chunk], group_settings, bulk)
                for index, image_captions in zip(chunk, captions):
                    results[index] = image_captions
        return results  # type: ignore[return-value]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the model thread: requests wait until the block ends, then run in the batches they
        form. For tests and maintenance, e.g. to let requests pile up and see them batched."""
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            release.wait()

        holder = threading.Thread(target=on_model_thread, args=(hold,), daemon=True)
        holder.start()
        holding.wait()
        try:
            yield
        finally:
            release.set()
            holder.join()

    def release_memory_when_idle(self) -> None:
        """Hand freed activations back to the OS once the model is idle: a server's RSS stays flat
        (memory.py), and batches under load reuse the memory instead of faulting it in anew."""
        when_model_idle(release_free_memory)

    def waiting(self) -> int:
        """Callers' chunks waiting for the model (see batching.py)."""
        return self._batcher.waiting()

    def _as_rgb(self, image: ImageInput) -> Image.Image:
        if isinstance(image, Image.Image) and image.mode == "RGB":
            return image
        return load_image(image, self.image_limits)

    def _chunk_size(self, settings: CaptionSettings) -> int:
        # A seeded sample must not depend on its batch-mates: run it alone.
        if settings.strategy == "sample" and settings.seed is not None:
            return 1
        return self.max_batch_size

    def _caption_batch_here(self, images: list[Image.Image], settings: CaptionSettings) -> list[list[Caption]]:
        with self._lock, torch.inference_mode():
            pixel_values = self.image_processor(images=images, return_tensors="pt").pixel_values
            pixel_values = pixel_values.to(self.device, self.dtype)
            want_scores = settings.num_captions > 1
            with _seeded(settings.seed if settings.strategy == "sample" else None), generation_scope(len(images)):
                output = self.model.generate(
                    pixel_values,
                    **settings.generate_kwargs(),
                    return_dict_in_generate=True,
                    output_scores=want_scores,
                )
            self.generate_batch_sizes[len(images)] += 1
            texts = [t.strip() for t in self.tokenizer.batch_decode(output.sequences, skip_special_tokens=True)]
            scores = self._sequence_scores(output, settings) if want_scores else [None] * len(texts)
        n = settings.num_captions
        per_image = [
            [Caption(texts[i * n + j], scores[i * n + j]) for j in range(n)] for i in range(len(images))
        ]
        if want_scores:
            for captions in per_image:
                captions.sort(key=lambda c: c.score, reverse=True)
        return per_image

    def _sequence_scores(self, output, settings: CaptionSettings) -> list[float]:
        if settings.strategy == "beam":
            return [float(s) for s in output.sequences_scores]
        token_scores = self.model.compute_transition_scores(
            output.sequences, output.scores, normalize_logits=True
        )
        generated = output.sequences[:, 1:]
        # Tokens after the first EOS are padding: leave them out of the mean.
        eos = self.model.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        is_eos = generated == eos
        after_eos = (is_eos.cumsum(dim=1) - is_eos.int()) > 0
        valid = (~after_eos) & torch.isfinite(token_scores)
        totals = torch.where(valid, token_scores, torch.zeros_like(token_scores)).sum(dim=1)
        return (totals / valid.sum(dim=1).clamp(min=1)).tolist()


class _seeded:
    """Seed torch's RNG for one call without disturbing anyone else's randomness."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._fork = None

    def __enter__(self) -> None:
        if self.seed is not None:
            self._fork = torch.random.fork_rng(devices=[])
            self._fork.__enter__()
            torch.manual_seed(self.seed)

    def __exit__(self, *exc) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)


def _group_by_settings(per_image: Sequence[CaptionSettings]) -> dict[CaptionSettings, list[int]]:
    groups: dict[CaptionSettings, list[int]] = {}
    for index, settings in enumerate(per_image):
        groups.setdefault(settings, []).append(index)
    return groups


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


