"""Exact CPU speed-ups for ViT-GPT2 generation, applied to a loaded model in place.

With stock transformers, a 4-beam caption of one image spends most of its time in the decoder,
and most of that in:

1. Small matrix products (4 to 64 rows) on PyTorch's default fp32 path (MKL), which is slow on
   these shapes. oneDNN with the weight packed once in advance is faster, and a small C kernel
   (native.py, linear_kernel.c) with its own packed layout faster still, most of all at 4 rows
   (one image, 4 beams), where reading the weights from memory is the limit (figures in
   docs/performance.md). `NativeLinear` uses it for the
   decoder's Conv1D layers, the LM head and the encoder's linear layers; where it cannot be built,
   `PackedLinear` (oneDNN) does the decoder's and the encoder stays stock.
2. Cross-attention keys/values computed once per beam from identical encoder states, then copied
   at every beam reorder. `GroupedCrossAttention` computes them once per image, keeps them out of
   the beam cache (nothing to reorder: beams never move between images), and attends with all
   beams of an image as one query block.

Both change only how the same arithmetic is done: captions equal stock `generate`'s, as
tests/test_speedups.py checks for beam search, greedy and seeded sampling, batched and alone.
The cross-attention change depends on GPT-2's attention internals, so it is applied only on the
transformers versions it was checked against (transformers_changes.py), and oneDNN packing only on
the torch releases checked (CHECKED_TORCH); elsewhere those parts stay stock.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gc
import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import transformers_changes
from .native import LinearKernel, linear_kernel

# torch.ops.mkldnn's packed linear ops (private) were read and tested on these releases.
CHECKED_TORCH = ("2.13.",)
PACK_ROWS_HINT = 32  # the rows oneDNN packs the weight for: a hint, any batch size runs


@dataclass
class _GenerationScope:
    images: int  # rows of pixel_values; beams/returned sequences are repeat_interleave'd after
    keys_values: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


_scope: contextvars.ContextVar[_GenerationScope | None] = contextvars.ContextVar("captioner_scope", default=None)


@contextlib.contextmanager
def generation_scope(images: int):
    """Wrap one `generate` call on `images` images: cross-attention state lives exactly this long."""
    token = _scope.set(_GenerationScope(images))
    try:
        yield
    finally:
        _scope.reset(token)


class PackedLinear(nn.Module):
    """y = x @ W.T + b through oneDNN, with W packed once for its blocked layout (inference only)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), PACK_ROWS_HINT)
        self.register_buffer("packed_weight", packed, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)

    @classmethod
    def from_conv1d(cls, layer) -> PackedLinear:
        return cls(layer.weight.t(), layer.bias)  # Conv1D stores W as (in, out)

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> PackedLinear:
        return cls(layer.weight, layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        y = torch.ops.mkldnn._linear_pointwise(rows, self.packed_weight, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)


class NativeLinear(nn.Module):
    """y = x @ W.T + b through the native kernel (native.py), W packed once in its panel layout
    (inference only)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kernel: LinearKernel) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.kernel = kernel
        self.register_buffer("packed_weight", kernel.pack(weight), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous(), persistent=False)

    @classmethod
    def from_conv1d(cls, layer, kernel: LinearKernel) -> NativeLinear:
        return cls(layer.weight.t(), layer.bias, kernel)  # Conv1D stores W as (in, out)

    @classmethod
    def from_linear(cls, layer: nn.Linear, kernel: LinearKernel) -> NativeLinear:
        return cls(layer.weight, layer.bias, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:  # the kernel has no backward: fail loudly rather than train nothing
            raise RuntimeError("the sped-up decoder is for inference; train a model loaded without speed-ups")
        rows = x.reshape(-1, self.in_features).contiguous()
        y = self.kernel.linear(rows, self.packed_weight, self.bias, self.out_features)
        return y.view(*x.shape[:-1], self.out_features)


def onednn_packing() -> str:
    """Why PackedLinear cannot be used here, or "" where it can (the torch ops are private)."""
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch has no oneDNN"
    if not torch.__version__.startswith(CHECKED_TORCH):
        return f"oneDNN packing not checked on torch {torch.__version__}"
    if not all(hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")):
        return "this PyTorch lacks oneDNN's packed linear ops"
    return ""


class GroupedCrossAttention(nn.Module):
    """Stand-in for GPT-2's cross-attention inside a `generation_scope` (stock outside it)."""

    def __init__(self, stock) -> None:
        super().__init__()
        self.stock = stock
        self.layer_idx = stock.layer_idx
        self.num_heads, self.head_dim = stock.num_heads, stock.head_dim

    def forward(self, hidden_states, past_key_values=None, attention_mask=None,
                encoder_hidden_states=None, encoder_attention_mask=None, output_attentions=False, **kwargs):
        scope = _scope.get()
        rows = hidden_states.shape[0]
        if (
            scope is None or encoder_hidden_states is None or encoder_attention_mask is not None
            or output_attentions or self.stock.training or rows % scope.images
        ):
            return self.stock(hidden_states, past_key_values=past_key_values, attention_mask=attention_mask,
                              encoder_hidden_states=encoder_hidden_states,
                              encoder_attention_mask=encoder_attention_mask,
                              output_attentions=output_attentions, **kwargs)
        images, group = scope.images, rows // scope.images
        if self.layer_idx not in scope.keys_values:
            # generate() repeat_interleaves the encoder states: row i * group is image i's.
            per_image = encoder_hidden_states[::group]
            keys, values = self.stock.c_attn(per_image).split(self.stock.split_size, dim=2)
            scope.keys_values[self.layer_idx] = (self._heads(keys), self._heads(values))
        keys, values = scope.keys_values[self.layer_idx]
        length = hidden_states.shape[1]
        query = self.stock.q_attn(hidden_states)  # (images * group, length, embed)
        query = query.view(images, group * length, self.num_heads, self.head_dim).transpose(1, 2)
        attended = F.scaled_dot_product_attention(query, keys, values, scale=self.stock.scaling)
        attended = attended.transpose(1, 2).reshape(rows, length, self.num_heads * self.head_dim)
        return self.stock.c_proj(attended), None

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        # Copied head-major once, so that every later step reads each head's keys as one block
        # instead of striding across heads (sdpa is markedly slower on the strided view).
        return states.view(*states.shape[:2], self.num_heads, self.head_dim).transpose(1, 2).contiguous()


def _replace_modules(root: nn.Module, kind: type, make) -> int:
    """Swap every `kind` submodule of `root` for `make(old)`; returns how many were swapped."""
    swapped = 0
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kind):
                setattr(parent, name, make(child))
                swapped += 1
    return swapped


