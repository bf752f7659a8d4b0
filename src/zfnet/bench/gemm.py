"""The machine's measured matrix-multiply peak (fp32, and bf16), the yardstick of training FLOP/s.

Peak = the best achieved FLOP/s of square ``torch.mm`` (``2 n^3`` FLOPs) over a few sizes; the
largest sizes usually win, small ones fit in cache and can too. bf16 is timed as well, but on a
CPU without native bf16 GEMM (AVX512-BF16 or AMX; BF16 on Arm) it runs through a slow fallback,
so it is timed only on small sizes there and reported as not native.

A peak measured once can be measured at a busy moment; sections that compare against it also run
:func:`matmul` inside their own race (``zfnet.bench.train``), so a fraction of peak is a ratio taken
under the same load. That matmul is a large one (``fp32_race_size``: the largest side up to 2048
within 10% of the best): a small one fits in cache when timed alone but not right after a training
step has swept the cache, and would read low there.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable, Sequence

import torch

from zfnet.bench.timing import Rounds, timed
from zfnet.train.runtime import bf16_support


def cpu_name() -> str:
    """The CPU model as ``/proc/cpuinfo`` names it (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Callable[[], torch.Tensor], float]:
    """A ``(n, n) @ (n, n)`` ``torch.mm`` in ``dtype`` ready to call, and its GFLOP (``2 n^3``)."""
    gen = torch.Generator(device=device).manual_seed(n)
    a = torch.randn(n, n, generator=gen, device=device).to(dtype)
    b = torch.randn(n, n, generator=gen, device=device).to(dtype)
    return lambda: torch.mm(a, b), 2 * n**3 / 1e9


def gemm_gflops(n: int, dtype: torch.dtype, device: torch.device, rounds: Rounds) -> float:
    """Achieved GFLOP/s of :func:`matmul` ``(n, dtype)``, best of ``rounds``."""
    fn, gflop = matmul(n, dtype, device)
    return gflop / timed(fn, device, rounds)


def bench_gemm(device: torch.device, sizes: Sequence[int], slow_sizes: Sequence[int], rounds: Rounds) -> dict:
    """The fp32 and bf16 GEMM peaks of ``device``.

    Args:
        sizes: matrix sides timed in fp32 (and bf16 where native).
        slow_sizes: the sides timed in bf16 where it is not native (the fallback is ~100x slower).
        rounds: timed calls per size (best kept).

    Returns ``fp32_gflops`` / ``bf16_gflops`` (the best over sizes), ``fp32_race_size`` (see the
    module docstring), ``fp32_by_size`` / ``bf16_by_size`` (``{n: GFLOP/s}``), ``bf16_native``,
    ``bf16_why``, ``bf16_over_fp32``.
    """
    support = bf16_support(device)
    fp32 = {n: gemm_gflops(n, torch.float32, device, rounds) for n in sizes}
    bf16 = {n: gemm_gflops(n, torch.bfloat16, device, rounds) for n in (sizes if support["native"] else slow_sizes)}
    return {
        "fp32_gflops": max(fp32.values()),
        "fp32_race_size": max([n for n, g in fp32.items() if n <= 2048 and g >= 0.9 * max(fp32.values())]
                              or [max(fp32, key=fp32.get)]),
        "fp32_by_size": fp32,
        "bf16_gflops": max(bf16.values()),
        "bf16_by_size": bf16,
        "bf16_native": support["native"],
        "bf16_why": support["why"],
        "bf16_over_fp32": max(bf16.values()) / max(fp32.values()),
    }
