"""The training loop of docs/paper.md Sec. 3, read top to bottom.

SGD with momentum on sub-crops (the paper's 10 or random) with flips, dropout in fc6/fc7, filter
RMS renormalisation after every step, the learning rate warmed up and then annealed
(:mod:`zfnet.train.schedule`), the centre crop evaluated every ``val_every`` epochs and at every
milestone, the paper's 10-crop protocol after the last epoch, milestone checkpoints and an atomic resume state
written every epoch so a ``kill -9`` costs at most one epoch (:class:`~zfnet.train.checkpoint.Checkpointer`).

Under ``torchrun`` (:mod:`zfnet.train.distributed`) the same loop runs data-parallel:
``train.batch_size`` stays the global batch, each rank trains on its slice of it, and only rank 0
writes files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from zfnet.config import Config, ModelConfig, TrainConfig
from zfnet.data.transforms import WINDOWS, center_crop, crop_normalize, normalize, ten_crops
from zfnet.models import ConvNet, build
from zfnet.models.filters import at_radius, renormalize_filters, spatial_autocorrelation
from zfnet.train import distributed
from zfnet.train.checkpoint import FORMAT, Checkpointer
from zfnet.train.runtime import configure, read_batches, reader_workers, resolve_device, uses_bf16
from zfnet.train.schedule import Schedule

log = logging.getLogger(__name__)

INIT_SCHEMES = ("paper", "kaiming", "mixed")


def init_weights(model: nn.Module, scheme: str = "paper", std: float = 0.01) -> None:
    """Initialise conv and linear layers in place; biases 0.

    ``paper``: weights ~ N(0, std) (std = 1e-2 in the paper). ``kaiming``: He normal (fan-in,
    ReLU gain) for every layer but the classifier ``fc8``, which gets N(0, std). ``mixed``: the
    paper's N(0, std) for the first conv layer and ``fc8``, He normal in between, so the signal
    keeps its scale through a small net (what ``kaiming`` is for) while the first-layer filters
    start as small white noise, far inside the renormalisation radius, as in the paper.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    he = {"paper": [], "kaiming": layers[:-1], "mixed": layers[1:-1]}[scheme]
    for m in layers:
        if any(m is h for h in he):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.normal_(m.weight, 0.0, std)
        nn.init.zeros_(m.bias)


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


def batches_of(order: list[int], batch_size: int, part: bool = False) -> list[list[int]]:
    """``order`` cut into batches of ``batch_size``; with ``part``, each cut to this rank's contiguous
    slice (:func:`zfnet.train.distributed.rank_slice`)."""
    cut = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [b[distributed.rank_slice(len(b))] for b in cut] if part else cut


