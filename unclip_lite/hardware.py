"""What machine we run on, and the floating-point precision that is fastest on it.

bf16 autocast halves the bytes a matmul moves, and on hardware that computes bf16 natively
(CUDA GPUs from Ampere on; x86 CPUs with AVX512-BF16 or AMX; Arm CPUs with the BF16
extension) it is the faster choice. On a CPU without those instructions — an AVX2-only
laptop or cloud VM — PyTorch *emulates* bf16 and the same sampling loop runs ~44× slower
than in fp32 (measured on an AMD EPYC, AVX2). So no code in this package hard-codes bf16:
every ``precision`` argument defaults to ``"auto"``, and :func:`resolve_precision` is the one
place that turns ``"auto"`` into ``"bf16"`` or ``"fp32"`` for the device at hand. An explicit
``"fp32"``, ``"bf16"`` or ``"fp16"`` always wins.
"""
from __future__ import annotations

import functools
import os
import platform
from collections.abc import Iterable

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# CPU feature flags (as /proc/cpuinfo spells them) that mean bf16 matmuls run in hardware.
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX512-BF16, AMX, Arm BF16


def _cpuinfo(keys: tuple[str, ...]) -> str:
    """The first non-empty value of one of ``keys`` in ``/proc/cpuinfo`` (Linux); "" elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys and value.strip():
                    return value.strip()
    except OSError:
        pass
    return ""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s ``flags`` or Arm ``Features``); empty elsewhere."""
    return frozenset(_cpuinfo(("flags", "Features")).split())


@functools.cache
def cpu_model() -> str:
    """A human name for the CPU, e.g. ``"AMD EPYC"`` or ``"Intel(R) Xeon(R) Platinum 8488C"``."""
    return _cpuinfo(("model name", "Model", "Hardware")) or platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The vector ISA PyTorch's CPU kernels were dispatched to: ``"AVX2"``, ``"AVX512"``, ``"DEFAULT"``…"""
    return torch.backends.cpu.get_cpu_capability()


def cpu_has_native_bf16(flags: Iterable[str] | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16, AMX, or Arm's BF16 extension).

    ``flags`` defaults to this machine's; pass a set to ask about another (the tests do).
    Without flags to read (macOS, Windows) we ask PyTorch's own probes, and answer False if
    it has none: fp32 is never the slow choice.
    """
    if flags is None:
        flags = cpu_flags()
        if not flags:
            probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None),
                      getattr(torch.cpu, "_is_amx_tile_supported", None))
            return any(probe() for probe in probes if probe is not None)
    return bool(NATIVE_BF16_CPU_FLAGS & set(flags))


def choose_precision(device_type: str, *, cpu_native_bf16: bool, cuda_bf16: bool) -> str:
    """The rule behind ``"auto"``, as a pure function of what the hardware can do.

    bf16 on a CUDA device that supports it and on a CPU that computes it natively; fp32
    everywhere else (CPUs that would emulate bf16, Apple's MPS, older GPUs). fp16 is never
    chosen automatically: it needs loss scaling and overflows where bf16 does not.
    """
    if device_type == "cuda":
        return "bf16" if cuda_bf16 else "fp32"
    if device_type == "cpu":
        return "bf16" if cpu_native_bf16 else "fp32"
    return "fp32"


def resolve_precision(precision: str = "auto", device: torch.device | str = "cpu") -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"``: ``precision`` itself, or what ``"auto"`` picks here.

    ``$UNCLIP_LITE_PRECISION`` (one of the explicit three) overrides ``"auto"`` for a whole
    run, e.g. to time bf16 on a CPU that ``auto`` would run in fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    forced = os.environ.get("UNCLIP_LITE_PRECISION", "auto")
    if forced != "auto":
        if forced not in PRECISIONS:
            raise ValueError(f"$UNCLIP_LITE_PRECISION must be one of {', '.join(PRECISIONS)}, got {forced!r}")
        return forced
    device_type = torch.device(device).type
    cuda_bf16 = device_type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu_bf16 = device_type == "cpu" and cpu_has_native_bf16()
    return choose_precision(device_type, cpu_native_bf16=cpu_bf16, cuda_bf16=cuda_bf16)


def autocast(precision: str, device: torch.device | str = "cpu"):
    """A context that runs its body in ``precision`` (resolved first): autocast, or plain fp32."""
    device_type = torch.device(device).type
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":  # explicitly off, so an enclosing autocast cannot leak in
        return torch.autocast(device_type, enabled=False)
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type, dtype=dtype)


def hardware() -> str:
    """One line for a manifest: the device, the CPU model and its vector capability, threads, torch.

    A time means little without the machine it was measured on, and CPUs of the same
    architecture differ by 44× in bf16; so the capability and native-bf16 answer are named.
    """
    cpu = (f"{cpu_model()}, {cpu_capability()}, "
           f"{'native' if cpu_has_native_bf16() else 'no native'} bf16")
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA) with {cpu}, torch {torch.__version__}"
    return (f"{torch.get_num_threads()} CPU threads of {os.cpu_count()} cores ({cpu}), "
            f"no GPU, torch {torch.__version__}")
