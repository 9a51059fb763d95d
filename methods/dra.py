"""DRA — disentangled representations of abnormalities (Ding, Pang, Shen, CVPR 2022), with
the paper's head ablations (DRA1A, DRA2A, DRA3Ar, DRA3An), loss study (Fig. 5), reference
size study (Fig. 3 right) and pseudo-anomaly sources (Table 4).

Provenance. Implemented from the method notes (shared reference ``methods.md`` §0, §1, §9)
and the paper; the upstream code (``Choubo/DRA``, commit of 2022-04-10, AGPL-3.0) was not
copied. The default ``profile="code"`` reproduces the released training script:

* ResNet-18 trunk up to ``layer4`` (512×h×w), four heads on it: seen g_s and pseudo g_p
  (plain top-K MIL heads), latent residual g_r (R = mean reference feature map − M_x → 3×3
  conv + BN + ReLU → top-K head) and holistic normality g_n (GAP → FC 512→256 → ReLU →
  FC 256→1 → |·|); two-level nearest-neighbour image pyramid, per-head mean over scales.
* Batch of 48: 32 normal slots, each independently turned (p = ½) into a pseudo anomaly
  made by CutMix of a fresh uniformly random normal image (or an external outlier image
  without CutMix), plus 16 seen anomalies; 5 reference images drawn per step from the
  normals with the same ½ pseudo mixing and rotation, prepended to the batch so BatchNorm
  and the gradients see all 53; every training image rotated by U(−180°, 180°).
* Deviation loss (absolute/hinge form, margin 5) per head on the head's sample subset
  (methods.md §1.7), plain sum; Adam 2e-4, L2 weight decay 1e-5, StepLR(10, 0.1) stepped
  at the start of each epoch (effective lr 2e-4 in epochs 1–9, 2e-5 in 10–19, 2e-6 in
  20–29, 2e-7 in 30), gradient norm clipped to 1.0, 30 epochs × 20 steps.
* Inference in eval mode with 5 freshly drawn (mixed, rotated) references per test batch
  of 48; score = g_s + g_p + g_r − g_n.

``profile="paper"`` switches to what the paper text says where it differs from the code
(methods.md §1.11): lr 1e-3, weight decay 1e-2, squared deviation loss (eq. 11), a fixed set
of ``n_ref`` reference images chosen once per run and used for training and testing, no 3×3
conv block in the residual head, and plain top-K / FC scores without the |·| (eq. 3 and the
normality head of Sec. 3.3 have none). Its reference set is ``ref_mode="fixed_mixed"``: the
main text (Sec. 3.2) fixes N_r randomly drawn normal images "for all training and testing
samples", and App. B.1 adds that the final implementation mixes generated pseudo anomalies
into the reference set; reading both, the set is drawn once and each slot becomes a pseudo
anomaly with probability ``pseudo_prob`` once (unrotated, like the normal slots).
``fixed_normal`` is the main text alone. Where the paper is silent (rotation, step decay,
gradient clipping, batch composition ``normal_fraction`` = 2/3, ``pseudo_prob`` = ½, pyramid
interpolation) it keeps the code's behaviour. Every one of these differences is its own parameter (``None`` = "from the
profile"), so they can be flipped one at a time; ``effective_params_`` records the resolved
values after ``fit``.

Deliberate differences from the released code, all in the harness's favour of
reproducibility or generality:

1. Seeding: everything is seeded from ``TrainData.seed`` (global RNGs at fit start, one numpy
   RandomState for index draws, one CPU torch.Generator for augmentation, the deviation
   prior and the reference draws). Scoring uses its own generator seeded from the run seed,
   so calling ``score`` twice gives identical scores. The released code seeds nothing but
   the anomaly shuffle. On CPU the same seed reproduces the same scores exactly.
2. Test-time references (code profile) are drawn from a fresh score-time stream rather than
   by continuing the training reference iterator; they are drawn the same way (normals,
   ½ pseudo mixing, rotation).
3. Augmentation runs batched on the device (``common.augment``) instead of PIL workers:
   rotation and jitter work on float values (see that module's docstring).
4. The head ablations work: ``heads`` selects any non-empty subset of
   {seen, pseudo, residual, normality}; the released model always builds and returns all
   four (``total_heads < 4`` crashes). Only the model is reduced: by default the batch is
   assembled as for full DRA (the released data pipeline makes pseudo anomalies whatever the
   heads; in DRA1A no head learns from them, they only pass through the backbone and its
   BatchNorm), and references are drawn only when the residual head is active.
   ``pseudo_prob=0`` drops the pseudo slots (allowed only without the pseudo head), so DRA1A
   then trains on normals and seen anomalies alone.
5. A head whose sample subset is empty in a batch (possible only with tiny batches)
   contributes no loss for that step instead of a NaN.
6. Loss choice (paper Fig. 5): ``bce`` and ``focal`` apply binary cross-entropy with logits /
   binary focal loss (α = 1, γ = 2) to the raw head scores with the same per-head subsets and
   targets, as the released ``--criterion`` options do.
7. Pseudo-anomaly sources (paper Table 4): ``cutpaste_scar`` and ``cutpaste_mix`` are not in
   the release; they replace CutMix in the pseudo slots and in the reference mixing (see
   ``common.cutpaste``). ``external`` uses ``TrainData.outliers`` (``--outliers``) without
   CutMix, as the release does with ``--outlier_root``; the default ``pseudo=None`` picks
   ``external`` when the run has outliers and ``cutmix`` otherwise — the released behaviour.
8. ``ref_mode="fixed_mixed"`` (paper) and ``"fixed_normal"`` prepend the same unaugmented
   reference images at every training step (so BatchNorm still sees them, as in the code)
   and, at test time, compute their mean feature maps once in eval mode.

The run's ``img_size`` (``Method.input_size`` = 448, the released default, unless a preset
or ``--set`` says otherwise) is the resolution the harness decodes and resizes the data to
(square, bilinear, as the code's PIL ``Resize``); ``fit`` works at whatever size
``TrainData`` carries and ``score`` refuses images of another size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.api import DEMO_SCHEDULE, MethodCard, RunContext, TrainData
from bench.registry import register_method

from .common.augment import normalize, random_rotate, to_float
from .common.backbones import ResNetTrunk
from .common.cutpaste import SYNTHETIC_KINDS, synthesize
from .common.heads import TopKHead, image_pyramid
from .common.losses import bce_loss, binary_focal_loss, deviation_loss
from .common.samplers import BalancedBatchSampler, EndlessPermutation
from .common.training import make_rngs, step_lr_factor
from .common.torch_method import FitSchedule, FitState, TorchMethod, check_budget

HEAD_NAMES = ("seen", "pseudo", "residual", "normality")
ABNORMALITY_HEADS = ("seen", "pseudo", "residual")   # summed in the score; normality subtracted
LOSSES = ("deviation", "bce", "focal")
PSEUDO_SOURCES = SYNTHETIC_KINDS + ("external",)
REF_MODES = ("per_step_random_mixed", "fixed_normal", "fixed_mixed")
LR_SCHEDULES = ("step_start", "step_end", "none")

LABEL_NORMAL, LABEL_SEEN, LABEL_PSEUDO = 0, 1, 2     # methods.md §1.2
DEVIATION_MARGIN = 5.0
PSEUDO_PROB = 0.5          # released code: chance a normal (or reference) slot becomes pseudo
NORMAL_FRACTION = 2 / 3    # released code: 2·B // 3 normal slots per batch (32 of 48)
LR_STEP_SIZE, LR_GAMMA = 10, 0.1

# The settings where the released code and the paper text differ (methods.md §1.8, §1.11).
# Where the paper is silent the paper profile keeps the code's value.
PROFILES: dict[str, dict[str, Any]] = {
    "code": dict(lr=2e-4, weight_decay=1e-5, lr_schedule="step_start", grad_clip=1.0,
                 squared_loss=False, ref_mode="per_step_random_mixed", residual_block=True,
                 rotate=True, abs_scores=True),
    "paper": dict(lr=1e-3, weight_decay=1e-2, lr_schedule="step_start", grad_clip=1.0,
                  squared_loss=True, ref_mode="fixed_mixed", residual_block=False,
                  rotate=True, abs_scores=False),
}


# -- networks ----------------------------------------------------------------------------------
class HolisticHead(nn.Module):
    """Normality head g_n: global average pool → FC C→256 → ReLU → FC 256→1 (→ |·| when
    ``absolute``, the released code). Input B×C×h×w, output (B,). The code's dropout has
    p = 0 and is omitted."""

    def __init__(self, in_channels: int = 512, hidden: int = 256, absolute: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.absolute = absolute

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        z = self.fc2(F.relu(self.fc1(feat.mean(dim=(2, 3)))))[:, 0]
        return z.abs() if self.absolute else z


class ResidualHead(nn.Module):
    """Latent residual (composite) head g_r: R = reference mean − M_x, optionally through
    3×3 conv C→C (padding 1) + BatchNorm + ReLU (released code; not in the paper), then a
    plain top-K head. ``forward(feat, ref_mean)`` with ref_mean 1×C×h×w → (B,)."""

    def __init__(self, in_channels: int = 512, topk_rate: float = 0.1, block: bool = True,
                 absolute: bool = True):
        super().__init__()
        self.block = (nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1),
                                    nn.BatchNorm2d(in_channels), nn.ReLU())
                      if block else nn.Identity())
        self.score = TopKHead(in_channels, topk_rate, absolute=absolute)

    def forward(self, feat: torch.Tensor, ref_mean: torch.Tensor) -> torch.Tensor:
        return self.score(self.block(ref_mean - feat))


class DRANet(nn.Module):
    """Backbone + the active heads + pyramid. ``forward(x, n_ref)`` takes normalised images
    whose first ``n_ref`` rows are the reference images (n_ref = 0 when the residual head is
    inactive or ``ref_means`` is given) and returns {head: (B − n_ref,)} scale-averaged
    scores for the remaining rows."""

    def __init__(self, heads: tuple[str, ...] = HEAD_NAMES, backbone: str = "resnet18",
                 weights: str = "none", topk_rate: float = 0.1, n_scales: int = 2,
                 residual_block: bool = True, abs_scores: bool = True):
        super().__init__()
        unknown = set(heads) - set(HEAD_NAMES)
        if unknown or not heads:
            raise ValueError(f"DRA heads must be a non-empty subset of {HEAD_NAMES}, got {heads}")
        self.head_names = tuple(h for h in HEAD_NAMES if h in heads)
        self.n_scales = n_scales
        self.trunk = ResNetTrunk(backbone, weights)
        c = self.trunk.out_channels
        self.heads = nn.ModuleDict()
        if "seen" in heads:
            self.heads["seen"] = TopKHead(c, topk_rate, absolute=abs_scores)
        if "pseudo" in heads:
            self.heads["pseudo"] = TopKHead(c, topk_rate, absolute=abs_scores)
        if "residual" in heads:
            self.heads["residual"] = ResidualHead(c, topk_rate, residual_block, abs_scores)
        if "normality" in heads:
            self.heads["normality"] = HolisticHead(c, 256, abs_scores)

    @property
    def needs_reference(self) -> bool:
        return "residual" in self.heads

    def reference_means(self, x_ref: torch.Tensor) -> list[torch.Tensor]:
        """Mean feature map of the reference images at each pyramid scale (1×C×h×w each)."""
        return [self.trunk(xs).mean(dim=0, keepdim=True)
                for xs in image_pyramid(x_ref, self.n_scales)]

    def forward(self, x: torch.Tensor, n_ref: int = 0,
                ref_means: Optional[list[torch.Tensor]] = None) -> dict[str, torch.Tensor]:
        if self.needs_reference and not n_ref and ref_means is None:
            raise ValueError("the residual head needs reference images (n_ref > 0) or "
                             "precomputed ref_means")
        per_scale: dict[str, list[torch.Tensor]] = {h: [] for h in self.head_names}
        for s, xs in enumerate(image_pyramid(x, self.n_scales)):
            feat = self.trunk(xs)
            ref_mean = None
            if n_ref:
                ref_mean = feat[:n_ref].mean(dim=0, keepdim=True)
                feat = feat[n_ref:]
            elif ref_means is not None:
                ref_mean = ref_means[s]
            for name, head in self.heads.items():
                per_scale[name].append(head(feat, ref_mean) if name == "residual"
                                       else head(feat))
        return {h: torch.stack(v).mean(dim=0) for h, v in per_scale.items()}


def combine_scores(scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final anomaly score (methods.md §1.9): sum of the active abnormality heads minus the
    normality head if active."""
    total = None
    for name, s in scores.items():
        term = s if name in ABNORMALITY_HEADS else -s
        total = term if total is None else total + term
    return total


