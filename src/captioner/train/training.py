"""Fine-tuning with transformers' Seq2SeqTrainer: data, collation, staged unfreezing, saving.

The Trainer does the loop (schedule, accumulation, mixed precision, checkpoints, resume, seed,
progress bar, and torch.distributed under torchrun or accelerate launch, where it shards the data);
this module adapts captions to it. Under several processes only the main one reports, plots and
saves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine.transformers_changes import load_checkpoints_by_name, preload_checkpoint
from ..errors import InvalidImage, ModelLoadError
from ..images import load_image
from .data import CaptionDataset, image_input

STAGES = ("cross-attention", "decoder", "all")


@dataclass
class TrainConfig:
    output: str
    model: str | None = None
    encoder: str | None = None
    decoder: str | None = None
    epochs: float = 3
    batch_size: int = 8
    learning_rate: float = 5e-5
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.05
    scheduler: str = "linear"
    validation_share: float = 0.1
    max_target_length: int = 32
    staged_unfreezing: bool = False
    seed: int = 42
    resume: bool = False
    progress: bool = True
    workers: int = 0  # data loader processes that decode images ahead of the model
    report_to: str = "none"  # or tensorboard, trackio: passed to the Trainer


class CaptionTrainingSet(torch.utils.data.Dataset):
    """Examples decoded when a batch needs them. An image that fails to decode is skipped: noted in
    `skip_log` (one line each, appended by whichever process met it) and replaced by the next
    example, so a batch never shrinks or empties."""

    def __init__(self, dataset: CaptionDataset, image_processor, tokenizer, max_target_length: int,
                 skip_log: Path | None = None) -> None:
        self.examples = dataset.examples
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.max_target_length = max_target_length
        self.skip_log = skip_log

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.examples)):
            example = self.examples[(index + attempt) % len(self.examples)]
            try:
                image = load_image(image_input(example.image))
                break
            except InvalidImage as error:
                if self.skip_log is not None:
                    with self.skip_log.open("a", encoding="utf-8") as log:
                        log.write(json.dumps({"image": str(example.image), "error": str(error)}) + "\n")
        else:
            raise InvalidImage("no image in the training data could be decoded")
        pixels = self.image_processor(images=[image], return_tensors="pt").pixel_values[0]
        # GPT-2 has no BOS in its text: the decoder starts from decoder_start_token_id, and the
        # caption ends with EOS so the model learns to stop.
        ids = self.tokenizer(example.caption, truncation=True, max_length=self.max_target_length - 1).input_ids
        return {"pixel_values": pixels, "labels": ids + [self.tokenizer.eos_token_id]}


def collate(features: list[dict]) -> dict:
    """Stack images; pad labels to the longest in the batch with -100 (ignored by the loss)."""
    longest = max(len(f["labels"]) for f in features)
    labels = torch.full((len(features), longest), -100, dtype=torch.long)
    for row, feature in enumerate(features):
        labels[row, : len(feature["labels"])] = torch.tensor(feature["labels"])
    return {"pixel_values": torch.stack([f["pixel_values"] for f in features]), "labels": labels}


def load_model_for_training(config: TrainConfig):
    """A checkpoint (`--model`), or a fresh model from two pretrained halves (`--encoder --decoder`)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    from ..model_source import check_source, load_failure_message, resolve_source

    if config.encoder or config.decoder:
        if not (config.encoder and config.decoder):
            raise ModelLoadError("--encoder and --decoder go together")
        sources = [config.encoder, config.decoder]
    else:
        sources = [resolve_source(config.model)]  # --model, else $CAPTIONER_MODEL, as everywhere else
    for source in sources:
        check_source(source)
    try:
        if config.encoder:
            # transformers 5.23 reads `decoder_config.is_decoder`, which GPT2Config no longer has, and
            # fails on a plain GPT-2; a config that already asks for cross-attention skips that check.
            decoder_config = AutoConfig.from_pretrained(config.decoder)
            decoder_config.is_decoder = True
            decoder_config.add_cross_attention = True
            model = VisionEncoderDecoderModel.from_encoder_decoder_pretrained(
                config.encoder, config.decoder, decoder_config=decoder_config
            )
            tokenizer = AutoTokenizer.from_pretrained(config.decoder)
            image_processor = AutoImageProcessor.from_pretrained(config.encoder, backend="pil")
        else:
            model = VisionEncoderDecoderModel.from_pretrained(sources[0])
            tokenizer = AutoTokenizer.from_pretrained(sources[0])
            image_processor = AutoImageProcessor.from_pretrained(sources[0], backend="pil")
    except (OSError, ValueError, KeyError) as error:
        failed = next((s for s in sources if s in str(error)), sources[0])
        raise ModelLoadError(load_failure_message(failed, error)) from error
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The model card's special tokens: generation starts from and pads with EOS (GPT-2 has no BOS/PAD).
    for target in (model.config, model.generation_config):
        if getattr(target, "decoder_start_token_id", None) is None:
            target.decoder_start_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        if getattr(target, "pad_token_id", None) is None:
            target.pad_token_id = eos
        if getattr(target, "eos_token_id", None) is None:
            target.eos_token_id = eos
    return model, tokenizer, image_processor


