"""Data-parallel training under ``torchrun`` (DDP): process group setup and the few collectives the loop needs.

``torchrun --nproc_per_node=N -m zfnet.stages.train`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment; :func:`process_group` joins them (gloo
on CPU, NCCL on CUDA, one GPU per process). Outside ``torchrun`` every helper here degrades to
the single-process answer (rank 0 of 1, sums returned unchanged), so the loop has one code path.

Division of labour (see :func:`zfnet.train.loop.fit`): ``train.batch_size`` is the GLOBAL batch;
each rank takes a contiguous slice of every global batch, DDP averages the gradients, evaluation
is sharded over ranks and summed with :func:`all_reduce_sums`, and only rank 0 (:func:`is_main`)
writes checkpoints, resume state, metrics and MLflow runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# torchrun's agents keep one rendezvous TCP store for every restart (torch >= 2.4). The workers'
# keys in it (gloo's addresses under "default_pg/...") outlive the workers, and after a restart a
# worker can read the killed peer's address before the new peer rewrites it: "connectFullMesh ...
# Connection refused", a restart spent, and after the last one a hang (tests/test_distributed.py,
# on a busy machine). With this variable set for torchrun, each rendezvous round gets a fresh store.
FRESH_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 outside ``torchrun``)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched() -> bool:
    """True in a process started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """True once this process has joined a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0, or the only process)."""
    return rank() == 0


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the ``torchrun`` process group for the duration of the block (no-op for one process).

    ``device``: this process's device (:func:`zfnet.train.loop.resolve_device`: ``cuda:LOCAL_RANK``
    under ``torchrun``). Backend: NCCL on CUDA (the process pinned to its GPU), gloo on CPU.
    """
    if not launched() or active():
        yield
        return
    if restarts_share_a_store() and rank_from_env() == 0:
        log.warning("torchrun on %s nodes may restart workers (--max-restarts %s) with one rendezvous store "
                    "for every restart: a restart can read the killed workers' stale addresses and fail or hang; "
                    "start torchrun with %s=1 (README, 'Several GPUs')", os.environ.get("GROUP_WORLD_SIZE"),
                    os.environ.get("TORCHELASTIC_MAX_RESTARTS"), FRESH_STORE_ENV)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def restarts_share_a_store() -> bool:
    """Whether this ``torchrun`` worker's restarts reuse one store across several nodes (see
    :data:`FRESH_STORE_ENV`): more than one node, restarts allowed, the agent's shared store."""
    env = os.environ
    return (env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and int(env.get("GROUP_WORLD_SIZE", "1")) > 1
            and int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0)


def rank_from_env() -> int:
    """The global rank ``torchrun`` gave this process (``RANK``; 0 outside ``torchrun``)."""
    return int(os.environ.get("RANK", "0"))


def all_reduce_sums(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64); unchanged for one process."""
    if not active():
        return [float(v) for v in values]
    buf = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(buf)
    return buf.tolist()


def barrier() -> None:
    if active():
        dist.barrier()


def rank_slice(n: int) -> slice:
    """This rank's contiguous part of a global batch of ``n`` (parts differ in size by at most one)."""
    r, w = rank(), world_size()
    return slice(r * n // w, (r + 1) * n // w)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when a group is active, else itself."""
    if not active():
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