# -- loss --------------------------------------------------------------------------------------
def head_subset(name: str, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample mask, 0/1 targets of the masked samples) of head ``name`` (methods.md §1.7)."""
    if name == "seen":
        mask = labels != LABEL_PSEUDO
        return mask, (labels[mask] == LABEL_SEEN)
    if name == "pseudo":
        mask = labels != LABEL_SEEN
        return mask, (labels[mask] == LABEL_PSEUDO)
    if name == "residual":
        return torch.ones_like(labels, dtype=torch.bool), labels != LABEL_NORMAL
    if name == "normality":  # trained as a normality scorer: normals are its positives
        return torch.ones_like(labels, dtype=torch.bool), labels == LABEL_NORMAL
    raise ValueError(f"unknown DRA head {name!r}")


def dra_loss(scores: dict[str, torch.Tensor], labels: torch.Tensor, *, loss: str = "deviation",
             squared: bool = False, generator: Optional[torch.Generator] = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Plain sum over the active heads of each head's loss on its sample subset.

    ``labels``: (B,) 0 normal, 1 seen, 2 pseudo. Returns (total, {head: loss})."""
    per_head: dict[str, torch.Tensor] = {}
    for name, s in scores.items():
        mask, target = head_subset(name, labels.to(s.device))
        if not bool(mask.any()):
            continue  # only with tiny batches; an empty subset has nothing to learn from
        sub, y = s[mask], target.to(s.dtype)
        if loss == "deviation":
            per_head[name] = deviation_loss(sub, y, margin=DEVIATION_MARGIN, squared=squared,
                                            generator=generator)
        elif loss == "bce":
            per_head[name] = bce_loss(sub, y)
        elif loss == "focal":
            per_head[name] = binary_focal_loss(sub, y)
        else:
            raise ValueError(f"unknown DRA loss {loss!r}; choose one of {LOSSES}")
    if not per_head:
        raise ValueError("no DRA head had any sample in this batch")
    return torch.stack(list(per_head.values())).sum(), per_head


