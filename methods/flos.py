"""FLOS: DevNet trained with the binary focal loss (methods.md §3).

The DRA paper's FLOS baseline is "taken from [DevNet], which replaces the loss function of
DevNet with the focal loss": the DevNet image code run with ``--criterion focal``.
Provenance (paper, upstream code, licence): the class's ``card``, shown in docs/methods.md.

Everything except the loss is DevNet's pipeline (:mod:`bench.methods.devnet`): ResNet-18
layer4 → top-K head → 2-scale pyramid mean, 24/24 batches, Adam 2e-4 / 1e-5, StepLR(10, 0.1)
at epoch end, clip 1.0, 50 × 20 steps, ±180° rotation. Loss: binary focal loss on the network
output used as a logit, α = 1 (no class weighting), γ = 2. Score: the raw output.

The released pipeline's head takes |patch score| before the top-K mean, so the logit is ≥ 0
and every image gets sigmoid ≥ 0.5 (normals can at best reach p = 0.5); ranking still works.
``nonneg_logits=True`` (default) keeps that quirk for fidelity; ``False`` is the corrected
variant (no abs, logits of either sign) and is a deliberate deviation from the code.
Other differences from the released code: those of DevNet (seeding, seeded sampler,
on-device augmentation).
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..api import DEMO_SCHEDULE, MethodCard
from ..registry import register_method
from .common.heads import TopKHead
from .common.losses import binary_focal_loss
from .common.balanced import BalancedPyramidMethod
from .devnet import DevNet


@register_method("flos")
class FLOS(BalancedPyramidMethod):
    """DevNet's network and schedule trained with the binary focal loss (α = 1, γ = 2)."""

    version = "1"
    card = MethodCard(
        paper="Lin, Goyal, Girshick, He, Dollár. Focal Loss for Dense Object Detection "
              "(as the FLOS baseline of the DRA paper: DevNet with the focal loss)",
        venue="ICCV 2017",
        upstream="mala-lab/deviation-network-image with --criterion focal "
                 "(training code as of commit 75d9f6d)",
        upstream_license="not stated",
        notes="DevNet pipeline with binary focal loss alpha=1, gamma=2 on the head output. "
              "nonneg_logits=True (default) keeps the code's abs() so logits are >= 0 "
              "(sigmoid >= 0.5 for every image); nonneg_logits=False drops the abs "
              "(corrected variant, a deviation from the code). Same deliberate differences "
              "as devnet: fully seeded, deterministic sampler, on-device augmentation.",
    )
    quick_params = dict(DevNet.quick_params)
    demo_params = dict(DEMO_SCHEDULE)
    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 2, "steps_per_epoch": 2, "batch_size": 8, "n_scales": 2}

    def __init__(self, epochs: int = 50, steps_per_epoch: int = 20,
                 batch_size: int = 48, lr: float = 2e-4, weight_decay: float = 1e-5,
                 n_scales: int = 2, topk: float = 0.1, backbone: str = "resnet18",
                 grad_clip: Optional[float] = 1.0, rotate: bool = True,
                 nonneg_logits: bool = True, focal_alpha: float = 1.0,
                 focal_gamma: float = 2.0, test_batch_size: int = 48):
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
        self.nonneg_logits = nonneg_logits
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.test_batch_size = test_batch_size

    def check_params(self) -> None:
        super().check_params()
        if not 0 < self.topk <= 1:
            raise ValueError(f"FLOS topk={self.topk!r} must be a rate in (0, 1]")
        if self.focal_alpha <= 0 or self.focal_gamma < 0:
            raise ValueError(f"FLOS needs focal_alpha > 0 and focal_gamma ≥ 0, got "
                             f"{self.focal_alpha!r} and {self.focal_gamma!r}")

    def build_head(self, in_channels: int) -> nn.Module:
        return TopKHead(in_channels, self.topk, absolute=bool(self.nonneg_logits))

    def batch_loss(self, out, targets, generator):
        return binary_focal_loss(out, targets, alpha=self.focal_alpha, gamma=self.focal_gamma)
