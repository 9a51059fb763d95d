"""Scoring heads on a backbone feature map and the image pyramid (methods.md §0.3, §0.4).

* :func:`topk_count` — K of the top-K MIL mean: max(floor(rate·h·w), 1);
* :class:`TopKHead` — the "plain head" of DevNet and DRA: 1×1 conv C→1 (with bias) →
  |patch score| → mean of the K largest → one score per image (≥ 0);
* :func:`image_pyramid` / :func:`pyramid_mean` — the n-scale pyramid whose per-scale scores
  are averaged.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def topk_count(h: int, w: int, rate: float = 0.1) -> int:
    """Number of patches averaged by the top-K head on an h×w map: max(floor(rate·h·w), 1).

    Floor, not round, as the released code (14×14 → 19, 7×7 → 4, 4×4 → 1 at rate 0.1)."""
    if not 0 < rate <= 1:
        raise ValueError(f"top-K rate must be in (0, 1], got {rate!r}")
    if h < 1 or w < 1:
        raise ValueError(f"feature map must be at least 1×1, got {h}×{w}")
    return max(int(math.floor(rate * h * w)), 1)


def topk_mean(patch_scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the k largest values of each row of a B×P tensor → (B,)."""
    return torch.topk(patch_scores, k, dim=1).values.mean(dim=1)


class TopKHead(nn.Module):
    """Plain top-K MIL head (methods.md §0.4): 1×1 conv ``in_channels``→1 with bias, absolute
    value of every patch score (``absolute=True``, the released code), mean of the K largest.

    ``absolute=False`` drops the abs (scores can be negative; used by FLOS's corrected variant).
    Input B×C×h×w, output (B,)."""

    def __init__(self, in_channels: int = 512, topk_rate: float = 0.1, absolute: bool = True):
        super().__init__()
        topk_count(1, 1, topk_rate)  # validates the rate at construction
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1, bias=True)
        self.topk_rate = topk_rate
        self.absolute = absolute

    def patch_map(self, feat: torch.Tensor) -> torch.Tensor:
        """Patch scores B×h×w (after abs when ``absolute``), e.g. for localisation maps."""
        m = self.conv(feat)[:, 0]
        return m.abs() if self.absolute else m

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        h, w = feat.shape[-2:]
        patches = self.patch_map(feat).flatten(1)
        return topk_mean(patches, topk_count(h, w, self.topk_rate))


def image_pyramid(x: torch.Tensor, n_scales: int) -> list[torch.Tensor]:
    """The released code's pyramid (methods.md §0.3): scale 0 is ``x`` itself; scale s ≥ 1 is
    the already normalised ``x`` downsampled to (H // 2^s, W // 2^s) with nearest-neighbour
    interpolation (no antialias)."""
    if n_scales < 1:
        raise ValueError(f"n_scales must be ≥ 1, got {n_scales!r}")
    h, w = x.shape[-2:]
    if (h >> (n_scales - 1)) < 1 or (w >> (n_scales - 1)) < 1:
        raise ValueError(f"n_scales={n_scales} is too many for {h}×{w} images")
    out = [x]
    for s in range(1, n_scales):
        out.append(F.interpolate(x, size=(h // 2 ** s, w // 2 ** s), mode="nearest"))
    return out


def pyramid_mean(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 n_scales: int) -> torch.Tensor:
    """Arithmetic mean over the pyramid scales of ``fn(scale image)`` (each (B,) or B×…)."""
    return torch.stack([fn(xs) for xs in image_pyramid(x, n_scales)]).mean(dim=0)
