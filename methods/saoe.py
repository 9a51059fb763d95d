"""SAOE — Synthetic Anomalies + Outlier Exposure, the DRA paper's baseline (methods.md §4).

Provenance: no SAOE code was released (not in the DRA repository, its forks, or the lab's
later code). The DRA paper describes it in one line (App. B.2, Sec. 4.1, Fig. 3): a
three-class (normal / seen anomaly / pseudo anomaly) classifier on DRA's "plain feature
learning", plus the outlier-exposure (OE) loss of Hendrycks et al. (ICLR 2019) with external
data. Everything below is therefore [recon], from the reference notes, and configurable:

* [recon] backbone and pyramid as DRA: ResNet-18 up to ``layer4`` (fine-tuned), 2-scale
  nearest-neighbour pyramid, logits averaged over the scales;
* [recon] head: a 1×1 conv 512→3 (with bias) gives per-patch logits for the three classes;
  ``aggregate="topk"`` takes per class the mean of the top 10 % patch logits (DRA's top-K MIL
  rule, K = max(floor(0.1·h·w), 1)), ``aggregate="gap"`` their mean over all patches (= global
  average pooling + linear 512→3). Unlike DRA's plain head no absolute value is taken: these
  are logits of a softmax, where a sign flip would change the class;
* [recon] batches as the DRA code's dataset yields them: ``2·B//3`` normal slots from an
  endless permutation stream, each independently (p = 0.5) replaced by a CutMix pseudo
  anomaly (label 2) of a *fresh, uniformly drawn* normal image, and ``B − 2·B//3`` slots of
  labelled anomalies (label 1); every training image rotated by ±180° before ImageNet
  normalisation;
* [recon] loss: 3-class cross-entropy with a single softmax (``double_softmax=True`` applies
  softmax before the cross-entropy, the DRA code's CE path, in case SAOE was built on it);
  plus, when the run has external outliers (``TrainData.outliers``), λ·mean over an outlier
  batch of [logsumexp(z) − mean(z)] (cross-entropy from the prediction to the uniform
  distribution), λ = ``oe_weight`` = 0.5 and the outlier batch ``oe_batch_ratio`` = 2× the
  in-distribution batch (Hendrycks' reference values). Outliers get the ordinary training
  transform (rotation, normalisation) and share the forward pass — and so the BatchNorm
  statistics — with the in-distribution batch, as in Hendrycks' code. The OE term always
  acts on the logits, also with ``double_softmax``;
* without external outliers SAOE trains on the generated (CutMix) pseudo anomalies only;
  ``used_outliers_`` records which case a fit was, for the run record;
* [recon] optimisation as the DRA code: Adam lr 2e-4, L2 weight decay 1e-5, StepLR(10, 0.1)
  stepped at the start of every epoch (lr ×0.1 from 1-based epoch 10), global gradient norm
  clipped to 1.0, 30 epochs × 20 steps, batch 48;
* [recon] score = 1 − p(normal) = p(seen) + p(pseudo) (``score_fn="p_anomaly"``);
  ``"max_anomaly"`` = max(p(seen), p(pseudo)); ``"msp"`` = −max softmax probability (OE's
  own detector score). All from the scale-averaged logits, model in eval mode.

Also deliberate: all randomness comes from the run seed (the DRA code is unseeded), and
augmentation is batched on the device instead of PIL in loader workers (methods.md §0.2).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.api import DEMO_SCHEDULE, MethodCard, RunContext, TrainData
from bench.registry import register_method

from .common.augment import cutmix, normalize, random_rotate, to_float
from .common.backbones import ResNetTrunk
from .common.heads import image_pyramid, topk_count
from .common.samplers import BalancedBatchSampler, EndlessPermutation
from .common.torch_method import FitState, TorchMethod

# Class indices, as the DRA code's labels (methods.md §1.2).
NORMAL, SEEN, PSEUDO = 0, 1, 2
SCORE_FNS = ("p_anomaly", "max_anomaly", "msp")
AGGREGATES = ("topk", "gap")


class ThreeClassMILNet(nn.Module):
    """ResNet trunk → 1×1 conv to per-patch logits of the 3 classes → per-class top-K mean
    (or mean) → image logits, averaged over an ``n_scales`` pyramid. Input: normalised
    N×3×H×W; output N×3 logits."""

    def __init__(self, trunk: nn.Module, aggregate: str, topk_rate: float, n_scales: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Conv2d(trunk.out_channels, 3, kernel_size=1, bias=True)
        self.aggregate = aggregate
        self.topk_rate = topk_rate
        self.n_scales = n_scales

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.head(self.trunk(x))  # N×3×h×w
        h, w = patches.shape[-2:]
        flat = patches.flatten(2)
        if self.aggregate == "gap":
            return flat.mean(dim=2)
        k = topk_count(h, w, self.topk_rate)
        return torch.topk(flat, k, dim=2).values.mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._logits(xs) for xs in image_pyramid(x, self.n_scales)]).mean(0)


def oe_uniform_loss(logits: torch.Tensor) -> torch.Tensor:
    """Outlier-exposure term of Hendrycks et al.: mean over the outliers of the cross-entropy
    from the softmax prediction to the uniform distribution, logsumexp(z) − mean(z)."""
    return (torch.logsumexp(logits, dim=1) - logits.mean(dim=1)).mean()


def anomaly_score(logits: torch.Tensor, score_fn: str) -> torch.Tensor:
    """Image anomaly score from N×3 logits (higher = more anomalous); see module docstring."""
    p = F.softmax(logits, dim=1)
    if score_fn == "p_anomaly":
        return 1.0 - p[:, NORMAL]
    if score_fn == "max_anomaly":
        return torch.maximum(p[:, SEEN], p[:, PSEUDO])
    if score_fn == "msp":
        return -p.max(dim=1).values
    raise ValueError(f"SAOE score_fn={score_fn!r} is not one of {', '.join(SCORE_FNS)}")


@register_method("saoe")
class SAOE(TorchMethod):
    """Three-class (normal / seen / CutMix pseudo anomaly) top-K MIL classifier on ResNet-18
    with outlier exposure on external images when the run provides them."""

    version = "1"
    min_batch_size = 3  # 2/3 normal slots, 1/3 labelled anomalies
    # App. B.2: outlier exposure with MVTec AD (industrial) or LAG (medical) as external data.
    outlier_policy = "exposure"
    uses_labeled_anomalies = True
    uses_outliers = True
    card = MethodCard(
        paper="Synthetic anomalies + outlier exposure baseline of Ding, Pang, Shen: Catching "
              "Both Gray and Black Swans: Open-set Supervised Anomaly Detection (OE: "
              "Hendrycks, Mazeika, Dietterich, Deep Anomaly Detection with Outlier Exposure, "
              "ICLR 2019)",
        venue="CVPR 2022",
        upstream="none released",
        upstream_license="",
        notes="[recon] entirely: DRA backbone/pyramid/batches, 1x1 conv 512->3 per-patch "
              "logits with per-class top-K mean, 3-class CE (single softmax; double_softmax "
              "option = DRA's CE code path), OE term 0.5*mean(logsumexp-mean) on an outlier "
              "batch 2x the batch when outliers are given (else CutMix pseudo anomalies only; "
              "see used_outliers_), DRA code schedule, score 1 - p(normal).")
    # Test-sized budget for the harness' quick preset (64 px, 2 CPU cores).
    quick_params = {"epochs": 3, "steps_per_epoch": 5, "batch_size": 12}
    demo_params = dict(DEMO_SCHEDULE)
    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 2, "steps_per_epoch": 2, "batch_size": 12}

    def __init__(self, epochs: int = 30, steps_per_epoch: int = 20,
                 batch_size: int = 48, lr: float = 2e-4, weight_decay: float = 1e-5,
                 lr_step_size: int = 10, lr_gamma: float = 0.1,
                 grad_clip: Optional[float] = 1.0, n_scales: int = 2,
                 aggregate: str = "topk", topk_rate: float = 0.1, pseudo_prob: float = 0.5,
                 double_softmax: bool = False, oe_weight: float = 0.5,
                 oe_batch_ratio: float = 2.0, score_fn: str = "p_anomaly",
                 rotate: bool = True, backbone: str = "resnet18", test_batch_size: int = 48):
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step_size = lr_step_size
        self.lr_gamma = lr_gamma
        self.grad_clip = grad_clip
        self.n_scales = n_scales
        self.aggregate = aggregate
        self.topk_rate = topk_rate
        self.pseudo_prob = pseudo_prob
        self.double_softmax = double_softmax
        self.oe_weight = oe_weight
        self.oe_batch_ratio = oe_batch_ratio
        self.score_fn = score_fn
        self.rotate = rotate
        self.backbone = backbone
        self.test_batch_size = test_batch_size

    def check_params(self) -> None:
        super().check_params()
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"SAOE aggregate={self.aggregate!r} is not one of "
                             f"{', '.join(AGGREGATES)}")
        if self.score_fn not in SCORE_FNS:
            raise ValueError(f"SAOE score_fn={self.score_fn!r} is not one of "
                             f"{', '.join(SCORE_FNS)}")
        if not 0.0 <= self.pseudo_prob <= 1.0:
            raise ValueError(f"SAOE pseudo_prob={self.pseudo_prob!r} must be in [0, 1]")
        if self.oe_weight < 0 or self.oe_batch_ratio <= 0:
            raise ValueError(f"SAOE needs oe_weight ≥ 0 and oe_batch_ratio > 0, got "
                             f"{self.oe_weight!r} and {self.oe_batch_ratio!r}")

    def uses_outlier_images(self, train: TrainData) -> bool:
        return super().uses_outlier_images(train) and self.oe_weight > 0

    def lr_step_schedule(self) -> tuple[int, float]:
        return self.lr_step_size, self.lr_gamma

    def build_model(self, train: TrainData, ctx: RunContext) -> nn.Module:
        return ThreeClassMILNet(ResNetTrunk(self.backbone, ctx.weights), self.aggregate,
                                self.topk_rate, self.n_scales)

    def prepare(self, state: FitState) -> None:
        if state.outliers is not None:  # drawn first: the stream order of the released runs
            state.extra["outlier_stream"] = EndlessPermutation(len(state.outliers), state.rng)
        normal_slots = 2 * self.batch_size // 3  # the DRA sampler's split (32 of 48)
        state.extra["sampler"] = BalancedBatchSampler(len(state.normal), len(state.anomalies),
                                                      self.batch_size, normal_slots, state.rng)

    def _augment(self, x01: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return normalize(random_rotate(x01, gen) if self.rotate else x01)

    def training_step(self, state: FitState) -> torch.Tensor:
        device, gen, rng, normal = state.device, state.gen, state.rng, state.normal
        ni, ai = state.extra["sampler"].next()
        x = to_float(state.batch(ni, ai))
        labels = torch.full((len(ni) + len(ai),), SEEN, dtype=torch.long)
        labels[:len(ni)] = NORMAL
        # Each normal slot independently becomes a pseudo anomaly made from a fresh,
        # uniformly drawn normal image (not the sampled one), as the DRA dataset does.
        flip = torch.rand(len(ni), generator=gen) < self.pseudo_prob
        n_pseudo = int(flip.sum())
        if n_pseudo:
            src = torch.from_numpy(rng.randint(0, len(normal), size=n_pseudo)).to(device)
            pos = torch.nonzero(flip).flatten()
            x[pos.to(device)] = cutmix(to_float(normal[src]), gen)
            labels[pos] = PSEUDO
        labels = labels.to(device)
        x = self._augment(x, gen)
        use_oe = state.outliers is not None
        if use_oe:
            n_out = max(1, int(round(self.oe_batch_ratio * self.batch_size)))
            oi = torch.from_numpy(state.extra["outlier_stream"].take(n_out)).to(device)
            x = torch.cat([x, self._augment(to_float(state.outliers[oi]), gen)])
        logits = state.model(x)
        z_in = logits[:len(labels)]
        loss = F.cross_entropy(F.softmax(z_in, dim=1) if self.double_softmax else z_in, labels)
        if use_oe:
            loss = loss + self.oe_weight * oe_uniform_loss(logits[len(labels):])
        return loss

    def score_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return anomaly_score(model(x), self.score_fn)
