"""anomalib image models as method plugins (``anomalib:patchcore``, ``anomalib:padim``, …).

Each is trained by anomalib's own ``Engine`` on the run's normal training images only (like
KDAD: no labelled anomalies, so the harness runs it once per test set with shots = 0) and
scores an image with the model's raw image-level anomaly score (``pred_score`` with
anomalib's post-processor, which normalises scores against a validation set, switched off).

anomalib is an optional extra (``pip install -e '.[anomalib]'``); without it these methods
are not registered and nothing here imports it. It is imported only inside ``fit``, so
listing methods stays fast.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import tempfile
from typing import Iterator, Optional

import numpy as np

from ..api import Method, MethodCard, RunContext, TrainData

INSTALL_HINT = "pip install -e '.[anomalib]'"

# anomalib image models registered as anomalib:<name>: those that pass the contract suite
# offline from random initialisation (--weights none) in anomalib 2.7. Not listed: stfpm
# (its teacher always downloads pretrained weights), dfm (its pooling fails on the small
# feature maps of test sizes). Another model is one more name here, or --set model=<name>.
ANOMALIB_MODELS = ("patchcore", "padim", "fastflow", "reverse_distillation")


# Lightning's info messages (accelerator found, tips, "max_epochs reached") would print once
# per run into the sweep's console; warnings and errors still come through.
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning")


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def anomalib_available() -> bool:
    """Whether the optional anomalib package is installed (without importing it)."""
    return importlib.util.find_spec("anomalib") is not None


class AnomalibImageModel(Method):
    """One anomalib image model trained on the normal images; score = its raw image score.

    ``model``: anomalib model name (``anomalib.models.get_model``); ``model_args``: JSON
    object of its constructor arguments (e.g. ``{"backbone": "resnet18"}``); ``max_epochs``:
    training epochs, None = the model's own default (one pass for the memory-bank models);
    ``batch_size``: training and scoring batch size."""

    version = "1"
    uses_labeled_anomalies = False
    input_size = 256  # anomalib's own default image size
    dataset_img_size = False  # the paper preset keeps it (no paper size for these models)
    card = MethodCard(
        paper="Akcay et al. Anomalib: A Deep Learning Library for Anomaly Detection (each "
              "model's own paper is cited in anomalib's documentation)",
        venue="ICIP 2022 (library)",
        upstream="https://github.com/open-edge-platform/anomalib (pip anomalib; the installed "
                 "version is part of the run id and of env.json)",
        upstream_license="Apache-2.0",
        notes="Adapter, not a reimplementation: anomalib's model and training Engine run "
              "unchanged on the run's normal training images (shots = 0), with anomalib's "
              "default pre-processing (ImageNet normalisation; its resize set to the size "
              "the harness delivers, input_size 256 as anomalib's default) and without "
              "its post-processor (score normalisation and thresholds need a validation "
              "set this protocol does not have), so the score is the model's raw image-level "
              "pred_score. --weights none sets pre_trained=False; imagenet lets anomalib "
              "load the timm/torchvision backbone weights (fails clearly offline); a "
              "weights folder is not supported for anomalib models. No validation set, no "
              "early stopping.",
    )
    quick_params = {"max_epochs": 1, "batch_size": 8, "model_args": '{"backbone": "resnet18"}'}

    @classmethod
    def test_params(cls) -> dict:
        return {"max_epochs": 1, "batch_size": 8}

    @classmethod
    def budget_params(cls, steps: int, batch_size: Optional[int] = None) -> dict:
        """One epoch (anomalib's Engine takes epochs, not steps: a pass over the normals)."""
        return {"max_epochs": 1, **({"batch_size": batch_size} if batch_size else {})}

    def __init__(self, model: str = "patchcore", model_args: str = "{}",
                 max_epochs: Optional[int] = None, batch_size: int = 32):
        self.model = model
        self.model_args = model_args
        self.max_epochs = max_epochs
        self.batch_size = batch_size

    @classmethod
    def full_version(cls) -> str:
        """The adapter's version plus the installed anomalib version: another anomalib
        release can change what a model computes, so it gets other run ids."""
        from importlib.metadata import version

        return f"{cls.version}+anomalib{version('anomalib')}"

    def backbones(self) -> list[str]:
        return []  # anomalib resolves its own (timm) backbones; see _weights_args

    def _args(self) -> dict:
        try:
            args = json.loads(self.model_args) if isinstance(self.model_args, str) \
                else dict(self.model_args)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"anomalib model_args={self.model_args!r} is not a JSON object, "
                             f"e.g. '{{\"backbone\": \"resnet18\"}}'") from exc
        if not isinstance(args, dict):
            raise ValueError(f"anomalib model_args={self.model_args!r} must be a JSON object")
        return args

    @staticmethod
    def _weights_args(weights: str) -> dict:
        if weights == "none":
            return {"pre_trained": False}
        if weights == "imagenet":
            return {"pre_trained": True}
        raise ValueError(f"--weights {weights!r}: anomalib models load their backbone "
                         f"weights themselves; use --weights imagenet (downloads through "
                         f"timm/torchvision, or their caches offline) or --weights none")

    def _build(self, weights: str, size: int):
        if not anomalib_available():
            raise RuntimeError(f"anomalib is not installed; run {INSTALL_HINT}")
        from anomalib.models import get_model

        args = {**self._args()}
        try:
            import inspect

            from anomalib.models import _get_model_class_by_name  # noqa: PLC2701
            model_cls = _get_model_class_by_name(self.model)
            accepted = inspect.signature(model_cls.__init__).parameters
        except Exception as exc:
            raise ValueError(f"anomalib has no image model {self.model!r} ({exc}); see "
                             f"anomalib.models.list_models()") from exc
        if "pre_trained" in accepted:
            args.update(self._weights_args(weights))
        elif weights not in ("none", "imagenet"):
            self._weights_args(weights)  # the same clear error for a folder
        if "pre_processor" in accepted and "pre_processor" not in args:
            # anomalib's resize and normalisation, at the size the harness delivers
            args["pre_processor"] = model_cls.configure_pre_processor(image_size=(size, size))
        for component in ("post_processor", "evaluator", "visualizer"):
            if component in accepted:
                args[component] = False
        try:
            return get_model(self.model, **args)
        except Exception as exc:
            if weights == "imagenet":
                raise RuntimeError(f"anomalib:{self.model} could not load pretrained backbone "
                                   f"weights ({exc}); offline, put them in the timm/torch hub "
                                   f"cache first, or pass --weights none") from exc
            raise

    def fit(self, train: TrainData, ctx: Optional[RunContext] = None) -> "AnomalibImageModel":
        import torch
        from torch.utils.data import DataLoader, Dataset

        from anomalib.data import ImageBatch, ImageItem
        from anomalib.engine import Engine

        from .common.augment import to_float
        from .common.training import resolve_device, seed_everything

        ctx = self._context(train, ctx)
        self.model_ = None  # forget an earlier fit before anything can fail
        if len(train.normal) == 0:
            raise ValueError("anomalib models need normal training images; got none")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"anomalib batch_size must be an integer ≥ 1, got "
                             f"{self.batch_size!r}")
        seed_everything(ctx.seed, deterministic=ctx.deterministic)
        model = self._build(ctx.weights, train.img_size)
        images = to_float(train.normal)

        class _Normals(Dataset):
            def __len__(self):
                return len(images)

            def __getitem__(self, i):
                return ImageItem(image=images[i], gt_label=torch.tensor(0),
                                 image_path=f"normal_{i}")

        gen = torch.Generator().manual_seed(int(ctx.seed))
        loader = DataLoader(_Normals(), batch_size=self.batch_size, shuffle=True,
                            generator=gen, collate_fn=ImageBatch.collate, num_workers=0)
        dev = resolve_device(ctx.device)
        engine_args = dict(logger=False, enable_progress_bar=False,
                           enable_model_summary=False,
                           accelerator="gpu" if dev.type == "cuda" else "cpu", devices=1)
        if self.max_epochs is not None:
            engine_args["max_epochs"] = int(self.max_epochs)
        with tempfile.TemporaryDirectory(prefix="bench-anomalib-") as root, _quiet_lightning():
            engine = Engine(default_root_dir=root, **engine_args)
            engine.fit(model=model, train_dataloaders=loader)
        model.to(dev).eval()
        self.model_ = model
        self.device_ = dev
        self.img_size_ = train.img_size
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        import torch

        from .common.augment import to_float

        self._check_fitted("model_")
        self._check_image_size(images, self.img_size_)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = to_float(images[i:i + self.batch_size], self.device_)
                pred = self.model_(x)
                out.append(pred.pred_score.reshape(-1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def state_dict(self) -> dict:
        self._check_fitted("model_")
        return {"model": self.model_.state_dict()}


if anomalib_available():  # register only what can run
    from ..registry import register_method

    for _name in ANOMALIB_MODELS:
        register_method(f"anomalib:{_name}", defaults={"model": _name})(AnomalibImageModel)
