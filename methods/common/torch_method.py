"""``TorchMethod``: the base of the benchmark's torch methods (and of plugins' ones).

It owns what every torch method otherwise writes again: validation of the training budget
(``epochs`` × ``steps_per_epoch`` optimiser steps on batches of ``batch_size``), seeding,
device resolution, moving the training arrays to the device once, the fit loop (Adam with L2
decay, StepLR placed at the start or the end of each epoch, gradient clipping, progress),
eval-mode batched scoring, ``state_dict`` and forgetting an earlier fit. A method supplies:

* ``build_model(train, ctx)``: the ``nn.Module`` (built after seeding, so its init repeats);
* ``prepare(state)`` (optional): samplers and streams, drawn from ``state.rng``;
* ``training_step(state)``: one step's loss (it builds its own batch);
* ``score_batch(model, x)``: (B,) scores of a normalised float batch.

By default a subclass declares the budget parameters ``epochs``, ``steps_per_epoch``,
``batch_size``, ``lr``, ``weight_decay``, ``grad_clip`` and ``test_batch_size`` in its
``__init__`` (and ``backbone`` when it uses one), like any other parameter, and the loop runs
them as they are. A method whose loop settings are not these parameters as given (DRA's
profile-resolved values, KDAD's epochs as passes over the data) overrides ``fit_schedule``
(and ``check_params``); one whose batches share per-call state at scoring time (DRA's
score-time reference stream) overrides ``batch_scorer``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch
from torch import nn

from bench.api import MODEL_ARTEFACT, PRECISIONS, Method, Resources, RunContext, TrainData

from .augment import normalize, to_float
from .training import (adam, autocast, cpu_kernels, eval_mode, fit_loop, images_to_device,
                       make_rngs, predict_in_batches, resolve_device, seed_everything)


def check_budget(owner: str, *, lr: float, weight_decay: float = 0.0,
                 **positive_ints: Any) -> None:
    """Refuse a non-positive learning rate, a negative weight decay, or any of
    ``positive_ints`` (name=value) that is not an integer ≥ 1 (ValueError naming the value)."""
    for p, v in positive_ints.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{owner}: {p} must be an integer ≥ 1, got {v!r}")
    if not lr > 0 or not weight_decay >= 0:
        raise ValueError(f"{owner}: need lr > 0 and weight_decay ≥ 0, got lr={lr!r}, "
                         f"weight_decay={weight_decay!r}")


@dataclass(frozen=True)
class FitSchedule:
    """The optimisation one fit runs: ``epochs`` × ``steps_per_epoch`` optimiser steps, Adam
    at ``lr`` with L2 ``weight_decay``, the lr multiplied by StepLR(``lr_step_size``,
    ``lr_gamma``) placed at the ``lr_placement`` (``"start"``/``"end"``) of each epoch
    (γ = 1: constant), the global gradient norm clipped to ``grad_clip`` (None: off)."""

    epochs: int
    steps_per_epoch: int
    lr: float
    weight_decay: float
    grad_clip: Optional[float]
    lr_step_size: int
    lr_gamma: float
    lr_placement: str

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass
class FitState:
    """What one fit works with: the model, the device, the two seeded random streams and the
    training arrays on the device (uint8 N×H×W×3; ``outliers`` None when the run has none or
    the method does not use them), the run context and the loop's schedule. ``extra`` holds
    what ``prepare`` sets up."""

    model: nn.Module
    device: torch.device
    rng: np.random.RandomState
    gen: torch.Generator
    normal: torch.Tensor
    anomalies: torch.Tensor
    outliers: Optional[torch.Tensor]
    ctx: RunContext
    schedule: FitSchedule
    extra: dict = field(default_factory=dict)

    def batch(self, normal_idx: np.ndarray, anomaly_idx: np.ndarray) -> torch.Tensor:
        """The uint8 batch of these normal images, then these labelled anomalies."""
        return torch.cat([self.normal[torch.from_numpy(normal_idx).to(self.device)],
                          self.anomalies[torch.from_numpy(anomaly_idx).to(self.device)]])


class TorchMethod(Method):
    """A method trained by a torch optimiser for ``epochs`` × ``steps_per_epoch`` steps.

    Class attributes: ``lr_placement`` (``"end"``: StepLR stepped after each epoch, DevNet's
    code; ``"start"``: before it, DRA's code), ``min_batch_size`` (the smallest batch the
    step can be built from), ``normalizes_inputs`` (False: ``score_batch`` gets the uint8
    N×H×W×3 batch and converts it itself, as KDAD, whose nets take unnormalised input)."""

    uses_common_blocks = True
    # Measured peak GPU memory at 448 px, batch 48 (benchmarks/results/
    # h200_perf_448_2026-11-28.csv): 4.4 GB (Deep SAD) to 15.5 GB (SAOE); four such runs fit
    # on an 80 GB GPU.
    resources = Resources(gpu_fraction=0.25, cpus=2, memory_gb=8.0)
    precisions = PRECISIONS
    lr_placement: ClassVar[str] = "start"
    min_batch_size: ClassVar[int] = 1
    normalizes_inputs: ClassVar[bool] = True

    # -- declared budget -----------------------------------------------------------------
    @classmethod
    def budget_params(cls, steps: int, batch_size: Optional[int] = None) -> dict[str, Any]:
        out: dict[str, Any] = {"epochs": 1, "steps_per_epoch": steps}
        if batch_size:
            out["batch_size"] = batch_size
        return out

    # -- hooks ---------------------------------------------------------------------------
    def check_params(self) -> None:
        """Refuse invalid parameters before anything is built (ValueError naming the value);
        subclasses extend it with ``super().check_params()``."""
        name = type(self).__name__
        check_budget(name, lr=self.lr, weight_decay=self.weight_decay, epochs=self.epochs,
                     steps_per_epoch=self.steps_per_epoch, test_batch_size=self.test_batch_size)
        if not isinstance(self.batch_size, (int, np.integer)) or \
                self.batch_size < self.min_batch_size:
            raise ValueError(f"{name}: batch_size must be an integer ≥ {self.min_batch_size}, "
                             f"got {self.batch_size!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"{name}: grad_clip must be > 0 or None, got {self.grad_clip!r}")

    def check_data(self, train: TrainData) -> None:
        """Refuse training data the method cannot learn from. A fit that adapts an earlier
        run's model (``adapting_``) trains on normal images alone."""
        name = type(self).__name__
        if len(train.normal) == 0:
            raise ValueError(f"{name} needs normal training images; got none")
        if self.uses_labeled_anomalies and len(train.anomalies) == 0 and \
                not getattr(self, "adapting_", False):
            raise ValueError(f"{name} trains on labelled anomalies but the training data has "
                             f"none (shots = 0); run it with shots ≥ 1")

    def build_model(self, train: TrainData, ctx: RunContext) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement build_model")

    def prepare(self, state: FitState) -> None:
        """Set up samplers and streams in ``state.extra`` (draws from ``state.rng``)."""

    def training_step(self, state: FitState) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement score_batch")

    def uses_outlier_images(self, train: TrainData) -> bool:
        """Whether this fit trains on ``train.outliers`` (recorded as ``used_outliers_``)."""
        return self.uses_outliers and train.outliers is not None and len(train.outliers) > 0

    def lr_step_schedule(self) -> tuple[int, float]:
        """StepLR's (step_size, gamma); both released codes use (10, 0.1)."""
        return 10, 0.1

    def fit_schedule(self, train: TrainData) -> FitSchedule:
        """The loop's settings for this fit (after ``check_data``): by default the budget
        parameters as given, ``lr_step_schedule`` and the class's ``lr_placement``."""
        step_size, gamma = self.lr_step_schedule()
        return FitSchedule(self.epochs, self.steps_per_epoch, self.lr, self.weight_decay,
                           self.grad_clip, step_size, gamma, self.lr_placement)

    def optimizer(self, model: nn.Module, schedule: FitSchedule) -> torch.optim.Optimizer:
        return adam(model.parameters(), schedule.lr, schedule.weight_decay)

    def after_training(self, state: FitState) -> None:
        """Learned state beyond the model (e.g. a centre), computed after the loop."""

    # -- the contract --------------------------------------------------------------------
    def fit(self, train: TrainData, ctx: Optional[RunContext] = None) -> "TorchMethod":
        ctx = self._context(train, ctx)
        self.model_ = None  # forget an earlier fit before anything can fail
        init = ctx.inputs.get(MODEL_ARTEFACT)
        if init and not self.adapts:
            raise ValueError(f"{type(self).__name__} cannot start from another run's model "
                             f"({init}): it does not declare adapts = True")
        self.adapting_ = bool(init)
        self.check_params()
        self.check_data(train)
        schedule = self.fit_schedule(train)
        # Seed the global RNGs before building the model so the new layers' init repeats.
        seed_everything(ctx.seed, deterministic=ctx.deterministic)
        rng, gen = make_rngs(ctx.seed)
        device = resolve_device(ctx.device)
        model = self.build_model(train, ctx)
        if init:
            self.load_model_state(model, init)
        model = model.to(device)
        if ctx.channels_last:
            model = model.to(memory_format=torch.channels_last)
        use_outliers = self.uses_outlier_images(train)
        state = FitState(model, device, rng, gen, images_to_device(train.normal, device),
                         images_to_device(train.anomalies, device),
                         images_to_device(train.outliers, device) if use_outliers else None,
                         ctx, schedule)
        with cpu_kernels(device, ctx.precision):
            self.prepare(state)
            self.loss_history_ = self.run_fit_loop(state, self.optimizer(model, schedule))
            self.train_batch_size_ = int(self.batch_size)
            self.after_training(state)
        model.eval()
        self.model_ = model
        self.ctx_ = ctx
        self.device_ = device
        self.img_size_ = train.img_size
        if self.uses_outliers:
            self.used_outliers_ = use_outliers
        return self

    def load_model_state(self, model: nn.Module, path: str) -> None:
        """Start from the model an earlier run saved (its ``state_dict()``, e.g. the
        source-domain model of a cross-domain run); a model of another architecture is
        refused naming the file."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "model" not in state:
            raise ValueError(f"{path} holds no 'model' state (expected a {MODEL_ARTEFACT} "
                             f"written by a {type(self).__name__} run)")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ValueError(f"the model in {path} does not fit this {type(self).__name__} "
                             f"configuration (another architecture or heads): "
                             f"{str(exc).splitlines()[0]}") from exc

    # -- the compute floor (bench perf --full) ------------------------------------------
    def train_batch_images(self) -> int:
        """Images in one training step's forward pass (``bench perf``'s floor batch)."""
        return int(self.batch_size)

    def floor_loss(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A scalar from one forward pass of ``model`` over a normalised batch, for timing
        forward + backward + optimiser step without the method's data pipeline."""
        return self.score_batch(model, x).float().mean()

    def planned_steps(self, schedule: FitSchedule) -> int:
        """Optimiser steps of one fit, for progress (a method with a pre-training phase
        adds its steps)."""
        return schedule.total_steps

    def run_fit_loop(self, state: FitState, optimizer: torch.optim.Optimizer) -> list[float]:
        """The schedule's steps of ``training_step``; progress counts on from the steps that
        come before (``planned_steps``). Records the lr each epoch ran at (``lr_history_``)."""
        sched = state.schedule
        total = self.planned_steps(sched)
        offset = total - sched.total_steps
        progress = state.ctx.progress
        self.train_steps_ = total
        self.lr_history_ = lr_history = []
        steps = iter(range(sched.total_steps))

        def step_loss() -> torch.Tensor:
            if next(steps) % sched.steps_per_epoch == 0:
                lr_history.append(optimizer.param_groups[0]["lr"])
            with autocast(state.device, state.ctx.precision):
                loss = self.training_step(state)
            return loss.float()

        return fit_loop(step_loss, optimizer, modules=state.model, epochs=sched.epochs,
                        steps_per_epoch=sched.steps_per_epoch, grad_clip=sched.grad_clip,
                        lr_step_size=sched.lr_step_size, lr_gamma=sched.lr_gamma,
                        lr_placement=sched.lr_placement,
                        progress=lambda step, _n: progress(offset + step, total))

    def batch_scorer(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """The (B,)-scores function of one ``score`` call, run in eval mode without
        gradients; ``score_batch`` by default. A method whose batches share state within a
        call (a score-time random stream, features computed once) returns a closure over it."""
        return lambda x: self.score_batch(model, x)

    def score(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted("model_")
        self._check_image_size(images, self.img_size_)
        model, device, precision = self.model_, self.device_, self.ctx_.precision
        scorer = self.batch_scorer(model)

        def score_batch(x: torch.Tensor) -> torch.Tensor:
            with autocast(device, precision):
                return scorer(x).float()

        with eval_mode(model), torch.no_grad(), cpu_kernels(device, precision):
            return predict_in_batches(score_batch, images, self.test_batch_size, device,
                                      preprocess=self.normalizes_inputs, modules=[])

    def embed_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, d) features of a batch (normalised unless ``normalizes_inputs`` is False),
        for methods that declare ``embeds``."""
        raise NotImplementedError(f"{type(self).__name__} declares no embed_batch")

    def embed(self, images: np.ndarray) -> np.ndarray:
        if not self.embeds:
            return super().embed(images)
        self._check_fitted("model_")
        self._check_image_size(images, self.img_size_)
        model, device, precision = self.model_, self.device_, self.ctx_.precision
        out = []
        with eval_mode(model), torch.no_grad(), cpu_kernels(device, precision):
            for i in range(0, len(images), self.test_batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + self.test_batch_size]))
                x = x.to(device)
                if self.normalizes_inputs:
                    x = normalize(to_float(x))
                with autocast(device, precision):
                    out.append(self.embed_batch(model, x).float().flatten(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def state_dict(self) -> dict:
        self._check_fitted("model_")
        return {"model": self.model_.state_dict()}
