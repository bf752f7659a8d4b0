"""The training loop of PAPER.md Sec. 3, read top to bottom.

SGD with momentum on random crops + flips, dropout in fc6/fc7, filter RMS renormalisation
after every step, learning rate annealed when the (centre-crop) validation error plateaus,
the paper's 10-crop evaluation at every milestone and the last epoch, milestone checkpoints and an atomic resume state written every epoch so a
``kill -9`` costs at most one epoch.

Under ``torchrun`` (:mod:`zfnet.train.distributed`) the same loop runs data-parallel:
``train.batch_size`` stays the global batch, each rank trains on its slice of it, and only rank 0
writes files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import shutil
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from zfnet.config import Config
from zfnet.data.transforms import normalize, random_crops, ten_crops, center_crop
from zfnet.models import ConvNet, build
from zfnet.train import distributed
from zfnet.train.checkpoint import FORMAT, atomic_copy, atomic_save, load_state

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"


def init_weights(model: nn.Module, scheme: str = "paper", std: float = 0.01) -> None:
    """Initialise conv and linear layers in place.

    ``paper``: weights ~ N(0, std) (std = 1e-2 in the paper), biases 0.
    ``kaiming``: He normal (fan-in, ReLU gain) for every layer but the last, N(0, std) for the
    classifier ``fc8``; biases 0.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in layers:
        if scheme == "kaiming" and m is not layers[-1]:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.normal_(m.weight, 0.0, std)
        nn.init.zeros_(m.bias)


@torch.no_grad()
def renormalize_filters(model: nn.Module, radius: float = 0.1) -> int:
    """Rescale every conv filter whose RMS exceeds ``radius`` back to ``radius`` (PAPER.md Sec. 3).

    A filter is one output channel's ``(C_in, k, k)`` weights. Returns how many were rescaled.
    """
    count = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight
            rms = w.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            scale = (radius / rms).clamp(max=1.0)
            count += int((scale < 1.0).sum())
            w.mul_(scale)
    return count


