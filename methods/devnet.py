"""DevNet, image version (methods.md §2), and the training pipeline it shares with FLOS and
MINNS.

Provenance: Pang, Shen & van den Hengel, "Deep Anomaly Detection with Deviation Networks",
KDD 2019; the image version used by the DRA paper is the DRA authors' code
``mala-lab/deviation-network-image`` (training code unchanged since commit 75d9f6d). This is
an implementation from the reference notes, no upstream code copied.

Pipeline (as the released code): ResNet-18 up to layer4 (whole trunk fine-tuned) → plain
top-K head (1×1 conv, |·|, mean of the top 10 % patches) → mean over a 2-scale
nearest-neighbour pyramid; batches of 24 normal + 24 labelled anomalies from endless
permutation streams; deviation loss (margin 5, fresh N(0,1) prior of 5000 per step);
Adam 2e-4, L2 1e-5, StepLR(10, 0.1) stepped at the end of each epoch, gradient norm clipped
to 1.0; 50 epochs × 20 steps; every training image randomly rotated by ±180° before ImageNet
normalisation; test images only normalised; score = network output.

Deliberate differences from the released code:
* seeded: ``fit`` seeds torch/numpy/python with the run seed *before* building the model (the
  released code seeds after building it, so its head initialisation is unseeded), and all
  sampling/augmentation draws come from explicit generators seeded from the run seed;
* the batch sampler is the same endless-permutation scheme, driven by that seeded RNG;
* augmentation runs batched on the method's device (uint8 → float → rotation → normalise)
  instead of PIL in loader workers; rotation is float nearest-neighbour via ``grid_sample``;
* the deviation-loss prior is drawn on the CPU from the seeded generator (the released loss
  hard-codes CUDA), so the method also runs on a CPU.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ..api import Method, MethodCard, TrainData
from ..registry import register_method
from .common.augment import train_transform
from .common.backbones import ResNetTrunk
from .common.heads import TopKHead, pyramid_mean
from .common.losses import bce_loss, binary_focal_loss, deviation_loss
from .common.samplers import BalancedBatchSampler
from .common.training import (adam, fit_loop, images_to_device, make_rngs,
                              predict_in_batches, resolve_device, seed_everything)

_BACKBONES = ("resnet18", "resnet50")


class PyramidScoreNet(nn.Module):
    """Backbone trunk → ``head`` (feature map → (B,) scores), averaged over an
    ``n_scales`` image pyramid (methods.md §0.3)."""

    def __init__(self, trunk: nn.Module, head: nn.Module, n_scales: int):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.n_scales = n_scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pyramid_mean(lambda xs: self.head(self.trunk(xs)), x, self.n_scales)


class BalancedPyramidMethod(Method):
    """Shared ``fit``/``score`` of DevNet, FLOS and MINNS: a network mapping a normalised
    image batch to one score per image, trained on balanced normal/anomaly batches
    (``batch_size // 2`` normal slots) with Adam + end-of-epoch StepLR(10, 0.1) + gradient
    clipping and ±180° rotation of every training image.

    Subclasses declare their parameters in ``__init__`` (including the common ones used
    here: epochs, steps_per_epoch, batch_size, lr, weight_decay, n_scales, backbone,
    grad_clip, rotate, test_batch_size) and implement ``_build_head`` and ``_loss``."""

    uses_labeled_anomalies = True
    uses_common_blocks = True

    # -- hooks -------------------------------------------------------------------------------
    def _build_head(self, in_channels: int) -> nn.Module:
        raise NotImplementedError

    def _loss(self, out: torch.Tensor, targets: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _extra_checks(self) -> None:
        """Validate subclass-specific parameters (raise ValueError naming the value)."""

    # -- shared pipeline -----------------------------------------------------------------------
    def _check_params(self) -> None:
        for name in ("epochs", "steps_per_epoch", "n_scales", "test_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be an integer ≥ 1, "
                                 f"got {v!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 2:
            raise ValueError(f"{type(self).__name__}: batch_size must be an integer ≥ 2 (half "
                             f"normal, half anomalies), got {self.batch_size!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: need lr > 0 and weight_decay ≥ 0, got "
                             f"lr={self.lr!r}, weight_decay={self.weight_decay!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"{type(self).__name__}: grad_clip must be > 0 or None, got "
                             f"{self.grad_clip!r}")
        if self.backbone not in _BACKBONES:
            raise ValueError(f"{type(self).__name__}: backbone={self.backbone!r} is not one of "
                             f"{', '.join(_BACKBONES)}")
        self._extra_checks()

    def _build_model(self, weights: str) -> nn.Module:
        trunk = ResNetTrunk(self.backbone, weights)
        return PyramidScoreNet(trunk, self._build_head(trunk.out_channels), self.n_scales)

    def fit(self, train: TrainData) -> "BalancedPyramidMethod":
        self._check_params()
        if len(train.anomalies) == 0:
            raise ValueError(f"{type(self).__name__} trains on labelled anomalies but the "
                             f"training data has none (shots = 0); run it with shots ≥ 1")
        if len(train.normal) == 0:
            raise ValueError(f"{type(self).__name__} needs normal training images; got none")
        size = train.normal.shape[1]
        # Seed the global RNGs before building the model so the new layers' init repeats.
        seed_everything(train.seed)
        rng, gen = make_rngs(train.seed)
        device = resolve_device(train.device)
        model = self._build_model(train.weights).to(device)

        normal = images_to_device(train.normal, device)
        anomalies = images_to_device(train.anomalies, device)
        normal_slots = self.batch_size // 2
        sampler = BalancedBatchSampler(len(normal), len(anomalies), self.batch_size,
                                       normal_slots, rng)
        targets = torch.cat([torch.zeros(normal_slots),
                             torch.ones(self.batch_size - normal_slots)]).to(device)

        def step_loss() -> torch.Tensor:
            ni, ai = sampler.next()
            batch = torch.cat([normal[torch.from_numpy(ni).to(device)],
                               anomalies[torch.from_numpy(ai).to(device)]])
            x = train_transform(batch, gen, rotate_images=self.rotate)
            return self._loss(model(x), targets, gen)

        optimizer = adam(model.parameters(), self.lr, self.weight_decay)
        self.loss_history_ = fit_loop(step_loss, optimizer, modules=model, epochs=self.epochs,
                                      steps_per_epoch=self.steps_per_epoch,
                                      grad_clip=self.grad_clip, lr_placement="end",
                                      progress=train.progress)
        model.eval()
        self.model_ = model
        self.device_ = device
        self.img_size_ = size
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted("model_")
        self._check_image_size(images, self.img_size_)
        return predict_in_batches(self.model_, images, self.test_batch_size, self.device_)

    def state_dict(self) -> dict:
        self._check_fitted("model_")
        return {"model": self.model_.state_dict()}


@register_method("devnet")
class DevNet(BalancedPyramidMethod):
    """DevNet (image version): top-K MIL head on ResNet-18 trained with the deviation loss."""

    version = "1"
    card = MethodCard(
        paper="Pang, Shen, van den Hengel. Deep Anomaly Detection with Deviation Networks "
              "(image version by the DRA authors)",
        venue="KDD 2019",
        upstream="mala-lab/deviation-network-image (training code as of commit 75d9f6d)",
        upstream_license="not stated",
        notes="Faithful to the released code (top-K |patch| head, 2-scale pyramid, 24/24 "
              "batches, deviation loss a=5, Adam 2e-4/1e-5, StepLR(10,0.1) at epoch end, "
              "clip 1.0, 50x20 steps, ±180° rotation). Differences: fully seeded (model init "
              "included), deterministic seeded sampler, batched on-device augmentation "
              "(float nearest-neighbour rotation), loss prior drawn on CPU so it runs "
              "without CUDA. criterion=bce|focal are the code's other (unused) options.",
    )
    quick_params = {"epochs": 2, "steps_per_epoch": 5, "batch_size": 8, "n_scales": 2}

    def __init__(self, img_size: int = 448, epochs: int = 50, steps_per_epoch: int = 20,
                 batch_size: int = 48, lr: float = 2e-4, weight_decay: float = 1e-5,
                 n_scales: int = 2, topk: float = 0.1, backbone: str = "resnet18",
                 grad_clip: Optional[float] = 1.0, rotate: bool = True,
                 criterion: str = "deviation", test_batch_size: int = 48):
        # img_size: resolution the released code trains at; the harness resizes the data,
        # and fit() works at whatever size TrainData carries.
        self.img_size = img_size
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_scales = n_scales
        self.topk = topk
        self.backbone = backbone
        self.grad_clip = grad_clip
        self.rotate = rotate
        self.criterion = criterion
        self.test_batch_size = test_batch_size

    def _extra_checks(self) -> None:
        if self.criterion not in ("deviation", "bce", "focal"):
            raise ValueError(f"DevNet criterion={self.criterion!r} is not one of deviation, "
                             f"bce, focal")
        if not 0 < self.topk <= 1:
            raise ValueError(f"DevNet topk={self.topk!r} must be a rate in (0, 1]")

    def _build_head(self, in_channels: int) -> nn.Module:
        return TopKHead(in_channels, self.topk, absolute=True)

    def _loss(self, out, targets, generator):
        if self.criterion == "deviation":
            return deviation_loss(out, targets, margin=5.0, generator=generator)
        if self.criterion == "bce":
            return bce_loss(out, targets)
        return binary_focal_loss(out, targets, alpha=1.0, gamma=2.0)
