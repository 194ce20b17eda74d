"""The native linear kernel: the same products as torch, torch's own threads, and a clean way out."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from captioner import CaptionSettings, Captioner
from captioner.engine import native
from captioner.engine.random_models import build_random_model, build_tokenizer
from captioner.engine.speedups import NativeLinear, PackedLinear, speed_up
from helpers import native_kernel_unsupported, needs_native_kernel, photo


@pytest.fixture(params=native.usable_instruction_sets() or [pytest.param("none", marks=pytest.mark.skip(
    reason=native_kernel_unsupported() or "no instruction set"))])
def kernel(request):
    """Each build this CPU can run: on an AVX-512 machine the AVX2 build is checked too."""
    found, why_not = native.build_kernel(request.param)
    # CI installs a C compiler: where the CPU can run the kernel, a missing one is a failure.
    assert found is not None, why_not
    return found


@needs_native_kernel
def test_the_kernel_in_use_is_the_widest_this_cpu_runs():
    found, why_not = native.linear_kernel()
    assert found is not None, why_not
    assert found.instruction_set == native.usable_instruction_sets()[0]
    assert found.panel == {"avx512": 48, "avx2": 24}[found.instruction_set]


def forget_kernel_lookups():
    """The kernel and each build are looked up once per process: forget both."""
    native.linear_kernel.cache_clear()
    native.build_kernel.cache_clear()


@pytest.fixture
def fresh_kernel_lookup():
    """Let a test change the environment the kernel is looked up in; forget its result after."""
    forget_kernel_lookups()
    yield
    forget_kernel_lookups()


# One block of rows, a few (chunked), many (the encoder's way), and partial last blocks of each.
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 9, 12, 13, 33, 70, 100])
@pytest.mark.parametrize("inner, out_features", [(768, 2304), (37, 1), (64, 33), (8, 24), (8, 48), (3072, 769)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_kernel_equals_torch_linear(kernel, rows, inner, out_features, with_bias):
    generator = torch.Generator().manual_seed(rows * 1000 + inner + out_features)
    x = torch.randn(rows, inner, generator=generator)
    weight = torch.randn(out_features, inner, generator=generator)
    bias = torch.randn(out_features, generator=generator) if with_bias else None
    got = kernel.linear(x, kernel.pack(weight), bias, out_features)
    exact = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    assert got.shape == (rows, out_features) and got.dtype == torch.float32
    # fp32 rounding only: the error grows like sqrt(inner), far below a wrong element's size (~1).
    assert torch.allclose(got.double(), exact, rtol=1e-5, atol=1e-5 * inner**0.5)


def test_packing_pads_to_whole_panels_with_zeros(kernel):
    width = kernel.panel
    weight = torch.randn(width + 6, 5)
    packed = kernel.pack(weight)
    assert packed.shape == (2, 5, width) and packed.is_contiguous()
    assert torch.equal(packed[0].t(), weight[:width]) and torch.equal(packed[1, :, :6].t(), weight[width:])
    assert not packed[1, :, 6:].any()


def test_kernel_refuses_what_it_cannot_read(kernel):
    x, packed = torch.randn(4, 16), kernel.pack(torch.randn(8, 16))  # one panel, 8 columns used
    with pytest.raises(TypeError, match="fp32"):
        kernel.linear(x.double(), packed, None, 8)
    with pytest.raises(ValueError, match="shapes"):
        kernel.linear(torch.randn(4, 15), packed, None, 8)
    with pytest.raises(ValueError, match="shapes"):
        kernel.linear(x, packed, None, kernel.panel + 1)  # two panels
    with pytest.raises(ValueError, match="shapes"):
        kernel.linear(x, packed, torch.randn(7), 8)
    with pytest.raises(ValueError, match="contiguous"):
        kernel.linear(torch.randn(16, 4).t(), packed, None, 8)
    assert kernel.linear(torch.randn(0, 16), packed, None, 8).shape == (0, 8)


def test_kernel_uses_torchs_openmp_runtime(kernel):
    runtimes = native.openmp_runtimes()
    assert len(runtimes) == 1 and runtimes[0].startswith(os.path.realpath(os.path.dirname(torch.__file__)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_kernel_runs_on_the_threads_torch_already_has():
    """A second OpenMP team on 2 cores would slow every product (see model_thread.py)."""
    script = """if True:
        import os, threading, torch
        from captioner.engine import native
        torch.set_num_threads(2)
        def native_threads():
            python_threads = {t.native_id for t in threading.enumerate()}
            return sum(int(t) not in python_threads for t in os.listdir("/proc/self/task"))
        torch.randn(512, 512) @ torch.randn(512, 512)  # torch's team: one worker beside this thread
        after_torch = native_threads()
        kernel, why_not = native.linear_kernel()
        assert kernel is not None, why_not
        kernel.linear(torch.randn(4, 768), kernel.pack(torch.randn(4096, 768)), None, 4096)
        print(after_torch, native_threads())
    """
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    after_torch, after_kernel = map(int, result.stdout.split()[-2:])
    assert after_torch >= 1 and after_kernel == after_torch


def test_native_linear_matches_the_layer_it_replaces_and_refuses_to_train(kernel):
    layer = torch.nn.Linear(40, 30)
    fast = NativeLinear.from_linear(layer, kernel)
    x = torch.randn(3, 5, 40)
    with torch.no_grad():
        assert torch.allclose(fast(x), layer(x), atol=1e-5)
    with pytest.raises(RuntimeError, match="inference"):
        fast(x.requires_grad_())


def test_switched_off_the_decoder_uses_onednn_and_says_why(monkeypatch, fresh_kernel_lookup):
    monkeypatch.setenv(native.SWITCH_ENV_VAR, "0")
    model = build_random_model(build_tokenizer("tiny"), "tiny", seed=0)
    report = speed_up(model)
    assert report.linear_kind == "onednn" and native.SWITCH_ENV_VAR in report.skipped
    assert isinstance(model.decoder.lm_head, PackedLinear)
    assert type(model.encoder.layers[0].attention.q_proj) is torch.nn.Linear  # stock


def test_without_a_compiler_the_captions_are_still_exact(tiny_checkpoint, monkeypatch, tmp_path, fresh_kernel_lookup):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fallback = Captioner.from_pretrained(tiny_checkpoint)
    assert fallback.speedups.linear_kind == "onednn" and "did not build" in fallback.speedups.skipped
    forget_kernel_lookups()
    monkeypatch.delenv("CC")
    kernel = Captioner.from_pretrained(tiny_checkpoint)
    assert kernel.speedups.linear_kind == "native"
    assert list((tmp_path / "captioner").glob("linear_kernel-*.so")), "built into the cache"
    stock = Captioner.from_pretrained(tiny_checkpoint, speedups=False)
    images = [photo(300 + i) for i in range(5)]
    settings = CaptionSettings(num_beams=4, num_captions=2)
    texts = [[[c.text for c in cs] for cs in m.caption(images, settings)] for m in (fallback, kernel, stock)]
    assert texts[0] == texts[1] == texts[2]


def test_a_kernel_that_would_bring_a_second_openmp_runtime_is_not_used(monkeypatch, fresh_kernel_lookup):
    monkeypatch.setattr(native, "openmp_runtimes", lambda: ["/torch/lib/libgomp.so.1", "/usr/lib/libgomp.so.1"])
    kernel, why_not = native.linear_kernel()
    assert kernel is None and "second OpenMP runtime" in why_not
