"""Seeded random ViT-GPT2 checkpoints, built offline, for tests and benchmarks.

The Hub is out of reach in CI, so tests build a tiny checkpoint and save it with
`save_pretrained`; the benchmark builds the full-size architecture of
`nlpconnect/vit-gpt2-image-captioning` (speed does not depend on weight values). Both are loaded
back through `Captioner.from_pretrained`, the same path as the real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

import torch

EOS = "<|endoftext|>"

# Words the tiny tokenizer knows as whole tokens; anything else falls back to bytes.
TINY_CORPUS = (
    "a an the of on in with and is are near next to two three small large big little "
    "red green blue yellow purple orange white black grey pink brown "
    "circle square triangle shape shapes background picture photo image "
    "man woman dog cat people person sitting standing table street car sign bus train "
    "plate food pizza field grass water beach tree sky building room kitchen bed"
)


def build_tokenizer(size: Literal["tiny", "full"] = "tiny", corpus: Iterable[str] = (TINY_CORPUS,)):
    """A byte-level BPE GPT2TokenizerFast built in-process (transformers 5 `tokenizer_object=`).

    "full" has GPT-2's vocabulary size (50257, EOS last) so the model's shapes match the real one.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    if size == "tiny":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    else:
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        vocab = {symbol: i for i, symbol in enumerate(alphabet)}
        merges = []
        for first in alphabet:
            for second in alphabet:
                if len(vocab) == 50256:
                    break
                vocab[first + second] = len(vocab)
                merges.append((first, second))
        vocab[EOS] = 50256
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)


def build_random_model(
    tokenizer, size: Literal["tiny", "full"] = "tiny", seed: int = 0, image_size: int | None = None
):
    """A VisionEncoderDecoderModel with seeded random weights and the model card's special tokens."""
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    if size == "tiny":
        encoder = ViTConfig(
            image_size=image_size or 32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64,
            # Wide weights give peaked logits, so seeded captions have clear winners (no near-ties).
            initializer_range=0.3,
        )
        decoder = GPT2Config(
            vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
            add_cross_attention=True, initializer_range=0.3,
            bos_token_id=eos_id, eos_token_id=eos_id,
        )
    else:
        # The shapes of nlpconnect/vit-gpt2-image-captioning: ViT-base/16 at 224 + GPT-2 124M.
        encoder = ViTConfig(image_size=image_size or 224, patch_size=16)
        decoder = GPT2Config(
            vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
            add_cross_attention=True, bos_token_id=eos_id, eos_token_id=eos_id,
        )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = eos_id
    config.pad_token_id = eos_id
    config.eos_token_id = eos_id
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config).eval()
    model.generation_config.decoder_start_token_id = eos_id
    model.generation_config.bos_token_id = eos_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    return model


def build_image_processor(image_size: int):
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    # The model card's preprocessing: resize to a square, scale to [0, 1], normalise with 0.5.
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def save_random_checkpoint(
    directory: str | Path, size: Literal["tiny", "full"] = "tiny", seed: int = 0,
    corpus: Iterable[str] = (TINY_CORPUS,), image_size: int | None = None,
) -> Path:
    """Write model, tokenizer and image processor to `directory`, as save_pretrained does."""
    directory = Path(directory)
    tokenizer = build_tokenizer(size, corpus)
    model = build_random_model(tokenizer, size, seed, image_size)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    build_image_processor(model.config.encoder.image_size).save_pretrained(directory)
    return directory