def _conv1d_as_linear(layer) -> nn.Linear:
    linear = nn.Linear(layer.weight.shape[0], layer.weight.shape[1])
    linear.weight.data = layer.weight.data.t().contiguous()  # Conv1D stores W as (in, out)
    linear.bias.data = layer.bias.data
    return linear


def quantize_int8(model) -> int:
    """Opt-in fast mode: int8 weights (dynamic quantization) for every linear layer, CPU only.

    Not exact: captions can differ from fp32's, so it is never the default. Returns the layers
    quantized. Call it instead of `speed_up`'s packing (it keeps the grouped cross-attention).
    """
    from transformers.pytorch_utils import Conv1D

    _replace_modules(model, Conv1D, _conv1d_as_linear)
    decoder = model.decoder
    if isinstance(decoder.lm_head, nn.Linear):  # untie from the embedding before quantizing
        lm_head = nn.Linear(decoder.lm_head.in_features, decoder.lm_head.out_features, bias=False)
        lm_head.weight.data = decoder.lm_head.weight.data.clone()
        decoder.lm_head = lm_head
    count = sum(isinstance(m, nn.Linear) for m in model.modules())
    torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return count


@dataclass(frozen=True)
class SpeedupReport:
    linear_layers: int  # replaced by native-kernel or oneDNN-packed (exact) or int8 (fast mode) ones
    grouped_cross_attention: int
    skipped: str = ""  # why a part was not applied
    linear_kind: str = ""  # "native", "onednn", "int8" or "stock"


def own_weights(model: nn.Module) -> None:
    """Copy every CPU parameter and buffer into memory of its own, before any is replaced.

    from_pretrained leaves the weights pointing into the memory-mapped checkpoint file, and the
    mapping lasts while any weight points into it: the file pages of every weight replaced below
    would stay resident for the life of the process, beside their packed copies (a test checks
    that no mapping is left: test_inference.py). Copied first, each replaced weight is freed with
    its layer. Tied weights stay tied (one copy per Parameter object).
    """
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):  # each listed once
            if tensor.device.type == "cpu":
                tensor.data = tensor.data.clone()
    gc.collect()  # the mapping goes with the last reference to it, some of them in cycles


def speed_up(model, int8: bool = False) -> SpeedupReport:
    """Apply both speed-ups to a VisionEncoderDecoderModel with a GPT-2 decoder on CPU in fp32.

    Anything else (GPU, half precision, another decoder, an unchecked transformers) is left stock.
    """
    from transformers.pytorch_utils import Conv1D

    decoder = getattr(model, "decoder", None)
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        return SpeedupReport(0, 0, "only the CPU fp32 path is sped up")
    if decoder is None or getattr(decoder.config, "model_type", "") != "gpt2":
        return SpeedupReport(0, 0, "the decoder is not GPT-2")
    own_weights(model)
    grouped = 0
    skipped = ""
    attention_class = transformers_changes.gpt2_attention_class()
    if transformers_changes.checked_transformers():
        for block in decoder.transformer.h:
            stock = getattr(block, "crossattention", None)
            if isinstance(stock, attention_class) and not stock.reorder_and_upcast_attn:
                block.crossattention = GroupedCrossAttention(stock)
                grouped += 1
    else:
        skipped = f"grouped cross-attention not checked on transformers {transformers_changes.transformers_version()}"

    if int8:
        return SpeedupReport(quantize_int8(model), grouped, skipped, "int8")
    kernel, why_not = linear_kernel()
    if kernel is not None:
        kind = "native"
        from_conv1d = functools.partial(NativeLinear.from_conv1d, kernel=kernel)
        from_linear = functools.partial(NativeLinear.from_linear, kernel=kernel)
    elif not (no_packing := onednn_packing()):
        kind, from_conv1d, from_linear = "onednn", PackedLinear.from_conv1d, PackedLinear.from_linear
        skipped = "; ".join(filter(None, [skipped, why_not]))
    else:  # the linear layers stay stock
        return SpeedupReport(0, grouped, "; ".join(filter(None, [skipped, why_not, no_packing])), "stock")
    replaced = _replace_modules(decoder, Conv1D, from_conv1d)
    if isinstance(getattr(decoder, "lm_head", None), nn.Linear):
        # Tied to the token embedding, which stays for the lookup: the packed copy is one more
        # vocabulary-by-768 matrix in memory.
        decoder.lm_head = from_linear(decoder.lm_head)
        replaced += 1
    encoder = getattr(model, "encoder", None)
    if kind == "native" and encoder is not None:
        # The encoder's products (197 rows an image) are compute-bound; the kernel runs them faster
        # than MKL and hands its work out dynamically; oneDNN packing is left to the decoder.
        replaced += _replace_modules(encoder, nn.Linear, from_linear)
    return SpeedupReport(replaced, grouped, skipped, kind)
