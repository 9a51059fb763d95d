"""The plugin contract: the `Method` base class and the data objects handed to it.

A method follows scikit-learn's estimator contract:

* hyperparameters are keyword arguments of ``__init__`` (typed, defaulted) and are only
  stored there; ``get_params()`` reads them back for the run record;
* ``fit(train)`` learns from a :class:`TrainData` and returns ``self``; learned state lives in
  attributes ending in ``_``;
* ``score(images)`` returns one float per image, higher = more anomalous.

Images reach a method already decoded: uint8 arrays of shape N×H×W×3 (RGB), square-resized to
the run's ``img_size`` (bilinear, as the released code's PIL ``Resize``); the
:class:`RunContext` beside the data says how the run executes. Methods move them to
their device and do augmentation and normalisation there.

This module imports neither torch nor numpy-heavy code at import time so the CLI stays fast
and worker processes can pin ``CUDA_VISIBLE_DEVICES`` before CUDA starts.
"""
from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional

import numpy as np

# The demo preset's training schedule (``Method.demo_params``): one schedule for every method
# trained by optimiser steps, so the demo table compares methods, not budgets. 30 steps of 12
# images at 64 px: the eight paper methods' hard-setting demo takes under two minutes on two
# CPU cores; 2.5x the steps did not lift its AUCs (benchmarks/results/demo_designs.md).
DEMO_SCHEDULE: dict[str, int] = {"epochs": 3, "steps_per_epoch": 10, "batch_size": 12}

# The largest shot count of the paper's protocol. In the general setting the first
# MAX_SHOTS anomalies of the seeded shuffle are removed from the test set for every shot
# count, so 1-shot and 10-shot runs share one test set (datasets.md §2).
MAX_SHOTS = 10


# Values of ``Method.outlier_policy``, resolved per target dataset by the planner when the
# user passes no ``--outliers``:
#   "none": no external outliers;
#   "paper_pseudo": the dataset's pseudo-anomaly source in the DRA paper (Sec. 4.1:
#       ``Dataset.paper_outliers``, LAG for the three medical datasets; nothing elsewhere, where
#       pseudo anomalies are made by CutMix);
#   "exposure": the dataset's outlier-exposure data (App. B.2: ``Dataset.exposure_outliers``,
#       the other MVTec AD categories for industrial data and Mastcam, LAG for medical data);
#       with no such data declared (a user's folder) the method runs without it and the run
#       records why.
# A declared source that is not prepared makes the run skipped with that reason.
OUTLIER_POLICIES = ("none", "paper_pseudo", "exposure")


@dataclass(frozen=True)
class MethodCard:
    """Provenance of a method, shown by ``bench list methods --long`` (like torchvision's
    weight ``meta``)."""

    paper: str
    venue: str = ""
    upstream: str = ""          # upstream repository (and commit) or "none released"
    upstream_license: str = ""  # licence of the upstream code, if any
    notes: str = ""             # what is reconstructed / differs from paper or upstream code


@dataclass(frozen=True)
class SplitInfo:
    """What ``Method.skip`` may look at to decide whether it supports a run."""

    dataset: str
    subset: str
    setting: str                 # "general" | "hard"
    known_class: Optional[str]
    shots: int
    n_train_normal: int
    n_train_anomalies: int
    has_outliers: bool


# The file name of a run's saved model (``Method.state_dict()``, written by ``torch.save``):
# the artefact a staged run fine-tunes from (``RunContext.inputs``).
MODEL_ARTEFACT = "model.pt"
# The file of a run's learned features of its test images (``Method.embed``), kept by runs
# that ask for it (the Fig. 1 grid's t-SNE).
EMBEDDINGS_ARTEFACT = "embeddings.npz"
# What a run can be asked to keep (``RunSpec.keep``).
ARTEFACTS = (MODEL_ARTEFACT, EMBEDDINGS_ARTEFACT)

# The input size of the paper's methods (DRA, DevNet and the baselines train at 448 px). A
# method with another size of its own declares it as ``Method.input_size``.
DEFAULT_INPUT_SIZE = 448