def topk_errors(logits_or_probs: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Number of samples whose label is not among the top-k scores, for each k (counts, not %)."""
    kmax = min(max(ks), logits_or_probs.shape[1])
    top = logits_or_probs.topk(kmax, dim=1).indices
    hit = top == labels[:, None]
    return [float((~hit[:, : min(k, kmax)].any(dim=1)).sum()) for k in ks]


def sgd(params, t) -> torch.optim.SGD:
    """The paper's optimizer (SGD, momentum ``t.momentum``, weight decay ``t.weight_decay``) on ``params``.

    Fused (one kernel per tensor) where torch has it for every parameter's device: the same
    arithmetic as the default implementation, ~5x faster per step on this CPU (docs/benchmarks.md).
    """
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, fused=fused or None)


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


def _batches(dataset, order: list[int], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(0, len(order), batch_size):
        yield dataset.get_batch(order[i : i + batch_size])


def prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead (decode and crop overlap compute)."""
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


@torch.no_grad()
def evaluate(model: ConvNet, dataset, mean: torch.Tensor, cfg: Config, device: torch.device, crops: int = 1) -> dict:
    """Validation loss and top-1/top-5 error (%), averaging the softmax over ``crops`` crops.

    ``crops=10`` is the paper's protocol (4 corners + centre, with flips); ``crops=1`` the centre crop.
    Under ``torchrun`` every rank evaluates every ``world_size``-th image and the sums are
    all-reduced, so all ranks return the same numbers (call it on every rank).
    """
    t = cfg.train
    model.eval()
    loss_sum, err1, err5, n = 0.0, 0.0, 0.0, 0
    order = list(range(distributed.rank(), len(dataset), distributed.world_size()))
    for images, labels in prefetch(_batches(dataset, order, t.batch_size)):
        views = ten_crops(images, t.crop) if crops == 10 else center_crop(images, t.crop)[None]
        k, b = views.shape[:2]
        x = normalize(views.flatten(0, 1), center_crop(mean, t.crop), t.input_scale).to(device)
        x = x.contiguous(memory_format=torch.channels_last) if t.channels_last else x
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.amp and device.type == "cuda"):
            logits = model(x).float()
        probs = logits.softmax(1).view(k, b, -1).mean(0).cpu()
        loss_sum += float(F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum"))
        e1, e5 = topk_errors(probs, labels)
        err1, err5, n = err1 + e1, err5 + e5, n + b
    loss_sum, err1, err5, n = distributed.all_reduce_sums([loss_sum, err1, err5, n], device)
    return {"val_loss": loss_sum / n, "val_top1_error": 100 * err1 / n, "val_top5_error": 100 * err5 / n}


def config_fingerprint(cfg: Config, data_id: str) -> str:
    """Hash of everything that determines the training run (resume only continues a matching one)."""
    payload = json.dumps(
        {"seed": cfg.seed, "model": asdict(cfg.model), "train": asdict(cfg.train), "data": data_id},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    """``auto | cpu | cuda`` -> a device; under ``torchrun`` CUDA means this process's GPU, ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda was requested but torch sees no CUDA device")
    if name == "cuda" and distributed.launched():
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def _lr_at(epoch: int, base_lr: float, warmup: int, plateau_lr: float) -> float:
    """Learning rate for 1-based ``epoch``: linear warm-up for ``warmup`` epochs, then the plateau schedule."""
    if epoch <= warmup:
        return base_lr * epoch / (warmup + 1)
    return plateau_lr


def fit(
    cfg: Config,
    train_set,
    val_set,
    mean: torch.Tensor,
    state_dir: str | Path,
    out_dir: str | Path,
    meta: dict,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train ``cfg.model`` on ``train_set`` and return the final epoch's record.

    Args:
        cfg: validated config (``model``, ``train``, ``seed`` are used).
        train_set, val_set: datasets with ``get_batch(indices) -> (uint8 (B,3,S,S), int64 (B,))``,
            ``len``, ``labels()`` and ``num_classes`` (e.g. :class:`zfnet.data.shards.ShardDataset`).
        mean: per-pixel mean ``(3, S, S)`` in 0..255 units.
        state_dir: where the resume state and in-progress milestones live (NOT a DVC out).
        out_dir: the DVC out: receives ``milestones/epoch-NNN.pt`` and ``model.pt`` at the end.
        meta: extra checkpoint fields (``classes``, ``class_names``, ``data_id``).
        on_epoch: called with each epoch's record (epoch, lr, losses, errors in %, seconds),
            also for epochs restored from a resume state.

    Resume: if ``state_dir/resume.pt`` belongs to the same config fingerprint, training continues
    after its epoch; the result equals an uninterrupted run (per-epoch seeding, restored optimizer).

    Data-parallel (inside :func:`zfnet.train.distributed.process_group` under ``torchrun``, called
    on every rank): all ranks draw the same epoch permutation and the same crops for each global
    batch of ``train.batch_size``, and each trains on its contiguous slice; the loss of a slice is
    its summed cross-entropy x world size / global batch, so DDP's gradient average equals the
    single-process gradient of the global batch. Dropout masks are seeded per rank. Only rank 0
    calls ``on_epoch`` and writes ``state_dir``/``out_dir`` (a filesystem all ranks see).
    """
    t = cfg.train
    state_dir, out_dir = Path(state_dir), Path(out_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(t.device)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)

    num_classes = train_set.num_classes
    torch.manual_seed(cfg.seed)
    model = build(cfg.model, num_classes, t.crop)
    init_weights(model, t.init, t.init_std)
    if t.renormalize:
        renormalize_filters(model, t.renorm_radius)
    model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    parallel = distributed.wrap(model, device)  # DDP under torchrun: averages gradients over ranks
    world, main = distributed.world_size(), distributed.is_main()
    optimizer = sgd(model.parameters(), t)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=t.anneal.factor, patience=t.anneal.patience, min_lr=t.anneal.min_lr
    )
    fingerprint = config_fingerprint(cfg, meta.get("data_id", ""))
    history: list[dict] = []
    plateau_lr = t.lr
    start = 1

    resume_path = state_dir / RESUME_FILE
    if resume_path.exists():
        state = load_state(resume_path)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            plateau.load_state_dict(state["plateau"])
            history = json.loads(state["history"])
            plateau_lr = float(state["plateau_lr"])
            start = int(state["epoch"]) + 1
            log.info("resuming from %s after epoch %d", resume_path, start - 1)
        else:
            log.info("ignoring %s: it belongs to another configuration", resume_path)
            for stale in state_dir.glob("epoch-*.pt"):
                stale.unlink()
    for record in history:
        if on_epoch and main:
            on_epoch(record)

    crop_mean = center_crop(mean, t.crop).to(device)
    meta = {**meta, "input_size": t.crop, "input_scale": t.input_scale, "mean": mean.float().cpu()}

    def checkpoint(epoch: int) -> dict:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        return {
            "format": FORMAT,
            "epoch": epoch,
            "model": weights,
            "model_config": asdict(cfg.model),
            "num_classes": num_classes,
            **meta,
        }

    epochs = tqdm(range(start, t.epochs + 1), desc="train", unit="epoch", disable=None if progress and main else True,
                  initial=start - 1, total=t.epochs)
    for epoch in epochs:
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(epoch, t.lr, t.warmup_epochs, plateau_lr)
        lr = optimizer.param_groups[0]["lr"]
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch + 1_000_003 * distributed.rank())  # dropout
        order = torch.randperm(len(train_set), generator=gen).tolist()

        def train_batches():
            # Every rank reads and crops the whole global batch (one generator, the same draws as
            # one process) and keeps its slice; for one process the slice is the batch.
            for images, labels in _batches(train_set, order, t.batch_size):
                part = distributed.rank_slice(len(labels))
                x = normalize(random_crops(images, t.crop, gen)[part], crop_mean.cpu(), t.input_scale)
                yield x, labels[part], len(labels)

        parallel.train()
        loss_sum, err1, n = 0.0, 0.0, 0
        batches, depth = train_batches(), prefetch_depth(device, t.workers)
        for x, y, global_batch in prefetch(batches, depth) if depth else batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.amp and device.type == "cuda"):
                logits = parallel(x)
                summed = F.cross_entropy(logits.float(), y, reduction="sum")
            loss = summed * world / global_batch
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch} (loss {loss.item()}); lower train.lr (now {lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if t.renormalize:
                renormalize_filters(model, t.renorm_radius)
            loss_sum += summed.item()
            err1 += topk_errors(logits.detach().float(), y, (1,))[0]
            n += len(y)
        loss_sum, err1, n = distributed.all_reduce_sums([loss_sum, err1, n], device)
        train_seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": loss_sum / n,
            "train_top1_error": 100 * err1 / n,
            **evaluate(model, val_set, mean, cfg, device),
        }
        if t.eval_crops > 1 and (epoch in t.milestones or epoch == t.epochs):
            multi = evaluate(model, val_set, mean, cfg, device, crops=t.eval_crops)
            record.update({f"{k}_{t.eval_crops}crop": v for k, v in multi.items()})
        record.update(train_seconds=train_seconds, epoch_seconds=time.perf_counter() - t0)
        if epoch > t.warmup_epochs:
            plateau.step(record["val_top1_error"])
            plateau_lr = optimizer.param_groups[0]["lr"]
        history.append(record)
        if not main:
            continue
        if epoch in t.milestones:
            atomic_save(checkpoint(epoch), state_dir / f"epoch-{epoch:03d}.pt")
        atomic_save(
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "model": checkpoint(epoch)["model"],
                "optimizer": optimizer.state_dict(),
                "plateau": plateau.state_dict(),
                "plateau_lr": plateau_lr,
                "history": json.dumps(history),
            },
            resume_path,
        )
        epochs.set_postfix(loss=f"{record['train_loss']:.3f}", val_top1=f"{record['val_top1_error']:.1f}%")
        if on_epoch:
            on_epoch(record)

    distributed.barrier()
    if not main:
        return {"history": history, "model": model, "final": history[-1]}
    # Publish the outs: milestones and the final model, copied from the resume area.
    milestones_dir = out_dir / "milestones"
    if milestones_dir.exists():
        shutil.rmtree(milestones_dir)
    milestones_dir.mkdir(parents=True)
    for epoch in t.milestones:
        atomic_copy(state_dir / f"epoch-{epoch:03d}.pt", milestones_dir / f"epoch-{epoch:03d}.pt")
    atomic_save(checkpoint(t.epochs), out_dir / "model.pt")
    return {"history": history, "model": model, "final": history[-1]}
