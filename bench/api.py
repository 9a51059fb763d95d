"""The plugin contract: the `Method` base class and the data objects handed to it.

A method follows scikit-learn's estimator contract:

* hyperparameters are keyword arguments of ``__init__`` (typed, defaulted) and are only
  stored there; ``get_params()`` reads them back for the run record;
* ``fit(train)`` learns from a :class:`TrainData` and returns ``self``; learned state lives in
  attributes ending in ``_``;
* ``score(images)`` returns one float per image, higher = more anomalous.

Images reach a method already decoded: uint8 arrays of shape N×H×W×3 (RGB), square-resized to
the run's ``img_size`` (bilinear, as the released code's PIL ``Resize``). Methods move them to
their device and do augmentation and normalisation there.

This module imports neither torch nor numpy-heavy code at import time so the CLI stays fast
and worker processes can pin ``CUDA_VISIBLE_DEVICES`` before CUDA starts.
"""
from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import numpy as np

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


@dataclass
class TrainData:
    """Everything a method's ``fit`` gets. Arrays are uint8, N×H×W×3, RGB, at ``img_size``.

    ``anomaly_classes[i]`` is the anomaly-class folder name of ``anomalies[i]``.
    ``outliers`` holds external pseudo-anomaly images (``--outliers``), or None when the run
    has no outlier source. ``weights`` is ``"imagenet"``, ``"none"`` or a folder holding
    torchvision-named weight files; methods resolve it with
    ``bench.methods.common.backbones`` (one place that fails clearly when weights are missing).
    ``progress(step, total)`` may be called by the method to report training progress.
    """

    normal: np.ndarray
    anomalies: np.ndarray
    anomaly_classes: list[str]
    outliers: Optional[np.ndarray]
    img_size: int
    device: str = "cpu"
    seed: int = 0
    weights: str = "none"
    progress: Callable[[int, int], None] = field(default=lambda step, total: None, repr=False)

    def __post_init__(self) -> None:
        for name in ("normal", "anomalies", "outliers"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                raise ValueError(
                    f"TrainData.{name} must be a uint8 array N×H×W×3, got {arr.dtype} {arr.shape}")
            if arr.shape[0] and arr.shape[1:3] != (self.img_size, self.img_size):
                raise ValueError(
                    f"TrainData.{name} has images of {arr.shape[1:3]}, expected img_size "
                    f"{self.img_size}×{self.img_size}")
        if len(self.anomaly_classes) != len(self.anomalies):
            raise ValueError("TrainData.anomaly_classes must name the class of every anomaly")


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
    * ``quick_params``: parameter overrides of the ``quick`` preset (a test-sized budget);
    * ``dataset_img_size``: whether the ``paper`` preset sets ``img_size`` to the dataset's
      paper size (False for a method with an input size of its own, e.g. KDAD's 128 px);
    * ``outlier_policy``: which external outlier images the harness gives the method when
      the user names none with ``--outliers`` (see :data:`OUTLIER_POLICIES`);
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
    dataset_img_size: ClassVar[bool] = True
    outlier_policy: ClassVar[str] = "none"
    uses_common_blocks: ClassVar[bool] = False

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
    def fit(self, train: TrainData) -> "Method":
        """Learn from ``train``; return ``self``."""

    @abc.abstractmethod
    def score(self, images: np.ndarray) -> np.ndarray:
        """One float per image (uint8 N×H×W×3 at ``img_size``); higher = more anomalous."""

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
