"""The default speed-ups change nothing a user sees: captions equal stock transformers' generate."""

import copy

import pytest
import torch

from captioner import CaptionSettings, Captioner
from captioner.engine import speedups, transformers_changes
from captioner.engine.random_models import build_random_model, build_tokenizer
from captioner.engine.speedups import GroupedCrossAttention, NativeLinear, generation_scope, speed_up
from helpers import needs_native_kernel, photo

STRATEGIES = {
    "beam": CaptionSettings(),
    "beam, 3 captions": CaptionSettings(num_beams=4, num_captions=3),
    "greedy": CaptionSettings(strategy="greedy"),
    "seeded sampling": CaptionSettings(strategy="sample", seed=7, top_k=0),
    "sampling, 3 captions": CaptionSettings(strategy="sample", seed=3, num_captions=3, top_p=0.9),
}


@pytest.fixture(scope="module")
def stock(tiny_checkpoint):
    return Captioner.from_pretrained(tiny_checkpoint, speedups=False)


def test_both_speedups_are_applied_to_the_tiny_vit_gpt2(captioner):
    layers = captioner.model.config.decoder.n_layer
    encoder_layers = captioner.model.config.encoder.num_hidden_layers
    # Decoder, per layer: attention in/out, cross-attention query/keys-values/out, MLP in/out; plus
    # the LM head. Encoder, per layer: query, key, value, attention out, MLP in/out; plus the pooler.
    assert captioner.speedups.linear_layers == 7 * layers + 1 + 6 * encoder_layers + 1
    assert captioner.speedups.grouped_cross_attention == layers


@needs_native_kernel
def test_the_native_kernel_is_in_use_where_the_cpu_runs_it(captioner):
    # CI installs a C compiler: the tests below exercise the kernel wherever the CPU can run it.
    assert captioner.speedups.linear_kind == "native", captioner.speedups.skipped
    assert isinstance(captioner.model.decoder.lm_head, NativeLinear)
    assert isinstance(captioner.model.encoder.layers[0].attention.q_proj, NativeLinear)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "alone"])
def test_captions_equal_stock_generate(captioner, stock, name, batched):
    settings = STRATEGIES[name]
    images = [photo(100 + i) for i in range(6)]
    if batched:
        ours, theirs = captioner.caption(images, settings), stock.caption(images, settings)
    else:
        ours = [captioner.caption([image], settings)[0] for image in images]
        theirs = [stock.caption([image], settings)[0] for image in images]
    assert [[c.text for c in cs] for cs in ours] == [[c.text for c in cs] for cs in theirs]
    for mine, reference in zip(ours, theirs):
        for a, b in zip(mine, reference):
            assert (a.score is None and b.score is None) or abs(a.score - b.score) < 1e-4
    assert len({cs[0].text for cs in ours}) > 1  # the photos are told apart


def _pair(size: str, seed: int = 0):
    plain = build_random_model(build_tokenizer(size), size, seed)
    fast = copy.deepcopy(plain)  # the same weights, without drawing them twice
    return plain, fast, speed_up(fast)


def test_token_ids_equal_stock_generate_with_sequences_per_image(tiny_checkpoint):
    plain, fast, _ = _pair("tiny")
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for kwargs in (
        {"num_beams": 4, "num_return_sequences": 2, "max_length": 12},
        {"num_beams": 1, "max_length": 12},
        {"do_sample": True, "num_return_sequences": 3, "max_length": 12},
    ):
        torch.manual_seed(5)
        expected = plain.generate(pixels, **kwargs)
        torch.manual_seed(5)
        with torch.inference_mode(), generation_scope(len(pixels)):
            got = fast.generate(pixels, **kwargs)
        assert torch.equal(got, expected), kwargs


def test_outside_a_generation_scope_the_stock_cross_attention_runs(tiny_checkpoint):
    plain, fast, _ = _pair("tiny", seed=1)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert isinstance(fast.decoder.transformer.h[0].crossattention, GroupedCrossAttention)
    with torch.inference_mode():
        assert torch.equal(fast.generate(pixels, num_beams=3, max_length=10),
                           plain.generate(pixels, num_beams=3, max_length=10))


def test_unchecked_transformers_keeps_stock_cross_attention(monkeypatch):
    monkeypatch.setattr(transformers_changes, "transformers_version", lambda: "6.0.0")
    _, fast, report = _pair("tiny")
    assert report.grouped_cross_attention == 0 and "6.0.0" in report.skipped
    assert report.linear_layers > 0  # oneDNN packing does not depend on transformers' internals
    assert not isinstance(fast.decoder.transformer.h[0].crossattention, GroupedCrossAttention)


def test_unchecked_torch_keeps_stock_linear_layers_and_exact_captions(monkeypatch):
    from captioner.engine import native

    monkeypatch.setattr(speedups, "CHECKED_TORCH", ("0.0.",))
    monkeypatch.setattr(speedups, "linear_kernel", lambda: (None, "switched off here"))
    plain, fast, report = _pair("tiny")
    assert report.linear_kind == "stock" and report.linear_layers == 0
    assert "switched off here" in report.skipped and "not checked on torch" in report.skipped
    assert not any(isinstance(m, (speedups.PackedLinear, native.LinearKernel)) for m in fast.modules())
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(fast.generate(pixels, num_beams=3, max_length=10),
                           plain.generate(pixels, num_beams=3, max_length=10))


def test_only_cpu_fp32_is_sped_up():
    tokenizer = build_tokenizer("tiny")
    half = build_random_model(tokenizer, "tiny").to(torch.bfloat16)
    report = speed_up(half)
    assert (report.linear_layers, report.grouped_cross_attention) == (0, 0) and "fp32" in report.skipped


@pytest.mark.slow
def test_full_size_architecture_beam_search_equals_stock():
    """Full-size random weights give near-tied logits: the hardest case for exactness."""
    plain, fast, report = _pair("full")
    assert report.grouped_cross_attention == 12
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    kwargs = {"num_beams": 4, "max_length": 17, "min_new_tokens": 16}
    with torch.inference_mode():
        expected = plain.generate(pixels, **kwargs)
        with generation_scope(3):
            batched = fast.generate(pixels, **kwargs)
        with generation_scope(1):
            alone = fast.generate(pixels[:1], **kwargs)
    assert torch.equal(batched, expected) and torch.equal(alone, expected[:1])
