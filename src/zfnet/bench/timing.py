"""Timing and target checks shared by every benchmark section.

The CPU may be shared with other work, so a comparison is never two separate runs: :func:`race`
times its contenders in interleaved rounds (A, B, A, B, ...) after a warm-up call each and keeps
each one's best round, so a burst of load hits all of them alike and the best round is the least
disturbed one; :class:`Rounds` says how many. Ratios taken inside one race are what the targets judge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so wall time covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Rounds:
    """How long a :func:`race` runs: ``warmup`` untimed calls per contender, then timed rounds, at
    least ``repeats`` of them and more (up to ``max_repeats``) until ``min_seconds`` have passed:
    cheap contenders get many rounds, so one of them likely falls in a quiet moment of a loaded CPU."""

    repeats: int = 3
    min_seconds: float = 0.0
    warmup: int = 1
    max_repeats: int = 10_000

    def more(self, done: int, elapsed: float) -> bool:
        """Whether to run another round after ``done`` rounds in ``elapsed`` seconds."""
        return done < self.repeats or (elapsed < self.min_seconds and done < self.max_repeats)


def race(contenders: dict[str, Callable[[], object]], device: torch.device,
         rounds: Rounds = Rounds()) -> dict[str, float]:
    """Best wall time in seconds of each contender over interleaved rounds (see :class:`Rounds`).

    Each contender is called ``rounds.warmup`` times first (allocations, primitive caches,
    compilation), then once per round, all contenders in turn within a round.
    """
    for fn in contenders.values():
        for _ in range(rounds.warmup):
            fn()
    sync(device)
    best = {name: float("inf") for name in contenders}
    start, done = time.perf_counter(), 0
    while rounds.more(done, time.perf_counter() - start):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
        done += 1
    return best


def timed(fn: Callable[[], object], device: torch.device, rounds: Rounds = Rounds()) -> float:
    """Best wall time in seconds of ``fn`` (a race of one)."""
    return race({"fn": fn}, device, rounds)["fn"]


def target(name: str, value: float, op: str, limit: float, unit: str = "", note: str = "",
           judged: bool = True) -> dict:
    """One target check: ``value op limit`` with ``op`` ``">="`` or ``"<="``.

    Returns ``name``, ``value``, ``op``, ``limit``, ``unit``, ``ratio`` (``value / limit``: >= 1
    passes a ``>=`` target, <= 1 a ``<=`` one), ``ok`` (True/False, or None when not ``judged``:
    measured but not applicable here, ``note`` says why) and ``note``.
    """
    if op not in (">=", "<="):
        raise ValueError(f"op must be '>=' or '<=', got {op!r}")
    ok = (value >= limit if op == ">=" else value <= limit) if judged else None
    return {"name": name, "value": value, "op": op, "limit": limit, "unit": unit,
            "ratio": value / limit if limit else float("nan"), "ok": ok, "note": note}
