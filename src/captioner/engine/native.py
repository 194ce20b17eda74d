"""The model's matrix products in a small C kernel (linear_kernel.c), compiled on first use.

Why: a 4-beam caption of one image multiplies 4 rows by all of GPT-2's weights at every step, so
the step is bound by memory, not arithmetic; a batch of 8 images (32 rows) is bound by arithmetic.
On the decoder's shapes it is faster than oneDNN with packed weights and than MKL, and no library
on PyPI gives torch a faster kernel for them, so it is 180 lines of C. The ViT encoder's products
(197 rows an image, bound by arithmetic) use it too (measurements in docs/performance.md).

It is built for the widest vectors the CPU has: AVX-512 (panels of 48 columns) where torch reports
it, else AVX2 + FMA (panels of 24): on a CPU with AVX-512, the AVX2 build is slower than MKL on the
encoder.

It is optional. `linear_kernel()` compiles it once per machine with the system C compiler (under a
second, cached under ~/.cache/captioner), loads it with ctypes and checks it against torch. Where
anything is missing (no compiler, no AVX2/FMA, not Linux x86-64, a second OpenMP runtime) it
returns None with the reason, and speedups.py uses oneDNN instead. CAPTIONER_NATIVE_KERNEL=0 turns
it off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

SOURCE = Path(__file__).with_name("linear_kernel.c")
# Compiler flags per instruction set, widest first; linear_kernel.c picks its panel width from them.
INSTRUCTION_SETS = {"avx512": ["-mavx512f", "-mfma"], "avx2": ["-mavx2", "-mfma"]}
SWITCH_ENV_VAR = "CAPTIONER_NATIVE_KERNEL"
COMPILE_TIMEOUT_S = 120
# Same arithmetic in another order: fp32 rounding differences only, like oneDNN's against MKL's.
SELF_CHECK_TOLERANCE = 1e-4


@dataclass(frozen=True)
class LinearKernel:
    """x @ weight.T + bias for fp32 CPU tensors, with the weight packed once by `pack`.

    >>> kernel, why_not = linear_kernel()  # doctest: +SKIP
    >>> packed = kernel.pack(layer.weight)  # doctest: +SKIP
    >>> y = kernel.linear(x, packed, layer.bias, layer.out_features)  # doctest: +SKIP
    """

    path: Path
    function: ctypes._CFuncPtr
    instruction_set: str  # a key of INSTRUCTION_SETS
    panel: int  # output columns per panel: 48 (AVX-512) or 24 (AVX2)

    def pack(self, weight: torch.Tensor) -> torch.Tensor:
        """(out, in) -> (ceil(out / panel), in, panel): panels of output columns, zero-padded."""
        out_features, inner = weight.shape
        padded = F.pad(weight.detach().float(), (0, 0, 0, -out_features % self.panel))
        return padded.view(-1, self.panel, inner).transpose(1, 2).contiguous()

    def linear(self, x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None,
               out_features: int) -> torch.Tensor:
        rows, inner = x.shape
        # The C code reads raw memory: shapes, dtype, device and layout are checked here, not there.
        if not (x.dtype == packed.dtype == torch.float32 and x.device.type == packed.device.type == "cpu"):
            raise TypeError("the native kernel takes fp32 CPU tensors")
        if packed.shape != (-(-out_features // self.panel), inner, self.panel) or (
                bias is not None and bias.shape != (out_features,)):
            raise ValueError(f"shapes do not match: x {tuple(x.shape)}, packed weight {tuple(packed.shape)}, "
                             f"{out_features} outputs")
        if not (x.is_contiguous() and packed.is_contiguous() and (bias is None or bias.is_contiguous())):
            raise ValueError("the native kernel takes contiguous tensors")
        y = torch.empty(rows, out_features)
        if rows and self.function(x.data_ptr(), rows, inner, packed.data_ptr(),
                                  None if bias is None else bias.data_ptr(), y.data_ptr(), out_features,
                                  torch.get_num_threads()):
            raise MemoryError("the native kernel could not allocate its partial sums")
        return y


def usable_instruction_sets() -> list[str]:
    """The kernel builds this CPU can run, widest first (torch's own dispatch says what it has)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": ["avx512", "avx2"], "AVX2": ["avx2"]}.get(capability, [])


@functools.cache
def linear_kernel() -> tuple[LinearKernel | None, str]:
    """The kernel for the widest vectors this CPU has, or None and why not. Once per process."""
    if os.environ.get(SWITCH_ENV_VAR, "1") == "0":
        return None, f"{SWITCH_ENV_VAR}=0"
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return None, f"the native kernel is built for Linux x86-64, not {sys.platform} {platform.machine()}"
    reasons = []
    for instruction_set in usable_instruction_sets():
        kernel, why_not = build_kernel(instruction_set)
        if kernel is not None:
            return kernel, ""
        reasons.append(f"{instruction_set}: {why_not}")  # e.g. a compiler too old for AVX-512: try AVX2
    return None, "; ".join(reasons) or "this CPU has no AVX2/FMA"


@functools.cache
def build_kernel(instruction_set: str) -> tuple[LinearKernel | None, str]:
    """One build of the kernel (a key of INSTRUCTION_SETS), compiled, loaded and checked, or None
    and why not."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None, "no C compiler (cc) to build the native kernel"
    try:
        library = _build(compiler, INSTRUCTION_SETS[instruction_set])
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"the native kernel did not build: {error}"
    try:
        loaded = ctypes.CDLL(str(library))
        function, panel_width = loaded.linear_panels, loaded.panel_width
    except (OSError, AttributeError) as error:
        return None, f"the native kernel did not load: {error}"
    runtimes = openmp_runtimes()
    if len(runtimes) > 1:  # never called, so its runtime never starts threads
        return None, f"the native kernel would add a second OpenMP runtime: {', '.join(runtimes)}"
    function.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_long, ctypes.c_int]
    function.restype = ctypes.c_int
    panel_width.argtypes, panel_width.restype = [], ctypes.c_int
    kernel = LinearKernel(library, function, instruction_set, panel_width())
    error = _self_check(kernel)
    if error > SELF_CHECK_TOLERANCE:
        return None, f"the native kernel disagrees with torch (max error {error:.1e})"
    return kernel, ""


def openmp_runtimes() -> list[str]:
    """The OpenMP runtime libraries this process has loaded: torch's, and any other."""
    names = ("libgomp", "libiomp", "libomp")
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/" in line}
    return sorted(os.path.realpath(p) for p in paths if os.path.basename(p).startswith(names))


def _build(compiler: str, vector_flags: list[str]) -> Path:
    torch_lib = Path(torch.__file__).parent / "lib"  # its libgomp: the kernel must share torch's threads
    flags = ["-O3", *vector_flags, "-fopenmp", "-fPIC", "-shared",
             f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}"]
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, *flags]).encode()).hexdigest()[:16]
    directory = _cache_directory()
    library = directory / f"linear_kernel-{key}.so"
    if library.exists():
        return library
    # Built under a temporary name and renamed: processes starting together never load half a file.
    handle, partial = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(handle)
    try:
        subprocess.run([compiler, str(SOURCE), "-o", partial, *flags], check=True, capture_output=True,
                       timeout=COMPILE_TIMEOUT_S)
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return library


def _cache_directory() -> Path:
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = Path(home) / "captioner"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if os.access(directory, os.W_OK):
            return directory
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="captioner-"))  # private to this process: nothing cached


def _self_check(kernel: LinearKernel) -> float:
    """Largest relative error against float64, over shapes that reach every branch of the C code."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for rows, inner, out_features, with_bias in ((1, 8, 3, True), (4, 37, 24, False), (7, 64, 50, True),
                                                    (13, 64, 100, True), (100, 70, 50, False)):
        x = torch.randn(rows, inner, generator=generator)
        weight = torch.randn(out_features, inner, generator=generator)
        bias = torch.randn(out_features, generator=generator) if with_bias else None
        got = kernel.linear(x, kernel.pack(weight), bias, out_features)
        want = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
        worst = max(worst, float(((got - want).abs() / want.abs().clamp(min=1.0)).max()))
    return worst
