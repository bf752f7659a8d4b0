"""Training step throughput, achieved FLOP/s against the GEMM peak, and where a step's time goes.

FLOP convention: a conv or linear layer's forward costs ``2 x MACs`` FLOPs (one multiply-add =
2 FLOPs; ReLU, pooling, contrast normalisation, the loss and the optimizer are not counted), and a
training step costs ``3 x forward`` per image (backward = input gradient + weight gradient, each
about one forward). conv1 needs no input gradient, so the true count is a little lower (at 224:
about 5% lower) and the achieved fraction of peak reported here is slightly flattering.

The step is :mod:`zfnet.train.loop`'s, statement for statement: autocast (where enabled), summed
cross-entropy over the batch divided by the batch size, ``loss.item()`` (the loop's finiteness
check), ``zero_grad(set_to_none=True)``, backward, SGD step, :func:`renormalize_filters`, and the
running top-1 count (:func:`topk_errors`). The model comes from :func:`zfnet.models.build` with
:func:`init_weights`, the global settings from :func:`loop_settings`.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zfnet.bench.gemm import matmul
from zfnet.bench.timing import Rounds, race, target
from zfnet.config import ModelConfig, TrainConfig
from zfnet.models import ConvNet, build
from zfnet.models.filters import renormalize_filters
from zfnet.train.loop import init_weights, sgd, topk_errors
from zfnet.train.runtime import uses_bf16


@dataclass(frozen=True)
class Variant:
    """One way to run the same step: precision, memory format, compilation."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @property
    def name(self) -> str:
        """``fp32`` or ``bf16 autocast``, then ``channels_last`` and ``compile`` where they apply."""
        return " ".join(["bf16 autocast" if self.bf16 else "fp32"] + ["channels_last"] * self.channels_last
                        + ["compile"] * self.compile)


def loop_variant(t: TrainConfig, device: torch.device) -> Variant:
    """The variant :func:`zfnet.train.loop.fit` runs with ``t`` on ``device`` (``train.amp``:
    :func:`~zfnet.train.runtime.uses_bf16`)."""
    return Variant(bf16=uses_bf16(t.amp, device), channels_last=t.channels_last)


def race_variants(t: TrainConfig, device: torch.device, bf16: bool, compile: bool) -> tuple[Variant, ...]:
    """The variants the train section races: fp32 in both memory formats, bf16 autocast (in the loop's
    memory format; on CUDA in both), the loop's own variant, and that one compiled."""
    loop = loop_variant(t, device)
    out = [Variant(), Variant(channels_last=True)]
    if bf16:
        formats = (False, True) if device.type == "cuda" else (t.channels_last,)
        out += [Variant(bf16=True, channels_last=cl) for cl in formats]
    out.append(loop)
    if compile:
        out.append(replace(loop, compile=True))
    return tuple(dict.fromkeys(out))


@contextlib.contextmanager
def loop_settings(t: TrainConfig, device: torch.device) -> Iterator[None]:
    """The global torch settings :func:`~zfnet.train.loop.fit` applies (threads, deterministic
    algorithms on the CPU), restored on exit; the benchmark's own steps run under them too."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def model_macs(model: ConvNet) -> dict[str, int]:
    """Forward multiply-accumulates per image of every conv and linear layer, ``{module path: MACs}``."""
    macs: dict[str, int] = {}
    layers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}

    def count(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor], out: torch.Tensor) -> None:
            per_output = module.weight[0].numel()  # C_in/groups * k * k, or in_features
            macs[name] = out[0].numel() * per_output

        return hook

    handles = [m.register_forward_hook(count(name)) for name, m in layers.items()]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, model.input_size, model.input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    return macs


def train_gflop_per_image(model: ConvNet) -> float:
    """Training GFLOP per image under the module's convention: ``3 x 2 x`` forward MACs."""
    return 6 * sum(model_macs(model).values()) / 1e9


def make_model(model_cfg: ModelConfig, num_classes: int, input_size: int, t: TrainConfig, device: torch.device,
               seed: int = 0) -> ConvNet:
    """The loop's model: built, initialised and filter-renormalised as :func:`fit` does, on ``device``."""
    torch.manual_seed(seed)
    model = build(model_cfg, num_classes, input_size)
    init_weights(model, t.init, t.init_std)
    if t.renormalize:
        renormalize_filters(model, t.renorm_radius)
    return model.to(device)


def race_with_peak(contenders: dict[str, Callable[[], object]], gemm_size: int, device: torch.device,
                   rounds: Rounds, every: int = 1) -> tuple[dict[str, float], float]:
    """:func:`race` the contenders with an fp32 :func:`~zfnet.bench.gemm.matmul` of side ``gemm_size``
    run before every ``every``-th of them (sampling the machine's peak all through every round).

    Returns the contenders' best seconds and the peak GFLOP/s (the best matmul of the race).
    """
    matmul_fn, gflop = matmul(gemm_size, torch.float32, device)
    raced: dict[str, Callable[[], object]] = {}
    for i, (name, fn) in enumerate(contenders.items()):
        if i % every == 0:
            raced[f"gemm before {name}"] = matmul_fn
        raced[name] = fn
    seconds = race(raced, device, rounds)
    peak = max(gflop / s for name, s in seconds.items() if name.startswith("gemm before "))
    return {name: seconds[name] for name in contenders}, peak


