"""Standard caption metrics over a dataset, with captions from `Captioner.caption` (the app's code).

Scorers are pycocoevalcap's (the COCO caption evaluation code): BLEU-1..4, ROUGE-L and CIDEr are
pure Python; METEOR and the PTB tokenizer need Java and are used when `java` is on PATH (without
it METEOR is left out and a plain lower-case/punctuation tokenizer stands in, which the report says).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..engine.inference import Captioner
from ..errors import InvalidImage
from ..exports import OutputError, csv_header, write_csv_rows
from ..images import load_image
from ..settings import DEFAULT_SETTINGS, CaptionSettings
from .data import CaptionDataset, DatasetError, image_input

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _simple_tokenize(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower()))


def java_found() -> bool:
    """The COCO tools' PTB tokenizer and METEOR run on Java; without it the scores use a simple
    tokenizer and leave METEOR out."""
    return shutil.which("java") is not None


def score_captions(predictions: dict[str, str], references: dict[str, list[str]]) -> tuple[dict, str]:
    """Corpus-level metrics; keys are image ids. Returns (metrics, tokenizer used)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    java = java_found()
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
        res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in references})
    else:
        gts = {k: [_simple_tokenize(c) for c in v] for k, v in references.items()}
        res = {k: [_simple_tokenize(predictions[k])] for k in references}
    metrics: dict[str, float | None] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, 1):
        metrics[f"BLEU-{n}"] = float(value)
    metrics["METEOR"] = None
    if java:
        from pycocoevalcap.meteor.meteor import Meteor

        metrics["METEOR"] = float(Meteor().compute_score(gts, res)[0])  # its __del__ ends the Java process
    metrics["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    metrics["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return metrics, "PTB (Java)" if java else "simple (no Java: METEOR left out)"


def evaluate(captioner: Captioner, dataset: CaptionDataset, settings: CaptionSettings = DEFAULT_SETTINGS,
             csv_path: str | Path | None = None, batch: int = 64, progress=None) -> dict:
    grouped = dataset.references()
    sources = list(grouped)  # paths, or rows of a Parquet / Hub dataset
    predictions: dict[str, str] = {}
    skipped: list[str] = []
    for start in range(0, len(sources), batch):
        names, decoded = [], []
        for source in sources[start : start + batch]:
            # Images are first decoded here, not when the dataset is read: one that fails is left
            # out of the scores and named, as training skips it.
            try:
                decoded.append(load_image(image_input(source), captioner.image_limits))
                names.append(str(source))
            except InvalidImage as error:
                skipped.append(f"{source}: {error}")
        for image, captions in zip(names, captioner.caption(decoded, settings) if decoded else []):
            predictions[image] = captions[0].text
        if progress:
            progress(len(sources[start : start + batch]))
    references = {str(image): captions for image, captions in grouped.items() if str(image) in predictions}
    images = list(references)
    if not images:
        raise DatasetError(f"none of the {len(sources)} images could be decoded, e.g. {skipped[0]}")
    metrics, tokenizer = score_captions(predictions, references)
    if csv_path:
        rows = [{"image": image, "caption": predictions[image], "references": references[image]} for image in images]
        try:
            with Path(csv_path).open("w", newline="", encoding="utf-8") as handle:
                handle.write(csv_header(("image", "caption", "references")))
                write_csv_rows(handle, rows, ("image", "caption", "references"))
        except OSError as error:
            raise OutputError(f"cannot write {csv_path}: {error.strerror or error}") from None
    return {"images": len(images), "skipped_images": len(skipped), "first_skipped": skipped[:5], "metrics": metrics, "tokenizer": tokenizer,
            "predictions": predictions}


def format_table(metrics: dict) -> str:
    lines = [f"{'metric':<8} {'score':>7}"]
    for name in METRICS:
        value = metrics.get(name)
        lines.append(f"{name:<8} {'n/a' if value is None else f'{value:.4f}':>7}")
    return "\n".join(lines)
