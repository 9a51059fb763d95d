"""Decoders from a backbone's stride-32 feature map back to an image, shared by the
reconstruction methods (MLEP's predictor, Deep SAD's autoencoder pre-training)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvDecoder(nn.Module):
    """Light decoder from a stride-32 feature map back to an image: per stage ×2 nearest
    up-sampling + 3×3 conv (+ BatchNorm + ReLU except in the last stage, which outputs
    ``out_channels`` unbounded values). ``widths`` are the hidden stage widths; with the
    default four, five stages undo the trunk's stride 32."""

    def __init__(self, in_channels: int = 512, widths: tuple[int, ...] = (256, 128, 64, 32),
                 out_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for w in widths:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(ch, w, kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            ch = w
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   nn.Conv2d(ch, out_channels, kernel_size=3, padding=1, bias=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.body(feat)
        if out.shape[-2:] != tuple(size):  # img_size not a multiple of 32
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out