@torch.no_grad()
def evaluate(model: ConvNet, dataset, mean: torch.Tensor, t: TrainConfig, device: torch.device, crops: int = 1) -> dict:
    """Validation loss and top-1/top-5 error (%), averaging the softmax over ``crops`` crops.

    ``dataset``: ``get_batch(indices) -> (uint8 (B, 3, S, S), labels (B,))``; ``mean`` ``(3, S, S)``;
    ``t``: the ``train`` config (``crop``, ``input_scale``, ``batch_size``, ``channels_last``, ``amp``,
    ``workers``). ``crops=10`` is the paper's protocol (4 corners + centre, with flips); ``crops=1``
    the centre crop; with 10 crops the same images are also compared with their centre crop alone (one
    of the ten), paired image by image (:func:`paired_with_centre`: ``val_crops_*``). Under ``torchrun``
    every rank evaluates every ``world_size``-th image and the sums are all-reduced, so all ranks
    return the same numbers (call it on every rank).
    """
    model.eval()
    sums = torch.zeros(4 + (len(PAIRED) if crops == 10 else 0), dtype=torch.float64)  # loss, err1, err5, n, paired
    order = list(range(distributed.rank(), len(dataset), distributed.world_size()))
    mean, bf16 = mean.to(device), uses_bf16(t.amp, device)
    for images, labels in read_batches(dataset, batches_of(order, t.batch_size), reader_workers(device, t.workers),
                                       pin_memory=device.type == "cuda"):
        full = normalize(images.to(device, non_blocking=True), mean, t.input_scale)
        views = ten_crops(full, t.crop) if crops == 10 else center_crop(full, t.crop)[None]
        k, b = views.shape[:2]
        x = views.flatten(0, 1)
        x = x.contiguous(memory_format=torch.channels_last) if t.channels_last else x
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x).float()
        per_view = logits.softmax(1).view(k, b, -1).cpu()
        probs = per_view.mean(0)
        loss = float(F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum"))
        paired = paired_with_centre(probs, per_view[CENTRE], labels) if crops == 10 else []
        sums += torch.tensor([loss, *topk_errors(probs, labels), b, *paired], dtype=torch.float64)
    loss_sum, err1, err5, n, *paired = distributed.all_reduce_sums(sums.tolist(), device)
    out = {"val_loss": loss_sum / n, "val_top1_error": 100 * err1 / n, "val_top5_error": 100 * err5 / n}
    if paired:
        gain, squares, fixed, broken = paired
        variance = max(squares / n - (gain / n) ** 2, 0.0) * n / max(n - 1, 1)  # of one image's gain
        out.update(val_crops_nll_gain=gain / n, val_crops_nll_gain_se=math.sqrt(variance / n),
                   val_crops_fixed=fixed, val_crops_broken=broken)
    return out


CENTRE = 4  # the centre crop's index among :func:`~zfnet.data.transforms.ten_crops`' views
PAIRED = ("gain", "gain squared", "fixed", "broken")  # the sums :func:`paired_with_centre` returns


def paired_with_centre(probs: torch.Tensor, centre: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """A batch's sums comparing, image by image, the crops' averaged softmax ``probs`` with the centre
    crop's ``centre`` (both ``(B, K)``; ``labels`` ``(B,)``): the gain in the true class's
    log-probability, its square, the images the crops fix (centre wrong, crops right) and break."""
    true = labels[:, None]
    gain = probs.gather(1, true)[:, 0].clamp_min(1e-12).log() - centre.gather(1, true)[:, 0].clamp_min(1e-12).log()
    right, centre_right = probs.argmax(1) == labels, centre.argmax(1) == labels
    return [float(gain.sum()), float((gain**2).sum()), float((right & ~centre_right).sum()),
            float((~right & centre_right).sum())]


def config_fingerprint(cfg: Config, data_id: str) -> str:
    """Hash of everything that determines the training run (resume only continues a matching one)."""
    payload = json.dumps(
        {"seed": cfg.seed, "model": asdict(cfg.model), "train": asdict(cfg.train), "data": data_id},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, t: TrainConfig,
             diverged: str = "training diverged") -> None:
    """One step of the paper's recipe on ``loss``: backward, the optimizer's step, then the filter
    RMS renormalisation (``t.renormalize``, ``t.renorm_radius``). A non-finite loss raises
    ``FloatingPointError`` ``"<diverged> (loss nan); lower train.lr"`` before any weight changes."""
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"{diverged} (loss {loss.item()}); lower train.lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if t.renormalize:
        renormalize_filters(model, t.renorm_radius)


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, dataset, mean: torch.Tensor,
                    t: TrainConfig, device: torch.device, epoch: int, seed: int) -> dict:
    """One pass over ``dataset`` in a seeded random order; returns the epoch's training loss and
    top-1 error (%), measured on its augmented mini-batches.

    The data path: reader threads (:func:`~zfnet.train.runtime.read_batches`, ``t.workers``) read
    each batch's uint8 images from the shards; they move to ``device`` as uint8 and are cropped,
    flipped and normalised there in one gather (:func:`~zfnet.data.transforms.crop_normalize`), the
    windows drawn here (``t.crops``). ``model`` may be DDP-wrapped
    (:func:`zfnet.train.distributed.wrap`). Every rank draws the same permutation and windows for
    each global batch of ``t.batch_size`` and reads and trains on its contiguous slice; a slice's
    loss is its summed cross-entropy x world size / global batch, so DDP's gradient average equals
    the one-process gradient of the global batch. Dropout is seeded per rank. After every step the
    filters are renormalised (``t.renormalize``).
    """
    world = distributed.world_size()
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    torch.manual_seed(seed * 100_003 + epoch + 1_000_003 * distributed.rank())  # dropout
    order = torch.randperm(len(dataset), generator=gen).tolist()
    sizes = [len(b) for b in batches_of(order, t.batch_size)]
    reads = read_batches(dataset, batches_of(order, t.batch_size, part=True), reader_workers(device, t.workers),
                         pin_memory=device.type == "cuda")
    draw, size, mean, bf16 = WINDOWS[t.crops], mean.shape[-1], mean.to(device), uses_bf16(t.amp, device)

    model.train()
    loss_sum, err1, n = 0.0, 0.0, 0
    for (images, y), global_batch in zip(reads, sizes):
        windows = draw(global_batch, size, t.crop, gen).part(distributed.rank_slice(global_batch))
        x = crop_normalize(images.to(device, non_blocking=True), mean, windows, t.crop, t.input_scale)
        y = y.to(device, non_blocking=True)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
            summed = F.cross_entropy(logits.float(), y, reduction="sum")
        sgd_step(model, optimizer, summed * world / global_batch, t, f"training diverged at epoch {epoch}")
        loss_sum += summed.item()
        err1 += topk_errors(logits.detach().float(), y, (1,))[0]
        n += len(y)
    loss_sum, err1, n = distributed.all_reduce_sums([loss_sum, err1, n], device)
    return {"train_loss": loss_sum / n, "train_top1_error": 100 * err1 / n}


def filter_record(model: ConvNet, radius: float) -> dict:
    """What the epoch did to the filters: the share of conv filters at the renormalisation radius
    (all layers and conv1) and the median lag-1 spatial autocorrelation of the conv1 filters."""
    shares = at_radius(model, radius)
    conv1 = model.layer("conv1").conv.weight
    return {"filters_at_radius": shares["all"], "conv1_at_radius": shares["features.conv1.conv"],
            "conv1_autocorrelation": float(spatial_autocorrelation(conv1).median())}


def new_model(model_cfg: ModelConfig, t: TrainConfig, num_classes: int, seed: int) -> ConvNet:
    """``model_cfg`` for ``num_classes`` and ``t.crop`` inputs, initialised (``t.init``) and
    renormalised (``t.renormalize``), seeded by ``seed``."""
    torch.manual_seed(seed)
    model = build(model_cfg, num_classes, t.crop, t.input_scale)
    init_weights(model, t.init, t.init_std)
    if t.renormalize:
        renormalize_filters(model, t.renorm_radius)
    return model


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
    """Train ``cfg.model`` on ``train_set`` and return ``{"history", "model", "final"}``.

    Args:
        cfg: validated config (``model``, ``train``, ``seed`` are used).
        train_set, val_set: datasets with ``get_batch(indices) -> (uint8 (B,3,S,S), int64 (B,))``,
            ``len``, ``labels()`` and ``num_classes`` (e.g. :class:`zfnet.data.shards.ShardDataset`).
        mean: per-pixel mean ``(3, S, S)`` in 0..255 units.
        state_dir: where the resume state and in-progress milestones live (NOT a DVC out).
        out_dir: the DVC out: receives ``milestones/epoch-NNN.pt`` and ``model.pt`` at the end.
        meta: extra checkpoint fields (``classes``, ``class_names``, ``data_id``).
        on_epoch: called with each epoch's record (epoch, lr, losses, errors in %, filter
            measures, seconds), also for epochs restored from a resume state.

    Resume: if ``state_dir`` holds a resume state of the same config fingerprint, training
    continues after its epoch; the result equals an uninterrupted run (per-epoch seeding,
    restored optimizer and schedule). Under ``torchrun`` call it on every rank
    (:func:`train_one_epoch`); only rank 0 calls ``on_epoch`` and writes files.
    """
    t = cfg.train
    device = resolve_device(t.device)
    configure(device, t.threads)
    model = new_model(cfg.model, t, train_set.num_classes, cfg.seed).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    parallel = distributed.wrap(model, device)  # DDP under torchrun: averages gradients over ranks
    optimizer = sgd(model.parameters(), t)
    schedule = Schedule(optimizer, t)
    files = Checkpointer(state_dir, out_dir, config_fingerprint(cfg, meta.get("data_id", "")))
    history: list[dict] = [{"epoch": 0, **filter_record(model, t.renorm_radius)}]  # epoch 0: at initialisation
    if state := files.resume():
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history = json.loads(state["history"])
        log.info("resuming from %s after epoch %d", files.resume_path, history[-1]["epoch"])
    main = distributed.is_main()
    for record in history[1:]:
        if on_epoch and main:
            on_epoch(record)
    meta = {**meta, "format": FORMAT, "model_config": asdict(cfg.model), "num_classes": train_set.num_classes,
            "input_size": t.crop, "input_scale": t.input_scale, "mean": mean.float().cpu()}

    def checkpoint(epoch: int) -> dict:
        return {**meta, "epoch": epoch, "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}

    start = history[-1]["epoch"] + 1
    bar = tqdm(range(start, t.epochs + 1), desc="train", unit="epoch", initial=start - 1, total=t.epochs,
               disable=None if progress and main else True)
    for epoch in bar:
        t0 = time.perf_counter()
        lr = schedule.start_epoch(epoch)
        record = {"epoch": epoch, "lr": lr, **train_one_epoch(parallel, optimizer, train_set, mean, t, device, epoch, cfg.seed)}
        train_seconds = time.perf_counter() - t0
        reported = epoch in t.milestones or epoch == t.epochs
        if reported or (t.val_every and epoch % t.val_every == 0):
            record.update(evaluate(model, val_set, mean, t, device))
        if t.eval_crops > 1 and epoch == t.epochs:  # the reported number: the paper's 10 crops
            multi = evaluate(model, val_set, mean, t, device, crops=t.eval_crops)
            record.update({f"{k}_{t.eval_crops}crop": v for k, v in multi.items()})
        record.update(filter_record(model, t.renorm_radius), train_seconds=train_seconds,
                      epoch_seconds=time.perf_counter() - t0)
        schedule.end_epoch(epoch, record.get("val_top1_error", math.nan))
        history.append(record)
        if not main:
            continue
        if epoch in t.milestones:
            files.save_milestone(checkpoint(epoch))
        files.save_resume({"epoch": epoch, "model": checkpoint(epoch)["model"], "optimizer": optimizer.state_dict(),
                           "schedule": schedule.state_dict(), "history": json.dumps(history)})
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_top1=f"{record.get('val_top1_error', math.nan):.1f}%")
        if on_epoch:
            on_epoch(record)

    distributed.barrier()
    if main:
        files.publish(list(t.milestones), checkpoint(t.epochs))
    return {"history": history[1:], "initial": history[0], "model": model, "final": history[-1]}
