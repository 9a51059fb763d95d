"""Training-loop helpers shared by the methods: seeding, device resolution, the released
codes' optimiser and step schedule, a generic epoch/step loop, and batched prediction.

Schedules (methods.md §1.8, §2): both released codes use Adam + StepLR(10, 0.1), but DRA
steps the scheduler at the *start* of each epoch (effective lr: epochs 1–9 full, 10–19 ×0.1,
…, 1-based) and DevNet at the *end* (1–10 full, 11–20 ×0.1, …). :func:`step_lr_factor`
gives that factor per epoch and :func:`fit_loop` sets it on the optimiser directly, which
reproduces both placements without relying on scheduler call-order semantics.
"""
from __future__ import annotations

import contextlib
import random
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .augment import normalize, to_float


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python's, numpy's and torch's global RNGs (all devices) with ``seed``.

    ``deterministic=True`` also asks torch for deterministic kernels (warn-only) and turns off
    cuDNN autotuning — needed for bitwise-repeatable GPU runs, at some speed cost. CPU runs
    with the same thread count repeat exactly without it."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def make_rngs(seed: int) -> tuple[np.random.RandomState, torch.Generator]:
    """A numpy RandomState seeded with ``seed`` and a CPU torch.Generator seeded from it —
    the two explicit random streams a method uses for sampling and augmentation."""
    rng = np.random.RandomState(int(seed) % 2 ** 32)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(rng.randint(0, 2 ** 31 - 1)))
    return rng, gen


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` (CUDA if available) →
    torch.device; fails clearly when the requested accelerator is missing."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") \
            from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available; "
                               f"use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} requested but only "
                               f"{torch.cuda.device_count()} CUDA device(s) are visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device!r} requested but MPS is not available")
    return dev


def step_lr_factor(epoch: int, step_size: int = 10, gamma: float = 0.1,
                   placement: str = "end") -> float:
    """Learning-rate multiplier during 1-based ``epoch`` under StepLR(step_size, gamma).

    ``placement="end"`` (DevNet: scheduler stepped after each epoch): epochs 1–10 ×1,
    11–20 ×γ, … ; ``"start"`` (DRA: stepped before each epoch under torch ≥ 1.1): epochs 1–9
    ×1, 10–19 ×γ, 20–29 ×γ², …"""
    if epoch < 1:
        raise ValueError(f"epoch is 1-based, got {epoch!r}")
    if step_size < 1:
        raise ValueError(f"step_size must be ≥ 1, got {step_size!r}")
    if placement == "end":
        n = (epoch - 1) // step_size
    elif placement == "start":
        n = epoch // step_size
    else:
        raise ValueError(f"lr placement must be 'end' (DevNet) or 'start' (DRA), got "
                         f"{placement!r}")
    return float(gamma) ** n


def adam(params: Iterable, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with default betas/eps and L2 weight decay added to the gradient (not decoupled;
    torch's ``Adam(weight_decay=…)``, as the released codes)."""
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay!r}")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def autocast(device: Union[str, torch.device], precision: str):
    """The forward-pass context of a run's ``precision``: bfloat16 autocast for ``bf16``
    (weights, gradients and optimiser state stay fp32), nothing for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision {precision!r}: use fp32 or bf16")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def cpu_kernels(device: Union[str, torch.device], precision: str):
    """The kernel choice around a whole fit or score: bf16 on the CPU runs without oneDNN.
    With torch 2.14.1 on an AVX-512 AMD EPYC, oneDNN's bf16 convolutions gave different
    results for identical inputs and seeds, and a NaN loss in one fit of five; torch's own
    bf16 kernels repeat bit for bit. fp32 and GPUs keep the default kernels."""
    if precision != "bf16" or torch.device(device).type != "cpu":
        yield
        return
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # (mkldnn.flags() also resets TF32, with a warning)
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _as_modules(modules: Union[nn.Module, Sequence[nn.Module], None]) -> list[nn.Module]:
    if modules is None:
        return []
    return [modules] if isinstance(modules, nn.Module) else list(modules)


@contextmanager
def eval_mode(modules: Union[nn.Module, Sequence[nn.Module], None]) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block and restore each one's mode afterwards."""
    mods = _as_modules(modules)
    was_training = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        yield
    finally:
        for m, t in zip(mods, was_training):
            m.train(t)


def fit_loop(step_loss: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, *,
             modules: Union[nn.Module, Sequence[nn.Module]], epochs: int,
             steps_per_epoch: int, grad_clip: Optional[float] = 1.0,
             lr_step_size: int = 10, lr_gamma: float = 0.1, lr_placement: str = "end",
             progress: Optional[Callable[[int, int], None]] = None) -> list[float]:
    """Run ``epochs × steps_per_epoch`` optimiser steps and return the mean loss per epoch.

    Each step: ``loss = step_loss()`` (builds its own batch, runs the model), zero grads,
    backward, clip the global L2 gradient norm to ``grad_clip`` (None = no clipping),
    optimiser step. Before each epoch every parameter group's lr is set to its initial lr
    times :func:`step_lr_factor`. ``modules`` are put in train mode. ``progress(step,
    total)`` is called after every step. Raises FloatingPointError if an epoch's loss is
    not finite (names the epoch)."""
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"epochs and steps_per_epoch must be ≥ 1, got {epochs!r} and "
                         f"{steps_per_epoch!r}")
    mods = _as_modules(modules)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    total = epochs * steps_per_epoch
    history: list[float] = []
    for m in mods:
        m.train()
    for epoch in range(1, epochs + 1):
        factor = step_lr_factor(epoch, lr_step_size, lr_gamma, lr_placement)
        for g, lr0 in zip(optimizer.param_groups, base_lrs):
            g["lr"] = lr0 * factor
        running = None
        for step in range(steps_per_epoch):
            loss = step_loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params, max_norm=grad_clip)
            optimizer.step()
            d = loss.detach()
            running = d if running is None else running + d  # no per-step device sync
            if progress is not None:
                progress((epoch - 1) * steps_per_epoch + step + 1, total)
        mean = float(running) / steps_per_epoch
        if not np.isfinite(mean):
            raise FloatingPointError(f"training loss became {mean} in epoch {epoch}; try a "
                                     f"lower learning rate or check the input data")
        history.append(mean)
    for g, lr0 in zip(optimizer.param_groups, base_lrs):
        g["lr"] = lr0  # leave the optimiser as constructed (the schedule is the loop's)
    return history


def images_to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Move a uint8 N×H×W×3 array to ``device`` once, as a uint8 tensor (kept channels-last;
    :func:`~bench.methods.common.augment.to_float` converts per batch)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[-1] != 3:
        raise ValueError(f"expected a uint8 array N×H×W×3, got "
                         f"{getattr(images, 'dtype', type(images))} "
                         f"{getattr(images, 'shape', '')}")
    return torch.from_numpy(np.ascontiguousarray(images)).to(device)


def predict_in_batches(fn: Callable[[torch.Tensor], torch.Tensor], images_uint8: np.ndarray,
                       batch_size: int, device: Union[str, torch.device], *,
                       preprocess: bool = True,
                       modules: Union[nn.Module, Sequence[nn.Module], None] = None) -> np.ndarray:
    """Score uint8 N×H×W×3 images batch by batch under ``torch.no_grad`` and eval mode.

    Each batch is moved to ``device`` and, with ``preprocess`` (default), converted by
    ``to_float`` + ``normalize``; otherwise ``fn`` receives the uint8 N×H×W×3 tensor.
    ``fn`` returns (B,) scores. ``modules`` (default: ``fn`` itself if it is a module) are
    switched to eval mode for the call and restored afterwards. Returns float64 (N,)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size!r}")
    if not isinstance(images_uint8, np.ndarray) or images_uint8.dtype != np.uint8 \
            or images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
        raise ValueError(f"score() expects uint8 images N×H×W×3, got "
                         f"{getattr(images_uint8, 'dtype', type(images_uint8))} "
                         f"{getattr(images_uint8, 'shape', '')}")
    out = []
    with eval_mode(modules if modules is not None else
                   (fn if isinstance(fn, nn.Module) else None)), torch.no_grad():
        for i in range(0, len(images_uint8), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images_uint8[i:i + batch_size]))
            batch = batch.to(device)
            x = normalize(to_float(batch)) if preprocess else batch
            s = fn(x)
            out.append(s.detach().reshape(-1).double().cpu().numpy())
    if not out:
        return np.zeros(0, dtype=np.float64)
    scores = np.concatenate(out)
    if len(scores) != len(images_uint8):
        raise RuntimeError(f"the scoring function returned {len(scores)} scores for "
                           f"{len(images_uint8)} images")
    return scores