@dataclass(frozen=True)
class Resources:
    """What one run of a method needs, declared per method so a scheduler can pack runs
    (a hint, not a limit): the share of one GPU, CPU cores, host memory in GiB."""

    gpu_fraction: float = 1.0
    cpus: int = 1
    memory_gb: float = 8.0

    def __post_init__(self) -> None:
        if not 0 <= self.gpu_fraction <= 1:
            raise ValueError(f"Resources.gpu_fraction must be in [0, 1], got {self.gpu_fraction!r}")
        if self.cpus < 1 or self.memory_gb <= 0:
            raise ValueError(f"Resources needs cpus >= 1 and memory_gb > 0, got cpus="
                             f"{self.cpus!r}, memory_gb={self.memory_gb!r}")


# Arithmetic precisions a run can train and score in: ``fp32`` everywhere; ``bf16``: autocast
# to bfloat16 (weights and optimiser state stay fp32), for GPUs with bf16 tensor cores.
PRECISIONS = ("fp32", "bf16")


def _no_progress(step: int, total: int) -> None:
    """The default progress callback: report nothing."""


@dataclass(frozen=True)
class RunContext:
    """How a run executes, as opposed to what it learns from (:class:`TrainData`): given to
    ``fit`` beside the data, kept by the method for ``score``.

    ``device``: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``; ``seed``: the run's seed,
    the only source of every random draw; ``weights``: ``"imagenet"``, ``"none"`` or a folder
    of torchvision-named weight files (resolved by ``bench.methods.common.backbones``);
    ``img_size``: the side in pixels the harness resized every image to (None: whatever the
    data has); ``deterministic``: ask torch for deterministic kernels (bitwise-repeatable GPU
    runs, slower); ``precision``: ``fp32`` or ``bf16`` (autocast of forward passes, part of
    the run id as ``RunSpec.precision``); ``channels_last``: keep models and batches in
    channels-last memory layout (faster convolutions on GPUs; the same arithmetic in another
    summation order, like another GPU kernel, so not part of the run id); ``inputs``: the
    artefacts of earlier runs this run was planned on (artefact name → file path; a staged
    run's :data:`MODEL_ARTEFACT` is the model it fine-tunes, see ``Method.adapts``);
    ``progress(step, total)``: training progress callback.

    ``RunContext()`` (CPU, seed 0, no pretrained weights) is for direct library use and tests;
    the harness always passes the run's own."""

    device: str = "cpu"
    seed: int = 0
    weights: str = "none"
    img_size: Optional[int] = None
    deterministic: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    inputs: Mapping[str, str] = field(default_factory=dict, hash=False)
    progress: Callable[[int, int], None] = field(default=_no_progress, repr=False,
                                                 compare=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"RunContext.precision={self.precision!r}: use one of "
                             f"{', '.join(PRECISIONS)}")

    def check(self, train: "TrainData") -> None:
        """Refuse training images of another size than ``img_size`` (a harness bug)."""
        if self.img_size is not None and train.img_size is not None and \
                train.img_size != self.img_size:
            raise ValueError(f"TrainData has images of {train.img_size} px, but the run "
                             f"context says img_size={self.img_size}")