class Trainer:
    """The loop's training step for ``model`` (trained in place), run as ``variant``; see the module docstring."""

    def __init__(self, model: ConvNet, t: TrainConfig, variant: Variant):
        if variant.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.t, self.variant = model, t, variant
        self.net = torch.compile(model) if variant.compile else model
        self.optimizer = sgd(model.parameters(), t)
        model.train()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step on ``x`` ``(B, 3, S, S)``, ``y`` ``(B,)`` (already on the model's device)."""
        t, device = self.t, x.device
        if self.variant.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.variant.bf16):
            logits = self.net(x)
            summed = F.cross_entropy(logits.float(), y, reduction="sum")
        loss = summed / len(y)
        loss.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if t.renormalize:
            renormalize_filters(self.model, t.renorm_radius)
        summed.item()
        topk_errors(logits.detach().float(), y, (1,))


def _units(model: ConvNet) -> list[tuple[str, str, nn.Module]]:
    """``(path, kind, module)`` of each unit of a step, bottom to top: the children of every conv
    block (conv, relu, pool, norm) and of every fc layer (linear, relu, dropout); kind = the child's
    role (``conv``, ``linear``, ``relu``, ``pool``, ``norm``, ``dropout``), whatever its class."""
    units = []
    for block_name, block in model.features.named_children():
        units += [(f"{block_name}.{name}", name, child) for name, child in block.named_children()]
    for fc_name, fc in model.classifier.named_children():
        if isinstance(fc, nn.Linear):
            units.append((fc_name, "linear", fc))
        elif isinstance(fc, nn.Sequential):
            units += [(f"{fc_name}.{name}", name, child) for name, child in fc.named_children()]
    return units


def breakdown(model: ConvNet, t: TrainConfig, x: torch.Tensor, y: torch.Tensor, variant: Variant,
              rounds: Rounds, gemm_size: int) -> dict:
    """Where one training step's time goes: each unit's forward + backward timed alone on its real
    input, plus the optimizer step and the filter renormalisation, in one :func:`race` with the whole
    step and an fp32 :func:`~zfnet.bench.gemm.matmul` of side ``gemm_size`` (so the parts, the whole
    and the peak see the same load).

    Returns ``units`` (``[{name, kind, ms, gflops, peak_fraction}]``, FLOP rates for conv/linear
    only, against the raced peak), ``kinds`` (``{kind: {ms, share}}``, share of the summed unit
    times), ``sum_ms``, ``step_ms`` (the whole step) and ``peak_gflops`` (the raced GEMM).
    """
    model = copy.deepcopy(model)
    device = x.device
    trainer = Trainer(copy.deepcopy(model), t, variant)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    units = _units(model)
    inputs: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0].detach()))
               for name, _, m in units]
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.bf16):
            model(x)
    finally:
        for h in handles:
            h.remove()
    contenders = {"step": lambda: trainer.step(x, y)}
    for i, (name, _, module) in enumerate(units):
        inp = inputs[name].clone().requires_grad_(i > 0)  # the image needs no gradient
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.bf16):
            grad = torch.randn_like(module(inp))

        def fwd_bwd(module=module, inp=inp, grad=grad) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.bf16):
                out = module(inp)
            out.backward(grad)

        contenders[name] = fwd_bwd
    optimizer = sgd(model.parameters(), t)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()  # creates the momentum buffers
    contenders["optimizer"] = optimizer.step
    if t.renormalize:
        contenders["renormalize_filters"] = lambda: renormalize_filters(model, t.renorm_radius)
    seconds, peak_gflops = race_with_peak(contenders, gemm_size, device, rounds, every=5)

    macs = model_macs(model)
    path = {m: name for name, m in model.named_modules()}
    rows = []
    for i, (name, kind, module) in enumerate(units):
        row = {"name": name, "kind": kind, "ms": 1e3 * seconds[name]}
        if path[module] in macs:
            flops = 2 * macs[path[module]] * len(x) * (3 if i > 0 else 2)
            row.update(gflops=flops / seconds[name] / 1e9, peak_fraction=flops / seconds[name] / 1e9 / peak_gflops)
        rows.append(row)
    rows.append({"name": "optimizer", "kind": "optimizer", "ms": 1e3 * seconds["optimizer"]})
    if t.renormalize:
        rows.append({"name": "renormalize_filters", "kind": "renormalize", "ms": 1e3 * seconds["renormalize_filters"]})
    total = sum(r["ms"] for r in rows)
    kinds: dict[str, dict] = {}
    for r in rows:
        kinds.setdefault(r["kind"], {"ms": 0.0})["ms"] += r["ms"]
    for k in kinds.values():
        k["share"] = k["ms"] / total
    return {"units": rows, "kinds": kinds, "sum_ms": total, "step_ms": 1e3 * seconds["step"],
            "peak_gflops": peak_gflops}


