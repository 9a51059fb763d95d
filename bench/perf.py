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


# -- bench perf --full: one complete run, beside its compute floor ----------------------------
SMALL_SIZE = 64   # --full on a CPU: the paper run's structure at a size a CPU finishes
SMALL_STEPS = 10
SMALL_BATCH = 16


def full_run_config(method: str, *, precision: str, weights: Optional[str], small: bool,
                    results: str):
    """The sweep of one paper-preset run of ``method`` on the synthetic data (hard setting,
    10 shots, seed 0), the run ``bench run --methods M --preset paper`` makes; ``small``
    shrinks it to ``SMALL_SIZE`` px and ``SMALL_STEPS`` steps of ``SMALL_BATCH`` images for
    a CPU."""
    from .plan import SweepConfig

    sets = []
    if small:
        cls = method_class(method)
        sets = [f"{method}.img_size={SMALL_SIZE}"] + [
            f"{method}.{k}={v}" for k, v in cls.budget_params(SMALL_STEPS, SMALL_BATCH).items()]
    return SweepConfig(methods=[method], datasets=["synthetic"], preset="paper",
                       setting="hard", shots=[10], seed_list=[0], weights=weights,
                       precision=precision, set=sets, results=results, name="perf")


class _Utilisation:
    """Mean GPU utilisation (%) sampled every 0.2 s while the block runs (None without
    NVML or off CUDA)."""

    def __init__(self, device: str):
        self.device, self.samples, self._stop = device, [], None

    def __enter__(self):
        import threading

        import torch

        if not self.device.startswith("cuda"):
            return self
        try:
            torch.cuda.utilization(self.device)
        except Exception:  # no NVML: the figure stays None
            return self
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.2):
                self.samples.append(torch.cuda.utilization(self.device))

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._stop is not None:
            self._stop.set()
            self._thread.join()

    @property
    def mean(self) -> Optional[float]:
        return sum(self.samples) / len(self.samples) if self.samples else None


def compute_floor(method_obj, train, ctx, steps: int, *, max_timed: int = 20) -> dict:
    """Forward + backward + optimiser step of the method's own model on random tensors of
    its training-batch shape, at the run's precision and layout (``TorchMethod.floor_loss``):
    what the same steps cost without data sampling, augmentation or Python in between.
    Times up to ``max_timed`` steps after three warm-up steps and scales to ``steps``."""
    import torch

    from .methods.common.torch_method import TorchMethod
    from .methods.common.training import (autocast, cpu_kernels, resolve_device,
                                          seed_everything)

    if not isinstance(method_obj, TorchMethod):
        return {"floor_s": None}
    device = resolve_device(ctx.device)
    seed_everything(ctx.seed)
    model = method_obj.build_model(train, ctx).to(device)
    if ctx.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    method_obj.check_params()
    method_obj.check_data(train)
    opt = method_obj.optimizer(model, method_obj.fit_schedule(train))
    size = train.normal.shape[1]
    x = torch.randn(method_obj.train_batch_images(), 3, size, size, device=device)
    if ctx.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with cpu_kernels(device, ctx.precision):  # the kernels the method's fit runs
            with autocast(device, ctx.precision):
                loss = method_obj.floor_loss(model, x).float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    n = max(1, min(steps, max_timed))
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    per_step = (time.perf_counter() - t0) / n
    return {"floor_s": per_step * steps, "floor_s_per_step": per_step}


def measure_full(method: str, *, device: str, precision: str, weights: Optional[str],
                 small: bool, workdir: Path) -> dict:
    """One complete run through the harness' own planning and job (data loading, fit,
    scoring, record), then its compute floor in the same process."""
    import torch

    from .api import RunContext, TrainData
    from .job import execute, load_run_data
    from .plan import expand
    from .store import Store

    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") and \
            torch.cuda.get_device_capability(device)[0] >= 8 else "fp32"
    cfg = full_run_config(method, precision=precision, weights=weights, small=small,
                          results=str(workdir))
    plan = expand(cfg)
    if not plan.specs:
        reasons = "; ".join(r for _, r in plan.skipped) or "nothing planned"
        raise RuntimeError(f"no run of {method} to time: {reasons}")
    spec = plan.specs[0]
    store = Store(workdir, cfg.name)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with _Utilisation(device) as util:
        t0 = time.perf_counter()
        status = execute(spec, store, device=device, log=lambda *a, **k: None)
        wall = time.perf_counter() - t0
    rec = store.record(spec.run_id) or {}
    if status != "done":
        raise RuntimeError(f"the {method} run {status}: {rec.get('reason')}")
    state = rec.get("method_state") or {}
    steps = int(state.get("train_steps_") or 1)
    batch = int(state.get("train_batch_size_") or 1)
    split, normal, anomalies, test, outliers, size, _ = load_run_data(spec)
    m = create_method(spec.method, **spec.params)
    ctx = RunContext(device=device, seed=spec.seed, weights=spec.weights, img_size=size,
                     precision=spec.precision, channels_last=device.startswith("cuda"))
    floor = compute_floor(m, TrainData(normal=normal, anomalies=anomalies,
                                       anomaly_classes=split.train_anomaly_classes,
                                       outliers=outliers), ctx, steps)
    fit_s, score_s = rec["fit_s"], rec["score_s"]
    return {"method": method, "img_size": spec.img_size, "precision": spec.precision,
            "small": small, "steps": steps, "batch_size": batch, "wall_s": wall,
            "fit_s": fit_s, "score_s": score_s,
            "train_img_per_s": steps * batch / fit_s if fit_s else None,
            "score_img_per_s": len(test) / score_s if score_s else None,
            "peak_gpu_mem_mb": rec.get("peak_gpu_mem_mb"), "gpu_util_pct": util.mean,
            **floor, "fit_over_floor": (fit_s / floor["floor_s"]) if floor.get("floor_s")
            else None, "auroc": rec.get("auroc")}


def run_full(methods: list[str], *, device: str, precision: str, weights: Optional[str],
             small: bool) -> list[dict]:
    """``bench perf --full``: each method's complete run, printed one line each; a method
    that fails prints its reason and the others go on."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        for method in methods:
            try:
                r = measure_full(method, device=device, precision=precision, weights=weights,
                                 small=small, workdir=Path(tmp))
            except Exception as exc:
                print(f"{method:9s} full run: failed: {type(exc).__name__}: {exc}", flush=True)
                rows.append({"method": method, "error": f"{type(exc).__name__}: {exc}"})
                continue
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            print(f"{method:9s} {r['img_size']}px {r['precision']} {r['steps']} steps × "
                  f"{r['batch_size']}: wall {r['wall_s']:.1f} s (fit {r['fit_s']:.1f} s, "
                  f"score {r['score_s']:.1f} s)  floor {fmt(r.get('floor_s'), '.1f')} s  "
                  f"fit/floor {fmt(r['fit_over_floor'], '.2f')}  "
                  f"{fmt(r['train_img_per_s'], '.1f')} train img/s  "
                  f"{fmt(r['score_img_per_s'], '.1f')} score img/s  peak "
                  f"{fmt(r['peak_gpu_mem_mb'], '.0f')} MiB  GPU util "
                  f"{fmt(r['gpu_util_pct'], '.0f')} %", flush=True)
            rows.append(r)
    return rows
