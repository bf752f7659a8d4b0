"""The learning-rate schedule: a linear warm-up, then the paper's anneal-on-plateau or a cosine decay.

The paper anneals the learning rate "by hand" when the validation error plateaus (docs/paper.md,
Sec. 3). ``plateau`` does that automatically (multiply by ``anneal.factor`` after
``anneal.patience`` epochs without a new best centre-crop validation error, never below
``anneal.min_lr``); it is the ``paper`` profile's schedule. On a small problem the validation error
is noisy and the rule may never fire, so the default profile uses ``cosine``: after the warm-up
the rate falls along a half cosine from ``lr`` to ``anneal.min_lr`` at the last epoch, so every
run, the ablation variants included, ends annealed whatever its curve does.

:class:`Schedule` gives the rate of each epoch and keeps its own state (``state_dict``), so a
resumed run continues on the same schedule.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("plateau", "cosine")


class Schedule:
    """Per-epoch learning rate (epochs are 1-based).

    Args:
        optimizer: its param groups' ``lr`` is set by :meth:`start_epoch`.
        t: the ``train`` config section (``lr``, ``epochs``, ``warmup_epochs``, ``schedule``,
            ``anneal``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, t) -> None:
        if t.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule: must be one of {list(SCHEDULES)}, got {t.schedule!r}")
        self.optimizer, self.t = optimizer, t
        self.plateau_lr = t.lr  # the plateau rule's current rate (after the warm-up)
        self.best, self.bad_epochs = math.inf, 0

    def lr(self, epoch: int) -> float:
        """The rate for ``epoch``: ``lr * epoch / (warmup + 1)`` during the warm-up, then the schedule's."""
        t = self.t
        if epoch <= t.warmup_epochs:
            return t.lr * epoch / (t.warmup_epochs + 1)
        if t.schedule == "plateau":
            return self.plateau_lr
        span = max(t.epochs - t.warmup_epochs - 1, 1)
        progress = min((epoch - t.warmup_epochs - 1) / span, 1.0)
        return t.anneal.min_lr + (t.lr - t.anneal.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def start_epoch(self, epoch: int) -> float:
        """Set the optimizer's rate for ``epoch`` and return it."""
        lr = self.lr(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def end_epoch(self, epoch: int, val_error: float) -> None:
        """Feed the epoch's centre-crop validation error (%) to the plateau rule (after the warm-up)."""
        if epoch <= self.t.warmup_epochs:
            return
        if val_error < self.best:
            self.best, self.bad_epochs = val_error, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.t.anneal.patience:
            self.plateau_lr = max(self.plateau_lr * self.t.anneal.factor, self.t.anneal.min_lr)
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"plateau_lr": self.plateau_lr, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_lr, self.best, self.bad_epochs = float(state["plateau_lr"]), float(state["best"]), int(state["bad_epochs"])