@dataclass
class TrainData:
    """The training arrays a method's ``fit`` gets. Arrays are uint8, N×H×W×3, RGB, square,
    all of one size.

    ``anomaly_classes[i]`` is the anomaly-class folder name of ``anomalies[i]``.
    ``outliers`` holds external pseudo-anomaly images (``--outliers``), or None when the run
    has no outlier source. How the run executes (device, seed, weights) is the
    :class:`RunContext`'s.
    """

    normal: np.ndarray
    anomalies: np.ndarray
    anomaly_classes: list[str]
    outliers: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        sizes = set()
        for name in ("normal", "anomalies", "outliers"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 4 \
                    or arr.shape[-1] != 3:
                raise ValueError(
                    f"TrainData.{name} must be a uint8 array N×H×W×3, got "
                    f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
            if arr.shape[0]:
                if arr.shape[1] != arr.shape[2]:
                    raise ValueError(f"TrainData.{name} has non-square images of "
                                     f"{arr.shape[1]}×{arr.shape[2]}; resize them square")
                sizes.add(arr.shape[1])
        if len(sizes) > 1:
            raise ValueError(f"TrainData arrays have images of several sizes {sorted(sizes)}; "
                             f"resize them all to one")
        if len(self.anomaly_classes) != len(self.anomalies):
            raise ValueError("TrainData.anomaly_classes must name the class of every anomaly")

    @property
    def img_size(self) -> Optional[int]:
        """The side of the images in pixels (None when every array is empty)."""
        for arr in (self.normal, self.anomalies, self.outliers):
            if arr is not None and len(arr):
                return int(arr.shape[1])
        return None


class NotFittedError(RuntimeError):
    """Raised by ``score`` (or anything needing learned state) before ``fit``."""


class Method(abc.ABC):
    """Base class of every anomaly detector in the benchmark.

    Subclasses declare their hyperparameters as keyword arguments of ``__init__`` and store
    each under the same attribute name, nothing else. Class attributes:

    * ``name``: set by :func:`bench.registry.register_method`;
    * ``version``: bump whenever behaviour changes (it is part of every run id);
    * ``uses_labeled_anomalies``: False for unsupervised methods (KDAD); the harness then
      runs them once per test set with ``shots = 0``;
    * ``uses_outliers``: True when the method consumes ``TrainData.outliers`` when present;
    * ``card``: a :class:`MethodCard`;
    * ``input_size``: the image side in pixels the method is meant to run at (the run's
      ``img_size`` unless a preset or ``--set '*.img_size=N'`` says otherwise);
    * ``dataset_img_size``: whether the ``paper`` preset uses the dataset's paper image size
      instead of ``input_size`` (False for a method with a size of its own, e.g. KDAD's
      128 px);
    * ``resources``: a :class:`Resources` hint for schedulers;
    * ``precisions``: the arithmetic precisions (:data:`PRECISIONS`) the method implements;
      a run asks for one of them (``--precision``), others run in ``fp32`` with a note;
    * ``quick_params``: parameter overrides of the ``quick`` preset (a budget of minutes);
      :meth:`test_params` is the smaller budget the contract suite runs;
    * ``demo_params``: parameter overrides of the ``demo`` preset (the default on the
      synthetic dataset): the budget of the README's first command, sized so the whole
      hard-setting demo of every method takes minutes on two CPU cores;
    * ``outlier_policy``: which external outlier images the harness gives the method when
      the user names none with ``--outliers`` (see :data:`OUTLIER_POLICIES`);
    * ``adapts``: True for a method that can start ``fit`` from the model of an earlier run
      (``ctx.inputs[MODEL_ARTEFACT]``) and train it on normal images only (no labelled
      anomalies): the fine-tuning stage of the paper's cross-domain Table 9;
    * ``embeds``: True for a method with learned features, returned per image by
      :meth:`embed` (the paper's Fig. 1 t-SNE; methods without it are left out of it);
    * ``uses_common_blocks``: True for a method built on ``bench.methods.common``; its run
      version (:meth:`full_version`) then carries the shared blocks' version, so a change in
      a shared block changes the run id of every method that uses it.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    uses_labeled_anomalies: ClassVar[bool] = True
    uses_outliers: ClassVar[bool] = False
    card: ClassVar[MethodCard] = MethodCard(paper="")
    quick_params: ClassVar[dict[str, Any]] = {}
    demo_params: ClassVar[dict[str, Any]] = {}
    input_size: ClassVar[int] = DEFAULT_INPUT_SIZE
    dataset_img_size: ClassVar[bool] = True
    resources: ClassVar[Resources] = Resources()
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    outlier_policy: ClassVar[str] = "none"
    adapts: ClassVar[bool] = False
    embeds: ClassVar[bool] = False
    uses_common_blocks: ClassVar[bool] = False

    @classmethod
    def test_params(cls) -> dict[str, Any]:
        """Parameter overrides that fit this method on the contract suite's toy data (32 px,
        ten images) in seconds on a CPU: the method's declared test-sized budget, like
        benchopt's test config. Default: none (a method without a training budget)."""
        return {}

    @classmethod
    def budget_params(cls, steps: int, batch_size: Optional[int] = None) -> dict[str, Any]:
        """Parameter overrides for a fit of one epoch of about ``steps`` optimiser steps of
        ``batch_size`` images (None: the method's own), used by ``bench perf``. Default: none
        (a method without a training loop). After such a fit a method may report what it
        did in ``train_steps_`` and ``train_batch_size_``."""
        return {}

    @classmethod
    def full_version(cls) -> str:
        """The version that enters the run id: ``version``, plus the shared blocks' version
        (``bench.methods.common.COMMON_VERSION``) when the method uses them."""
        if not cls.uses_common_blocks:
            return str(cls.version)
        from .methods import common  # imported here: api.py stays free of torch at import

        return f"{cls.version}+common{common.COMMON_VERSION}"

    # -- scikit-learn style parameter handling -------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        if cls.__init__ is object.__init__:  # a method without hyperparameters
            return []
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must list its parameters explicitly "
                                f"(no *args/**kwargs), like a scikit-learn estimator")
            names.append(p.name)
        return names

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        names = cls.param_names()
        if not names:
            return {}
        sig = inspect.signature(cls.__init__)
        return {n: sig.parameters[n].default for n in names}

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters as passed to ``__init__`` (JSON-serialisable values)."""
        return {n: getattr(self, n) for n in self.param_names()}

    def set_params(self, **params: Any) -> "Method":
        valid = set(self.param_names())
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}; "
                                 f"valid: {', '.join(sorted(valid))}")
            setattr(self, k, v)
        return self

    # -- the contract ----------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, train: TrainData, ctx: Optional[RunContext] = None) -> "Method":
        """Learn from ``train`` under ``ctx`` (None: ``RunContext()``); return ``self``."""

    @abc.abstractmethod
    def score(self, images: np.ndarray) -> np.ndarray:
        """One float per image (uint8 N×H×W×3 at the fit's size); higher = more anomalous.
        Runs under the context ``fit`` got."""

    def embed(self, images: np.ndarray) -> np.ndarray:
        """The learned features of each image, (N, d) float (methods with ``embeds``)."""
        raise NotImplementedError(f"{type(self).__name__} has no learned features to embed "
                                  f"(embeds = False)")

    def skip(self, split: SplitInfo) -> Optional[str]:
        """Return a reason string to skip a run this method does not support, else None."""
        return None

    def backbones(self) -> list[str]:
        """torchvision architectures whose pretrained weights this configuration loads (the
        harness checks ``--weights`` for them before a sweep starts). Default: the
        ``backbone`` parameter, if the method has one."""
        arch = getattr(self, "backbone", None)
        return [arch] if isinstance(arch, str) and arch else []

    def state_dict(self) -> dict:
        """Learned state for ``--save-models`` (tensors only; loaded with weights_only=True).
        Methods with a torch model return ``{"model": module.state_dict()}``."""
        return {}

    @staticmethod
    def _context(train: TrainData, ctx: Optional[RunContext]) -> RunContext:
        """The context of a fit: ``ctx``, or ``RunContext()`` when None, checked against the
        training images' size."""
        ctx = RunContext() if ctx is None else ctx
        if not isinstance(ctx, RunContext):
            raise TypeError(f"fit(train, ctx): ctx must be a bench.api.RunContext, got "
                            f"{type(ctx).__name__}")
        ctx.check(train)
        return ctx

    def _check_image_size(self, images: np.ndarray, size: int) -> None:
        """Refuse images of another size than ``fit`` saw: the features (and top-K counts)
        would silently change."""
        if isinstance(images, np.ndarray) and images.ndim == 4 and \
                images.shape[1:3] != (size, size):
            raise ValueError(f"{type(self).__name__} was fitted on {size} px images but score() "
                             f"got {images.shape[1]}×{images.shape[2]}; resize them to the fit "
                             f"size")

    def _check_fitted(self, *attrs: str) -> None:
        missing = [a for a in attrs if getattr(self, a, None) is None]
        if missing:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(train) "
                                 f"before score(images)")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