def lr_step_settings(schedule: str) -> tuple[float, str]:
    """(γ, placement) of the StepLR(10, γ) that DRA's ``lr_schedule`` names: step_start, the
    released code's (0.1 stepped at each epoch's start); step_end, DevNet's (at its end);
    none, γ = 1 (constant)."""
    return (1.0 if schedule == "none" else LR_GAMMA,
            "start" if schedule == "step_start" else "end")


def epoch_lr(base_lr: float, epoch: int, schedule: str) -> float:
    """Effective learning rate during 1-based ``epoch`` under ``schedule``."""
    return base_lr * step_lr_factor(epoch, LR_STEP_SIZE, *lr_step_settings(schedule))


# -- batch assembly ----------------------------------------------------------------------------
@dataclass
class SlotPlan:
    """Index-level plan of a set of image slots drawn from the normal pool: which normal
    image each slot shows, which slots become pseudo anomalies and from which source image
    (an index into the normal pool for synthetic pseudo anomalies, into the outlier pool for
    external ones; −1 for slots that stay normal)."""

    normal_idx: np.ndarray
    is_pseudo: np.ndarray
    pseudo_src: np.ndarray


def plan_slots(normal_idx: np.ndarray, rng: np.random.RandomState, p_pseudo: float,
               n_pseudo_pool: int) -> SlotPlan:
    """Flip an independent coin (probability ``p_pseudo``) per slot; a pseudo slot gets a
    fresh uniformly random source from a pool of ``n_pseudo_pool`` images (methods.md §1.3:
    drawn independently of the slot's own normal index)."""
    n = len(normal_idx)
    is_pseudo = rng.random_sample(n) < p_pseudo if p_pseudo > 0 else np.zeros(n, bool)
    src = np.full(n, -1, dtype=np.int64)
    k = int(is_pseudo.sum())
    if k:
        src[is_pseudo] = rng.randint(0, n_pseudo_pool, size=k)
    return SlotPlan(np.asarray(normal_idx, dtype=np.int64), is_pseudo, src)


