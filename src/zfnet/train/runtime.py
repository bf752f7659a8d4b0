"""Where and how training runs: the device, CPU threads, determinism, the precision and the batch reader."""

from __future__ import annotations

import os
import platform
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch

from zfnet.train import distributed

T, R = TypeVar("T"), TypeVar("R")


def resolve_device(name: str) -> torch.device:
    """``auto | cpu | cuda`` -> a device; under ``torchrun`` CUDA means this process's GPU, ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda was requested but torch sees no CUDA device")
    if name == "cuda" and distributed.launched():
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def configure(device: torch.device, threads: int = 0) -> None:
    """CPU threads (``train.threads``; 0 keeps torch's default) and deterministic kernels on the CPU."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 instructions that multiply bf16 in hardware


CPU_FEATURES = {"avx2": "avx2", "fma3": "fma", "avx512_f": "avx512f", "avx512_bf16": "avx512_bf16",
                "amx_tile": "amx_tile", "amx_bf16": "amx_bf16", "avx_vnni": "avx_vnni",
                "avx_ne_convert": "avx_ne_convert"}  # torch's name -> /proc/cpuinfo's flag


def cpu_features() -> dict[str, bool]:
    """The SIMD features that decide fp32 and bf16 GEMM speed (:data:`CPU_FEATURES`), as torch
    detects them, or as ``/proc/cpuinfo`` flags them where this torch does not say."""
    caps = getattr(torch._C._cpu, "_get_cpu_capability", dict)()
    if isinstance(caps, dict) and caps:
        return {name: bool(caps.get(name, False)) for name in CPU_FEATURES}
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    have = set(flags.split(":", 1)[-1].split())
    return {name: flag in have for name, flag in CPU_FEATURES.items()}


def bf16_support(device: torch.device) -> dict:
    """Whether ``device`` multiplies bf16 natively: ``{"native": bool, "why": str}``.

    CUDA: bf16 tensor cores (compute capability >= 8.0). x86 CPUs: AMX or AVX512-BF16 (elsewhere
    oneDNN emulates bf16, ~8x slower than fp32 for ZFNet; docs/benchmarks.md). Arm: the BF16 extension.
    """
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return {"native": native, "why": f"{torch.cuda.get_device_name(device)}: "
                + ("bf16 tensor cores" if native else "no bf16 tensor cores (compute capability < 8.0)")}
    if device.type != "cpu":
        return {"native": False, "why": f"{device.type}: not checked"}
    feats = cpu_features()
    if any(feats[flag] for flag in BF16_CPU_FLAGS):
        return {"native": True, "why": "CPU has " + " and ".join(n for n in BF16_CPU_FLAGS if feats[n])}
    if platform.machine() in ("aarch64", "arm64") and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return {"native": True, "why": "Arm CPU with BF16 instructions"}
    have = "AVX-512" if feats["avx512_f"] else "AVX2+FMA" if feats["avx2"] else "no AVX2"
    return {"native": False, "why": f"CPU has {have}, no AVX512-BF16 and no AMX: bf16 GEMM is emulated"}


def uses_bf16(amp: str, device: torch.device) -> bool:
    """Whether ``train.amp`` autocasts to bf16 on ``device``: ``bf16`` always, ``fp32`` never, ``auto``
    where ``device`` multiplies bf16 natively (:func:`bf16_support`: a GPU with bf16 tensor cores, a CPU
    with AMX or AVX512-BF16) and not where bf16 would be emulated."""
    return amp == "bf16" or (amp == "auto" and bf16_support(device)["native"])


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; all of them where it cannot be asked)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def reader_workers(device: torch.device, workers: int = 0) -> int:
    """How many threads read training batches ahead (:func:`read_batches`); 0 = in line.

    ``workers`` > 0 (``train.workers``) is taken as given. 0 decides: on a GPU the step runs
    asynchronously and reading is the only work left to the CPU, so this rank's share of the
    machine's cores reads, but two (the training thread and the copies to the GPU): 14 threads on a
    16-core host with one GPU (docs/cost.md). On a CPU the step's intra-op threads already occupy
    the cores torch may use: a reader then competes with them and costs more than it hides
    (docs/benchmarks.md), so one runs only with a core to spare.
    """
    if workers > 0:
        return workers
    cores = available_cores()
    if device.type != "cpu":
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return max(1, cores // local_ranks - 2)
    return 1 if torch.get_num_threads() < cores else 0


def read_batches(dataset, batches: Sequence[Sequence[int]], workers: int = 0,
                 pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``dataset.get_batch(b)`` for each index list ``b`` of ``batches``, in order: uint8 images
    ``(B, 3, S, S)`` and int64 labels ``(B,)``, on the CPU.

    ``workers`` 0 reads in line; N reads in N threads, up to 2N batches ahead (the shards' memory
    maps are copied out without Python's lock, so threads scale, and nothing is copied between
    processes). ``pin_memory`` puts each batch in page-locked memory there (a GPU then copies it
    asynchronously). Only reading runs there: crops and normalisation happen where the model is
    (:func:`zfnet.data.transforms.crop_normalize`).
    """
    def read(indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = dataset.get_batch(indices)
        return (images.pin_memory(), labels.pin_memory()) if pin_memory else (images, labels)

    if workers <= 0:
        yield from map(read, batches)
        return
    yield from threaded_map(read, batches, workers, 2 * workers, "zfnet-reader")


def threaded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int,
                 name: str = "zfnet") -> Iterator[R]:
    """``fn(item)`` for each of ``items``, in order, on ``workers`` threads, with at most ``ahead``
    calls submitted and not yet taken: ``items`` is drawn lazily, so only that many of its
    elements (and results) are held at once."""
    todo = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        pending = deque(pool.submit(fn, item) for item in islice(todo, max(ahead, 1)))
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(fn, item) for item in islice(todo, 1))
            yield result
