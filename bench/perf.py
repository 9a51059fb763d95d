"""``bench perf``: training and scoring throughput of methods on the current device, on
in-memory toy images (no dataset needed), so speed and memory claims are checked by a
command with printed figures rather than by timed tests.

For each method: one short warm-up fit (allocations, cuDNN autotuning), then a timed fit of
``steps`` training steps (one epoch) and a timed scoring pass; prints seconds per step,
training images per second, scored images per second and peak GPU memory.
"""
from __future__ import annotations

import os
import re
import time
import traceback
from pathlib import Path
from typing import Optional

from .plan import ConfigError
from .registry import create_method, method_class
from .testing import toy_problem


def check_args(*, img_size: int, steps: int, batch_size: Optional[int],
               csv: Optional[str]) -> None:
    """Refuse values that cannot be measured, before torch starts (one line each)."""
    for opt, v in (("--img-size", img_size), ("--steps", steps), ("--batch-size", batch_size)):
        if v is not None and v < 1:
            raise ConfigError(f"{opt} {v}: use a positive number")
    if csv:
        path = Path(csv).expanduser()
        if path.is_dir():
            raise ConfigError(f"--csv {csv} is a folder; give a file name, e.g. {path}/perf.csv")
        if not path.parent.is_dir():
            raise ConfigError(f"--csv {csv}: folder {path.parent} does not exist; create it "
                              f"first")


def resolve_device(device: Optional[str]) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``; None picks cuda when torch sees a GPU, else cpu. A
    GPU that torch cannot use is an error, not a crash halfway through."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not m:
        raise ConfigError(f"--device {device!r}: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: torch sees no CUDA GPU on this machine; use "
                          f"--device cpu")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s) "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return device


def measure(method: str, *, img_size: int, steps: int, batch_size: int | None, device: str,
            n_normal: int, n_test: int, seed: int = 0) -> dict:
    import torch

    cls = method_class(method)
    params = cls.budget_params(steps, batch_size)
    problem = toy_problem(size=img_size, n_normal=n_normal, shots=10, n_test=n_test // 2,
                          seed=seed, device=device, n_outliers=8)
    ctx = problem.context
    create_method(method, **cls.budget_params(1, batch_size)).fit(problem.train, ctx)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    m = create_method(method, **params)
    t0 = time.perf_counter()
    m.fit(problem.train, ctx)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m.score(problem.test_images)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    score_s = time.perf_counter() - t0
    # What the fit did, as the method reports it (a method without a training loop: one
    # pass over the normal images).
    n_steps = getattr(m, "train_steps_", None) or 1
    batch = getattr(m, "train_batch_size_", None) or n_normal
    return {"method": method, "img_size": img_size, "batch_size": batch, "steps": n_steps,
            "fit_s": fit_s, "s_per_step": fit_s / n_steps,
            "train_img_per_s": n_steps * batch / fit_s,
            "score_img_per_s": len(problem.test_images) / score_s,
            "peak_gpu_mem_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                                if device.startswith("cuda") else None)}


def run_perf(methods: list[str], *, img_size: int, steps: int, batch_size: int | None,
             device: str, n_normal: int = 64, n_test: int = 96) -> list[dict]:
    """Measure each method; one that fails (out of memory, a size it cannot take) prints
    its error on one line and the others go on (its row holds the error)."""
    rows = []
    for m in methods:
        try:
            r = measure(m, img_size=img_size, steps=steps, batch_size=batch_size,
                        device=device, n_normal=n_normal, n_test=n_test)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            print(f"{m:9s} {img_size}px: failed: {type(exc).__name__}: {exc} "
                  f"({os.path.basename(where.filename)}:{where.lineno})", flush=True)
            rows.append({"method": m, "img_size": img_size, "error": f"{type(exc).__name__}: "
                                                                     f"{exc}"})
            continue
        mem = f"{r['peak_gpu_mem_mb']:.0f} MiB" if r["peak_gpu_mem_mb"] is not None else "-"
        print(f"{m:9s} {img_size}px batch {r['batch_size']:3d}: {r['s_per_step']*1000:8.1f} "
              f"ms/step  {r['train_img_per_s']:8.1f} train img/s  {r['score_img_per_s']:8.1f} "
              f"score img/s  peak {mem}", flush=True)
        rows.append(r)
    return rows
