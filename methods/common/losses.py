"""Training losses shared by the methods (methods.md §0.5 and §3).

* :func:`deviation_loss` — DevNet/DRA deviation loss (absolute/hinge form of the released
  code; ``squared=True`` is the paper's eq. 11);
* :func:`binary_focal_loss` — FLOS's focal loss on logits (α = 1, γ = 2);
* :func:`bce_loss` — binary cross-entropy on logits; :func:`bce_prob_loss` on probabilities.

Targets are 0/1 per sample (1 = the class the score should be high for) and every loss is the
mean over the samples given.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _flat_pair(scores: torch.Tensor, targets: torch.Tensor, what: str):
    s = scores.reshape(-1)
    y = torch.as_tensor(targets, device=s.device).reshape(-1).to(s.dtype)
    if s.numel() != y.numel():
        raise ValueError(f"{what}: {s.numel()} scores but {y.numel()} targets")
    if s.numel() == 0:
        raise ValueError(f"{what}: got an empty batch")
    return s, y


def deviation_loss(scores: torch.Tensor, targets: torch.Tensor, *, margin: float = 5.0,
                   squared: bool = False, n_prior: int = 5000,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Deviation loss (methods.md §0.5), a scalar.

    At every call ``n_prior`` reference scores r ~ N(0, 1) are drawn afresh (from
    ``generator``, a CPU generator, or torch's global RNG when None); with μ, σ their mean
    and Bessel-corrected std, dev = (s − μ)/σ and the per-sample loss is
    (1 − y)·|dev| + y·max(0, margin − dev) — or, ``squared=True`` (paper eq. 11),
    (1 − y)·dev² + y·max(0, margin − dev)². Returns the mean over samples.
    ``scores``: (B,) raw head outputs; ``targets``: (B,) with 1 = anomaly (the head's positive).
    """
    if n_prior < 2:
        raise ValueError(f"deviation_loss needs n_prior ≥ 2 reference draws, got {n_prior!r}")
    s, y = _flat_pair(scores, targets, "deviation_loss")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    prior = torch.randn(n_prior, generator=generator, device=gen_device, dtype=torch.float64)
    mu, sigma = prior.mean(), prior.std()  # torch.std is Bessel-corrected by default
    dev = (s - mu.to(s.device, s.dtype)) / sigma.to(s.device, s.dtype)
    inlier = dev.abs()
    outlier = torch.clamp(margin - dev, min=0.0)
    if squared:
        inlier, outlier = inlier ** 2, outlier ** 2
    return ((1.0 - y) * inlier + y * outlier).mean()


def binary_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0,
                      gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss on logits (methods.md §3), a scalar: BCE_i in the stable
    with-logits form, p_t = exp(−BCE_i), loss_i = α·(1 − p_t)^γ·BCE_i, mean over samples.
    α = 1 (no class re-weighting) and γ = 2 are the DevNet code's values."""
    z, y = _flat_pair(logits, targets, "binary_focal_loss")
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    p_t = torch.exp(-bce)
    return (alpha * (1.0 - p_t) ** gamma * bce).mean()


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits (sigmoid inside, numerically stable), mean over samples."""
    z, y = _flat_pair(logits, targets, "bce_loss")
    return F.binary_cross_entropy_with_logits(z, y)


def bce_prob_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on probabilities in [0, 1] (log clamped at −100 by torch), mean.
    For models whose output is already a probability (e.g. MIL-pooled sigmoid scores)."""
    p, y = _flat_pair(probs, targets, "bce_prob_loss")
    return F.binary_cross_entropy(p, y)