def bench_train_model(
    label: str,
    model_cfg: ModelConfig,
    num_classes: int,
    input_size: int,
    batch: int,
    t: TrainConfig,
    device: torch.device,
    variants: tuple[Variant, ...],
    rounds: Rounds,
    gemm: dict,
    breakdown_rounds: Rounds | None,
    breakdown_all: bool = True,
) -> tuple[dict, list[dict]]:
    """Step throughput of one model in every variant, against the fp32 GEMM peak: one :func:`race` of
    the steps and a :func:`~zfnet.bench.gemm.matmul` of side ``gemm["fp32_race_size"]``, so the fraction
    of peak is a ratio under the same load (bf16 rows are also set against the gemm section's bf16
    peak).

    Args:
        label: the row's name (``"224"``, ``"default"``).
        model_cfg, num_classes, input_size: what :func:`zfnet.models.build` gets.
        batch: images per step; t: the training config (optimizer, renormalisation, loop settings).
        variants: the ways to run the step (:func:`race_variants`; must hold the loop's variant and
            its fp32 counterpart); ``bf16`` ones are compared with the bf16 peak too.
        rounds: timed steps per variant (best kept), after ``rounds.warmup`` untimed ones
            (compilation happens in the first: keep ``warmup >= 1`` for compiled variants).
        gemm: :func:`zfnet.bench.gemm.bench_gemm`'s result.
        breakdown_rounds: the rounds of :func:`breakdown` (None: no breakdown).
        breakdown_all: break down every variant that is neither compiled nor emulated bf16 (else
            only the loop's).

    Returns the result (``variants``: ``{name: {step_s, images_per_s, gflops, peak_fraction,
    bf16_peak_fraction?}}``, ``peak_gflops`` (the raced GEMM), ``loop_variant``, sizes,
    ``train_gflop_per_image``, ``breakdown``:
    ``{variant: breakdown(...)}``, ``bf16_speedup``) and its target checks: fp32 in the loop's memory
    format >= 50% of the fp32 peak; bf16 autocast faster than it (judged only where bf16 is native).
    """
    torch.manual_seed(1)
    x = torch.randn(batch, 3, input_size, input_size).to(device)
    y = torch.randint(0, num_classes, (batch,)).to(device)
    base = make_model(model_cfg, num_classes, input_size, t, device)
    gflop = train_gflop_per_image(base)
    loop = loop_variant(t, device)
    trainers = {v: Trainer(copy.deepcopy(base), t, v) for v in variants}
    contenders = {v.name: lambda tr=tr: tr.step(x, y) for v, tr in trainers.items()}
    seconds, peak = race_with_peak(contenders, gemm["fp32_race_size"], device, rounds)
    rows = {}
    for v in variants:
        s = seconds[v.name]
        rows[v.name] = {"step_s": s, "images_per_s": batch / s, "gflops": gflop * batch / s,
                        "peak_fraction": gflop * batch / s / peak}
        if v.bf16:
            rows[v.name]["bf16_peak_fraction"] = gflop * batch / s / gemm["bf16_gflops"]
    result = {
        "input_size": input_size,
        "batch": batch,
        "num_classes": num_classes,
        "widths": list(model_cfg.widths),
        "fc_sizes": list(model_cfg.fc_sizes),
        "train_gflop_per_image": gflop,
        "peak_gflops": peak,
        "loop_variant": loop.name,
        "variants": rows,
    }
    if breakdown_rounds:
        shown = [v for v in variants if (not v.compile and (gemm["bf16_native"] or not v.bf16) if breakdown_all
                                         else v == loop)]
        result["breakdown"] = {v.name: breakdown(base, t, x, y, v, breakdown_rounds, gemm["fp32_race_size"])
                               for v in shown}
    fp32 = Variant(channels_last=t.channels_last)  # the loop's memory format, in fp32
    checks = [target(f"{label}: fp32 training FLOP/s / fp32 GEMM peak ({fp32.name})",
                     rows[fp32.name]["peak_fraction"], ">=", 0.5)]
    bf16 = Variant(bf16=True, channels_last=t.channels_last)
    if bf16 in variants:
        speedup = rows[bf16.name]["images_per_s"] / rows[fp32.name]["images_per_s"]
        result["bf16_speedup"] = speedup
        native = gemm["bf16_native"]
        why = "" if native else f"bf16 not native here ({gemm['bf16_why']}): measured, not judged"
        checks.append(target(f"{label}: {bf16.name} speed-up over {fp32.name}", speedup, ">=", 1.0, note=why,
                             judged=native))
    return result, checks
