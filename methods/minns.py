"""MINNS: a deep multiple-instance network on DevNet's pipeline (methods.md §7) [recon].

The DRA paper's MINNS baseline is "a deep multiple instance classification model,
implemented based on [DevNet]"; no code for it was released, so this is a reconstruction
(mi-Net on DevNet's image pipeline). Provenance (paper, upstream code, licence): the
class's ``card``, shown in docs/methods.md.

Reconstruction choices [recon], all configurable where it is cheap:
* bag = one image; instances = the h×w patch vectors of the ResNet-18 layer4 map;
* instance scorer = mi-Net's MLP as 1×1 convs 512→256→128→64 (ReLU after each), dropout
  0.5, 1×1 conv 64→1 + sigmoid → instance probability;
* bag probability = MIL pooling of the instance probabilities, ``pooling`` = ``max``
  (MINNs' default), ``mean``, or ``lse`` = log(mean(exp(s))) (what MINNs' code calls LSE —
  a log-*mean*-exp, not log-sum-exp);
* pyramid: bag probabilities averaged over the 2 scales, as DevNet averages its scores;
* loss: binary cross-entropy of the averaged bag probability against the image label
  (1 = labelled anomaly);
* batches (24 normal + 24 anomalies), Adam 2e-4 / L2 1e-5, StepLR(10, 0.1) at epoch end,
  clip 1.0, 50 × 20 steps and ±180° rotation are DevNet's, not MINNs' own SGD recipe;
* score = the bag probability.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..api import DEMO_SCHEDULE, MethodCard
from ..registry import register_method
from .common.losses import bce_prob_loss
from .common.balanced import BalancedPyramidMethod
from .devnet import DevNet

POOLINGS = ("max", "mean", "lse")


class MINetHead(nn.Module):
    """mi-Net on a feature map: per-patch MLP (1×1 convs C→256→128→64, ReLU, dropout) → 1 →
    sigmoid → MIL pooling over the h×w patches → bag probability (B,)."""

    def __init__(self, in_channels: int = 512, hidden: tuple[int, ...] = (256, 128, 64),
                 dropout: float = 0.5, pooling: str = "max"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"MIL pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        layers: list[nn.Module] = []
        c = in_channels
        for h in hidden:
            layers += [nn.Conv2d(c, h, kernel_size=1), nn.ReLU(inplace=True)]
            c = h
        layers += [nn.Dropout(dropout), nn.Conv2d(c, 1, kernel_size=1)]
        self.mlp = nn.Sequential(*layers)
        self.pooling = pooling

    def instance_probs(self, feat: torch.Tensor) -> torch.Tensor:
        """Instance (patch) probabilities B×h×w."""
        return torch.sigmoid(self.mlp(feat)[:, 0])

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        s = self.instance_probs(feat).flatten(1)
        if self.pooling == "max":
            return s.max(dim=1).values
        if self.pooling == "mean":
            return s.mean(dim=1)
        # log(mean(exp(s))) computed stably as logsumexp(s) − log(n)
        return torch.logsumexp(s, dim=1) - math.log(s.shape[1])


@register_method("minns")
class MINNS(BalancedPyramidMethod):
    """[recon] mi-Net instance scorer with MIL pooling on DevNet's ResNet-18 pipeline, BCE."""

    version = "1"
    card = MethodCard(
        paper="Wang, Yan, Tang, Bai, Liu. Revisiting Multiple Instance Neural Networks "
              "(as the MINNS baseline of the DRA paper, implemented on DevNet)",
        venue="Pattern Recognition 2018",
        upstream="none released for the image version; MIL network after yanyongluan/MINNs "
                 "(Keras)",
        upstream_license="not stated",
        notes="[recon] Bag = image, instances = ResNet-18 layer4 patches; mi-Net scorer as "
              "1x1 convs 512-256-128-64 (ReLU), dropout 0.5, 1x1 conv 64-1 + sigmoid; bag "
              "probability by MIL pooling (pooling=max default | mean | lse = "
              "log(mean(exp(s)))); averaged over the 2 pyramid scales; BCE on the image "
              "label; DevNet's batches (half normal, half anomalies), Adam 2e-4/1e-5, "
              "StepLR(10,0.1) at epoch end, clip 1.0, 50x20 steps, ±180° rotation (not "
              "MINNs' SGD recipe); score = bag probability. Seeded like devnet.",
    )
    quick_params = dict(DevNet.quick_params)
    demo_params = dict(DEMO_SCHEDULE)
    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 2, "steps_per_epoch": 2, "batch_size": 8, "n_scales": 2}

    def __init__(self, epochs: int = 50, steps_per_epoch: int = 20,
                 batch_size: int = 48, lr: float = 2e-4, weight_decay: float = 1e-5,
                 n_scales: int = 2, pooling: str = "max", dropout: float = 0.5,
                 backbone: str = "resnet18", grad_clip: Optional[float] = 1.0,
                 rotate: bool = True, test_batch_size: int = 48):
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_scales = n_scales
        self.pooling = pooling
        self.dropout = dropout
        self.backbone = backbone
        self.grad_clip = grad_clip
        self.rotate = rotate
        self.test_batch_size = test_batch_size

    def check_params(self) -> None:
        super().check_params()
        if self.pooling not in POOLINGS:
            raise ValueError(f"MINNS pooling={self.pooling!r} is not one of "
                             f"{', '.join(POOLINGS)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"MINNS dropout={self.dropout!r} must be in [0, 1)")

    def build_head(self, in_channels: int) -> nn.Module:
        return MINetHead(in_channels, dropout=self.dropout, pooling=self.pooling)

    def batch_loss(self, out, targets, generator):
        return bce_prob_loss(out, targets)
