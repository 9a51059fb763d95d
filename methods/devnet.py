"""DevNet, image version (methods.md §2), on the pipeline it shares with FLOS and MINNS
(``methods/common/balanced.py``).

Provenance (paper, upstream code, licence): the class's ``card``, shown in docs/methods.md.

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

from torch import nn

from ..api import DEMO_SCHEDULE, MethodCard
from ..registry import register_method
from .common.balanced import BalancedPyramidMethod
from .common.heads import TopKHead
from .common.losses import bce_loss, binary_focal_loss, deviation_loss


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
    demo_params = dict(DEMO_SCHEDULE)
    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 2, "steps_per_epoch": 2, "batch_size": 8, "n_scales": 2}

    def __init__(self, epochs: int = 50, steps_per_epoch: int = 20,
                 batch_size: int = 48, lr: float = 2e-4, weight_decay: float = 1e-5,
                 n_scales: int = 2, topk: float = 0.1, backbone: str = "resnet18",
                 grad_clip: Optional[float] = 1.0, rotate: bool = True,
                 criterion: str = "deviation", test_batch_size: int = 48):
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

    def check_params(self) -> None:
        super().check_params()
        if self.criterion not in ("deviation", "bce", "focal"):
            raise ValueError(f"DevNet criterion={self.criterion!r} is not one of deviation, "
                             f"bce, focal")
        if not 0 < self.topk <= 1:
            raise ValueError(f"DevNet topk={self.topk!r} must be a rate in (0, 1]")

    def build_head(self, in_channels: int) -> nn.Module:
        return TopKHead(in_channels, self.topk, absolute=True)

    def batch_loss(self, out, targets, generator):
        if self.criterion == "deviation":
            return deviation_loss(out, targets, margin=5.0, generator=generator)
        if self.criterion == "bce":
            return bce_loss(out, targets)
        return binary_focal_loss(out, targets, alpha=1.0, gamma=2.0)