def normal_slot_count(batch_size: int, normal_fraction: float = NORMAL_FRACTION) -> int:
    """Normal slots of a batch: ⌊fraction·B⌋, so the released 2/3 gives its 2·B // 3 (the
    tiny epsilon absorbs 2/3 not being exact in binary: 48·(2/3) must give 32, not 31)."""
    return int(np.floor(float(normal_fraction) * int(batch_size) + 1e-9))


def make_batch_sampler(n_normal: int, n_anomalies: int, batch_size: int,
                       rng: np.random.RandomState,
                       normal_fraction: float = NORMAL_FRACTION) -> BalancedBatchSampler:
    """DRA's balanced sampler (methods.md §1.3): ⌊fraction·B⌋ normal slots (released: 32 of
    48), the rest (16 of 48) from the labelled anomalies, each an endless stream of
    permutations."""
    return BalancedBatchSampler(n_normal, n_anomalies, batch_size,
                                normal_slot_count(batch_size, normal_fraction), rng)


def batch_labels(plan: SlotPlan, n_anomaly_slots: int) -> np.ndarray:
    """Labels of a training batch: the normal slots (0, or 2 if pseudo) then the seen
    anomalies (1)."""
    normal = np.where(plan.is_pseudo, LABEL_PSEUDO, LABEL_NORMAL)
    return np.concatenate([normal, np.full(n_anomaly_slots, LABEL_SEEN)]).astype(np.int64)


