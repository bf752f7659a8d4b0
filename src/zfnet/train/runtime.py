"""Where and how training runs: the device, CPU threads, determinism and the batch prefetcher."""

from __future__ import annotations

import os
import queue
import threading
from typing import Iterator

import torch

from zfnet.train import distributed


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


def prefetch_depth(device: torch.device, workers: int = 0) -> int:
    """How many training batches a background thread prepares ahead (:func:`prefetch`); 0 = in line.

    ``workers`` > 0 (``train.workers``) is taken as given. 0 decides: on a GPU the step runs
    asynchronously and the thread keeps it fed (2 ahead). On a CPU the step's intra-op threads
    already occupy the cores torch may use: a prefetch thread's torch ops then compete with them
    and cost more than they hide (an epoch at 1.17x pure compute with the thread, 1.08x in line,
    2 cores; docs/benchmarks.md), so it runs only with a core to spare.
    """
    if workers > 0:
        return workers
    if device.type != "cpu":
        return 2
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return 2 if torch.get_num_threads() < cores else 0


def prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead (decode and crop overlap compute);
    ``depth`` 0 runs it in line."""
    if depth <= 0:
        yield from it
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    error: list[BaseException] = []

    def work() -> None:
        try:
            for item in it:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            error.append(exc)
        finally:
            q.put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while (item := q.get()) is not done:
        yield item
    thread.join()
    if error:
        raise error[0]