def trainable_parts(model, stage: str) -> None:
    """Freeze all but the stage's parameters: cross-attention, then the decoder, then everything."""
    for name, parameter in model.named_parameters():
        if stage == "all":
            parameter.requires_grad = True
        elif stage == "decoder":
            parameter.requires_grad = name.startswith("decoder.")
        else:
            parameter.requires_grad = "crossattention" in name or "ln_cross_attn" in name


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # torchrun and accelerate launch set RANK


def stage_for_epoch(epoch: float, epochs: float) -> str:
    return STAGES[min(int(3 * epoch / max(epochs, 1e-9)), 2)]


def train(config: TrainConfig, dataset: CaptionDataset) -> dict:
    """Fine-tune and save model, tokenizer, image processor and generation config to `output`."""
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    set_seed(config.seed)
    model, tokenizer, image_processor = load_model_for_training(config)
    train_part, validation_part = dataset.split(config.validation_share, config.seed)
    output = Path(config.output)
    use_cuda = torch.cuda.is_available()
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    skip_log = output / "skipped_images.jsonl"
    if is_main_process() and not config.resume:
        output.mkdir(parents=True, exist_ok=True)
        skip_log.unlink(missing_ok=True)
    steps_per_epoch = math.ceil(len(train_part.examples) / (config.batch_size * config.gradient_accumulation * processes))
    arguments = Seq2SeqTrainingArguments(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps (transformers 5)
        eval_strategy="epoch" if validation_part.examples else "no",
        save_strategy="epoch",
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // 10),  # about ten points of the loss curve an epoch
        seed=config.seed,
        fp16=use_cuda and not torch.cuda.is_bf16_supported(),
        bf16=use_cuda and torch.cuda.is_bf16_supported(),
        remove_unused_columns=False,
        report_to=config.report_to,
        disable_tqdm=not config.progress,
        dataloader_num_workers=config.workers,
        dataloader_persistent_workers=config.workers > 0,
        use_cpu=not use_cuda,
    )
    history: list[dict] = []

    class Stages(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            if config.staged_unfreezing:
                stage = stage_for_epoch(state.epoch or 0, config.epochs)
                trainable_parts(model, stage)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_loss" in metrics:
                metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50))
                history.append({"epoch": round(state.epoch or 0, 2), "loss": metrics["eval_loss"],
                                "perplexity": metrics["eval_perplexity"]})
                if state.is_world_process_zero:
                    print(f"epoch {state.epoch:.0f}: validation loss {metrics['eval_loss']:.3f}, "
                          f"perplexity {metrics['eval_perplexity']:.2f}", flush=True)

    class AllParametersTrainer(Seq2SeqTrainer):
        """Staged unfreezing thaws parameters later: the optimizer must know them from the start
        (frozen ones have no gradient, so AdamW leaves them alone until then)."""

        def create_optimizer(self, *args, **kwargs):
            if self.optimizer is None and config.staged_unfreezing:
                self.optimizer = torch.optim.AdamW(
                    model.parameters(), lr=config.learning_rate, weight_decay=self.args.weight_decay
                )
            return super().create_optimizer(*args, **kwargs)

    loads_by_name = load_checkpoints_by_name(AllParametersTrainer)
    trainer = AllParametersTrainer(
        model=model,
        args=arguments,
        train_dataset=CaptionTrainingSet(train_part, image_processor, tokenizer, config.max_target_length, skip_log),
        eval_dataset=CaptionTrainingSet(validation_part, image_processor, tokenizer, config.max_target_length, skip_log)
        if validation_part.examples else None,
        data_collator=collate,
        callbacks=[Stages()],
    )
    if config.staged_unfreezing:
        trainable_parts(model, STAGES[0])
    resume = config.resume and any((output / "checkpoints").glob("checkpoint-*"))
    if config.resume and not resume:
        print(f"no checkpoint in {output / 'checkpoints'} yet: starting from the beginning", flush=True)
    resume_from = get_last_checkpoint(str(output / "checkpoints")) if resume else None
    if resume_from and not loads_by_name:
        preload_checkpoint(model, resume_from)
    # The Trainer prints its log lines to stdout; they go to stderr, so stdout holds only the summary.
    with contextlib.redirect_stdout(sys.stderr):
        result = trainer.train(resume_from_checkpoint=resume_from)
    trainable_parts(model, "all")
    trainer.save_model(str(output))  # the Trainer saves from the main process only
    summary = {
        "train_examples": len(train_part.examples), "validation_examples": len(validation_part.examples),
        "train_loss": result.training_loss, "validation": history, "output": str(output),
        "main_process": trainer.is_world_process_zero(), "processes": processes,
    }
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output)
        image_processor.save_pretrained(output)
        model.generation_config.save_pretrained(output)
        skipped = _skipped_images(skip_log)
        summary.update(skipped_images=len(skipped), first_skipped=skipped[:5])
        try:
            from .curves import plot

            summary["curves"] = str(plot(trainer.state.log_history, output))
        except ImportError:
            summary["curves"] = None  # matplotlib is in requirements-train.txt
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # The processes leave together and close the process group: one that exits while another is
        # still saving can abort in gloo's teardown ("terminate called without an active exception").
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


def _skipped_images(skip_log: Path) -> list[str]:
    """Each image that failed to decode, once, with why (processes and epochs met it again)."""
    if not skip_log.exists():
        return []
    seen: dict[str, str] = {}
    for line in skip_log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        seen.setdefault(record["image"], f"{record['image']}: {record['error']}")
    return list(seen.values())