# -- the method --------------------------------------------------------------------------------
@register_method("dra")
class DRA(TorchMethod):
    """DRA with the released code's behaviour (``profile="code"``) or the paper's
    (``profile="paper"``); see the module docstring. Parameters set to None take the
    profile's value; ``effective_params_`` holds the resolved values after ``fit``.

    Parameters:

    * ``profile``: ``code`` | ``paper`` — defaults of the parameters below that are None;
    * ``heads``: comma-separated subset of seen, pseudo, residual, normality (the variants
      dra1a … dra3an are registered with the paper's subsets);
    * ``loss``: ``deviation`` | ``bce`` | ``focal`` (paper Fig. 5), for every head;
    * ``pseudo``: ``cutmix`` | ``cutpaste_scar`` | ``cutpaste_mix`` | ``external`` (Table 4);
      None = ``external`` when the run has outliers, else ``cutmix`` (released behaviour);
    * ``n_ref``: reference set size N_r (Fig. 3 right: 1, 5, 10); ``topk``: top-K rate;
      ``n_scales``: pyramid levels;
    * ``epochs`` × ``steps_per_epoch`` optimiser steps on batches of ``batch_size``
      (⌊``normal_fraction``·B⌋ normal slots, released 2/3, the rest seen anomalies) plus the
      references; ``test_batch_size``: images per scoring batch (each gets its own
      references in the code profile);
    * ``pseudo_prob``: chance that a normal batch slot or a reference slot becomes a pseudo
      anomaly (released ½); 0 = no pseudo slots at all, allowed only without the pseudo head
      (e.g. ``dra1a``, whose default keeps the released ½);
    * profile-dependent (None = profile): ``lr``, ``weight_decay``, ``lr_schedule``
      (``step_start`` | ``step_end`` | ``none``), ``grad_clip`` (max global L2 norm, ≤ 0 =
      off), ``squared_loss`` (paper eq. 11), ``ref_mode`` (``per_step_random_mixed`` code |
      ``fixed_mixed`` paper: drawn once, each slot a pseudo anomaly with ``pseudo_prob`` once |
      ``fixed_normal`` paper main text only), ``residual_block`` (3×3 conv + BN + ReLU in g_r), ``rotate``
      (±180° training rotation), ``abs_scores`` (|·| on patch and holistic scores).
    """

    # 2: paper profile's reference set fixed_normal → fixed_mixed; pseudo_prob, normal_fraction
    version = "2"
    uses_common_blocks = True
    # Paper Sec. 4.1: CutMix pseudo anomalies, except LAG images on the three medical datasets.
    outlier_policy = "paper_pseudo"
    uses_labeled_anomalies = True
    uses_outliers = True
    # Table 9 (App. C.3): trained on a source texture, then "fine-tuned with 10 epochs on the
    # other four datasets (target domains) using normal samples only".
    adapts = True
    embeds = True  # the backbone's feature map, average-pooled (Fig. 1's t-SNE)
    card = MethodCard(
        paper="Ding, Pang, Shen. Catching Both Gray and Black Swans: Open-set Supervised "
              "Anomaly Detection",
        venue="CVPR 2022",
        upstream="https://github.com/Choubo/DRA (code commit of 2022-04-10)",
        upstream_license="AGPL-3.0 (upstream; nothing copied — implemented from notes)",
        notes=("profile=code (default) follows the released code; profile=paper follows the "
               "paper text where they differ: lr 1e-3 vs 2e-4, weight decay 1e-2 vs 1e-5, "
               "squared vs absolute deviation loss, a reference set drawn once and reused for "
               "training and testing (ref_mode=fixed_mixed: each of its slots a pseudo "
               "anomaly with probability 1/2, drawn once, unrotated) vs per-step random "
               "references with ~50% pseudo anomalies and rotation, no 3x3 conv+BN+ReLU in "
               "the residual head, no abs() on head outputs. Reference set reading: the main "
               "text says N_r normal images fixed for all training and testing samples, "
               "App. B.1 says the final implementation mixes pseudo anomalies into the "
               "reference set; the paper profile takes both statements (fixed and mixed), "
               "since the appendix describes what produced the reported numbers; "
               "ref_mode=fixed_normal is the main text alone. StepLR at epoch start, grad "
               "clip 1.0, ±180° rotation, pseudo_prob 1/2 and normal_fraction 2/3 (32+16 of "
               "48) are code-only but kept by both profiles (the paper is silent). dra1a "
               "keeps the pseudo slots by default (the released data pipeline makes them "
               "whatever the heads); pseudo_prob=0 trains it on normals and seen anomalies "
               "only. Each difference is its own parameter. Harness: fully seeded from the run seed (scores repeat exactly on "
               "CPU), test-time references from a seeded score-time stream, on-device "
               "augmentation, working head ablations dra1a/dra2a/dra3ar/dra3an, CutPaste-Scar/"
               "Mix pseudo anomalies implemented from the CutPaste paper. Cross-domain stage "
               "(Table 9; App. C.3 gives one sentence) [recon]: the source model is loaded "
               "whole, then trained with the same loss and a fresh optimiser on batches of "
               "target normal images only, each slot a CutMix pseudo anomaly with "
               "probability 1/2 (no seen-anomaly slots, so the seen head sees normals only)."),
    )
    quick_params = {"epochs": 2, "steps_per_epoch": 5, "batch_size": 12, "n_ref": 2}
    demo_params = dict(DEMO_SCHEDULE)
    @classmethod
    def test_params(cls) -> dict:
        return {"epochs": 2, "steps_per_epoch": 2, "batch_size": 12, "n_ref": 2}

    def __init__(self, profile: str = "code", heads: str = "seen,pseudo,residual,normality",
                 loss: str = "deviation", pseudo: Optional[str] = None, n_ref: int = 5,
                 topk: float = 0.1, n_scales: int = 2, epochs: int = 30, steps_per_epoch: int = 20, batch_size: int = 48,
                 test_batch_size: int = 48, backbone: str = "resnet18",
                 lr: Optional[float] = None, weight_decay: Optional[float] = None,
                 lr_schedule: Optional[str] = None, grad_clip: Optional[float] = None,
                 squared_loss: Optional[bool] = None, ref_mode: Optional[str] = None,
                 residual_block: Optional[bool] = None, rotate: Optional[bool] = None,
                 abs_scores: Optional[bool] = None, pseudo_prob: float = PSEUDO_PROB,
                 normal_fraction: float = NORMAL_FRACTION):
        self.profile = profile
        self.heads = heads
        self.loss = loss
        self.pseudo = pseudo
        self.n_ref = n_ref
        self.topk = topk
        self.n_scales = n_scales
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.test_batch_size = test_batch_size
        self.backbone = backbone
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.grad_clip = grad_clip
        self.squared_loss = squared_loss
        self.ref_mode = ref_mode
        self.residual_block = residual_block
        self.rotate = rotate
        self.abs_scores = abs_scores
        self.pseudo_prob = pseudo_prob
        self.normal_fraction = normal_fraction

    # -- parameter resolution ----------------------------------------------------------------
    def parse_heads(self) -> tuple[str, ...]:
        items = self.heads.split(",") if isinstance(self.heads, str) else list(self.heads)
        names = tuple(h.strip() for h in items if h.strip())
        unknown = [h for h in names if h not in HEAD_NAMES]
        if unknown or not names:
            raise ValueError(f"DRA heads={self.heads!r}: give a comma-separated non-empty "
                             f"subset of {', '.join(HEAD_NAMES)}")
        return tuple(h for h in HEAD_NAMES if h in names)  # canonical order

    def resolve_params(self, has_outliers: bool = False,
                       train_img_size: Optional[int] = None) -> dict[str, Any]:
        """All parameters with the profile's values filled in for the ``None`` ones, after
        validation (clear ValueErrors naming the parameter)."""
        if self.profile not in PROFILES:
            raise ValueError(f"DRA profile={self.profile!r}: choose one of {', '.join(PROFILES)}")
        p = {k: (getattr(self, k) if getattr(self, k) is not None else v)
             for k, v in PROFILES[self.profile].items()}
        p["profile"] = self.profile
        p["heads"] = ",".join(self.parse_heads())
        if self.loss not in LOSSES:
            raise ValueError(f"DRA loss={self.loss!r}: choose one of {', '.join(LOSSES)}")
        pseudo = self.pseudo if self.pseudo is not None else (
            "external" if has_outliers else "cutmix")
        if pseudo not in PSEUDO_SOURCES:
            raise ValueError(f"DRA pseudo={pseudo!r}: choose one of {', '.join(PSEUDO_SOURCES)}")
        if p["ref_mode"] not in REF_MODES:
            raise ValueError(f"DRA ref_mode={p['ref_mode']!r}: choose one of "
                             f"{', '.join(REF_MODES)}")
        if p["lr_schedule"] not in LR_SCHEDULES:
            raise ValueError(f"DRA lr_schedule={p['lr_schedule']!r}: choose one of "
                             f"{', '.join(LR_SCHEDULES)}")
        check_budget("DRA", lr=p["lr"], weight_decay=p["weight_decay"], n_ref=self.n_ref,
                     n_scales=self.n_scales, epochs=self.epochs,
                     steps_per_epoch=self.steps_per_epoch, test_batch_size=self.test_batch_size)
        if int(self.batch_size) < 2:
            raise ValueError(f"DRA batch_size={self.batch_size!r} must be ≥ 2 (normal and "
                             f"anomaly slots)")
        if not 0 < float(self.topk) <= 1:
            raise ValueError(f"DRA topk={self.topk!r} must be in (0, 1]")
        pseudo_prob = float(self.pseudo_prob)
        if not 0.0 <= pseudo_prob <= 1.0:
            raise ValueError(f"DRA pseudo_prob={self.pseudo_prob!r} must be in [0, 1] (the "
                             f"released code uses 0.5)")
        if pseudo_prob == 0.0 and "pseudo" in p["heads"].split(","):
            raise ValueError("DRA pseudo_prob=0 leaves the pseudo head without pseudo "
                             "anomalies to learn; drop 'pseudo' from heads (e.g. dra1a) or "
                             "set pseudo_prob > 0")
        n_normal_slots = normal_slot_count(self.batch_size, self.normal_fraction)
        if not 1 <= n_normal_slots <= int(self.batch_size) - 1:
            raise ValueError(f"DRA normal_fraction={self.normal_fraction!r} gives "
                             f"{n_normal_slots} normal slots of batch_size={self.batch_size}; "
                             f"choose a fraction that leaves at least one normal and one "
                             f"seen-anomaly slot (released: 2/3)")
        # The harness resizes the data to the run's img_size; the model works at that size.
        img_size = int(train_img_size) if train_img_size is not None else self.input_size
        p.update(loss=self.loss, pseudo=pseudo, n_ref=int(self.n_ref), topk=float(self.topk),
                 n_scales=int(self.n_scales), img_size=img_size, epochs=int(self.epochs),
                 steps_per_epoch=int(self.steps_per_epoch), batch_size=int(self.batch_size),
                 test_batch_size=int(self.test_batch_size), backbone=self.backbone,
                 lr=float(p["lr"]), weight_decay=float(p["weight_decay"]),
                 grad_clip=float(p["grad_clip"]), squared_loss=bool(p["squared_loss"]),
                 residual_block=bool(p["residual_block"]), rotate=bool(p["rotate"]),
                 abs_scores=bool(p["abs_scores"]), pseudo_prob=pseudo_prob,
                 normal_fraction=float(self.normal_fraction))
        return p

    # -- TorchMethod hooks --------------------------------------------------------------------
    def check_params(self) -> None:
        """Validation only; the values are resolved against the data in ``check_data``."""
        self.resolve_params()

    def check_data(self, train: TrainData) -> None:
        """Resolve the parameters for this data (pseudo source, image size) into
        ``effective_params_`` and refuse data they cannot train on."""
        has_outliers = train.outliers is not None and len(train.outliers) > 0
        p = self.resolve_params(has_outliers, train.img_size)
        if p["pseudo"] == "external" and p["pseudo_prob"] > 0 and not has_outliers:
            raise ValueError("DRA pseudo='external' needs external outlier images but this run "
                             "has none: pass --outliers lag|mvtec_ad|PATH to the harness, or "
                             "choose pseudo=cutmix, cutpaste_scar or cutpaste_mix")
        super().check_data(train)
        if len(train.anomalies) == 0:  # adapting on normal images only (cross-domain stage)
            p["normal_fraction"] = 1.0  # every slot normal, half of them CutMix pseudo anomalies
        self.effective_params_ = p

    def uses_outlier_images(self, train: TrainData) -> bool:
        p = self.effective_params_
        return p["pseudo"] == "external" and p["pseudo_prob"] > 0

    def fit_schedule(self, train: TrainData) -> FitSchedule:
        """The resolved profile's loop (``lr_step_settings``; ``grad_clip`` ≤ 0 = off)."""
        p = self.effective_params_
        return FitSchedule(p["epochs"], p["steps_per_epoch"], p["lr"], p["weight_decay"],
                           p["grad_clip"] if p["grad_clip"] > 0 else None, LR_STEP_SIZE,
                           *lr_step_settings(p["lr_schedule"]))

    def build_model(self, train: TrainData, ctx: RunContext) -> nn.Module:
        p = self.effective_params_
        return DRANet(tuple(p["heads"].split(",")), p["backbone"], ctx.weights, p["topk"],
                      p["n_scales"], p["residual_block"], p["abs_scores"])

    def prepare(self, state: FitState) -> None:
        """The balanced sampler, the per-step reference stream and, in the fixed reference
        modes, the reference set (paper: N_r images drawn once at random, fixed for training
        and testing; main text: normal, App. B.1: pseudo anomalies mixed in; unaugmented)."""
        p = self.effective_params_
        # Kept after fit: the score-time references are drawn from the training normals.
        self._normal_u8, self._outliers_u8 = state.normal, state.outliers
        n_normal = len(state.normal)
        state.extra["sampler"] = make_batch_sampler(n_normal, len(state.anomalies),
                                                    p["batch_size"], state.rng,
                                                    p["normal_fraction"])
        state.extra["ref_stream"] = EndlessPermutation(n_normal, state.rng)
        self.ref_idx_ = self.ref_is_pseudo_ = self.ref_images_ = None
        if state.model.needs_reference and p["ref_mode"] in ("fixed_normal", "fixed_mixed"):
            idx = state.rng.choice(n_normal, p["n_ref"], replace=n_normal < p["n_ref"])
            self.ref_idx_ = np.sort(idx)
            if p["ref_mode"] == "fixed_mixed":
                plan = plan_slots(self.ref_idx_, state.rng, p["pseudo_prob"],
                                  self._pseudo_pool_size())
                self.ref_is_pseudo_ = plan.is_pseudo
                self.ref_images_ = self._slot_images(plan, state.gen)
            else:
                self.ref_is_pseudo_ = np.zeros(len(self.ref_idx_), bool)
                self.ref_images_ = to_float(
                    state.normal[torch.from_numpy(self.ref_idx_).to(state.device)])

    def training_step(self, state: FitState) -> torch.Tensor:
        """One batch (methods.md §1.3): the planned normal/pseudo slots, then the seen
        anomalies, all rotated; the references prepended when the residual head is on."""
        p, rng, gen = self.effective_params_, state.rng, state.gen
        normal_idx, anomaly_idx = state.extra["sampler"].next()
        plan = plan_slots(normal_idx, rng, p["pseudo_prob"], self._pseudo_pool_size())
        labels = torch.from_numpy(batch_labels(plan, len(anomaly_idx)))
        x = torch.cat([self._slot_images(plan, gen),
                       to_float(state.anomalies[torch.from_numpy(anomaly_idx).to(state.device)])])
        if p["rotate"]:
            x = random_rotate(x, gen)
        n_ref = 0
        if state.model.needs_reference:
            refs = (self.ref_images_ if self.ref_images_ is not None else
                    self._draw_references(state.extra["ref_stream"], rng, gen))
            x = torch.cat([refs, x])
            n_ref = len(refs)
        scores = state.model(normalize(x), n_ref)
        total, _ = dra_loss(scores, labels, loss=p["loss"], squared=p["squared_loss"],
                            generator=gen)
        return total

    def embed_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The feature map all heads share (ResNet ``layer4``), averaged over positions."""
        return model.trunk(x).mean(dim=(2, 3))

    def train_batch_images(self) -> int:
        """The batch plus the ``n_ref`` references a training step prepends (residual
        head)."""
        refs = int(self.n_ref) if "residual" in self.parse_heads() else 0
        return int(self.batch_size) + refs

    def floor_loss(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        n_ref = int(self.n_ref) if model.needs_reference else 0
        return sum(s.float().mean() for s in model(x, n_ref).values())

    def batch_scorer(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """Score = g_s + g_p + g_r − g_n. Fixed reference modes: the set's mean feature maps,
        computed once per call; code profile: ``n_ref`` fresh (mixed, rotated) references
        for every test batch, from a score-time stream seeded from the run seed, so that
        the same call gives the same scores."""
        if not model.needs_reference:
            return lambda x: combine_scores(model(x))
        if self.ref_images_ is not None:
            ref_means = model.reference_means(normalize(self.ref_images_))
            return lambda x: combine_scores(model(x, 0, ref_means))
        score_seed = np.random.SeedSequence([self.ctx_.seed, 1]).generate_state(1)[0]
        rng, gen = make_rngs(int(score_seed))
        stream = EndlessPermutation(len(self._normal_u8), rng)

        def with_fresh_references(x: torch.Tensor) -> torch.Tensor:
            refs = normalize(self._draw_references(stream, rng, gen))
            return combine_scores(model(torch.cat([refs, x]), len(refs)))
        return with_fresh_references

    # -- data helpers ------------------------------------------------------------------------
    def _slot_images(self, plan: SlotPlan, gen: torch.Generator) -> torch.Tensor:
        """Float [0, 1] images of planned normal/pseudo slots (before rotation)."""
        dev = self._normal_u8.device
        x = to_float(self._normal_u8[torch.from_numpy(plan.normal_idx).to(dev)])
        if plan.is_pseudo.any():
            sel = torch.from_numpy(np.flatnonzero(plan.is_pseudo)).to(dev)
            src = torch.from_numpy(plan.pseudo_src[plan.is_pseudo]).to(dev)
            kind = self.effective_params_["pseudo"]
            if kind == "external":  # the outlier image replaces the CutMix pseudo anomaly
                x[sel] = to_float(self._outliers_u8[src])
            else:
                x[sel] = synthesize(kind, to_float(self._normal_u8[src]), gen)
        return x

    def _pseudo_pool_size(self) -> int:
        if self.effective_params_["pseudo"] == "external":
            return 0 if self._outliers_u8 is None else len(self._outliers_u8)
        return len(self._normal_u8)

    def _draw_references(self, stream: EndlessPermutation, rng: np.random.RandomState,
                         gen: torch.Generator) -> torch.Tensor:
        """``n_ref`` per-step references (code, methods.md §1.5): the next normals of the
        reference stream, each independently a pseudo anomaly with p = ``pseudo_prob``,
        rotated if rotation is on. Float [0, 1], not yet normalised."""
        plan = plan_slots(stream.take(self.effective_params_["n_ref"]), rng,
                          self.effective_params_["pseudo_prob"], self._pseudo_pool_size())
        x = self._slot_images(plan, gen)
        return random_rotate(x, gen) if self.effective_params_["rotate"] else x


# The paper's head ablations (Table 3): same class, other heads.
register_method("dra1a", defaults={"heads": "seen"}, variant_of="dra")(DRA)
register_method("dra2a", defaults={"heads": "seen,pseudo"}, variant_of="dra")(DRA)
register_method("dra3ar", defaults={"heads": "seen,pseudo,residual"}, variant_of="dra")(DRA)
register_method("dra3an", defaults={"heads": "seen,pseudo,normality"}, variant_of="dra")(DRA)
