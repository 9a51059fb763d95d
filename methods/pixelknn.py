"""Raw-pixel k-nearest-neighbour distance: a deliberately simple, training-free reference
point (not a method of the paper). An image's score is its mean Euclidean distance, on
downsampled grayscale pixels, to its k nearest normal training images. It uses no labelled
anomalies, so the harness runs it once per test set with shots 0. Cheap enough to exercise
the whole harness in seconds."""
from __future__ import annotations

from typing import Optional

import numpy as np

from bench.api import Method, MethodCard, Resources, RunContext, TrainData
from bench.registry import register_method


@register_method("pixelknn")
class PixelKNN(Method):
    version = "1"
    uses_labeled_anomalies = False
    card = MethodCard(paper="k-nearest-neighbour distance on raw pixels (reference baseline)",
                      venue="-", upstream="none (part of osad-bench)",
                      upstream_license="Apache-2.0",
                      notes="Not in the DRA paper; a sanity floor for new datasets.")
    quick_params = {"feature_size": 16}
    input_size = 64  # raw pixels: a larger image only costs decoding time
    resources = Resources(gpu_fraction=0.0, cpus=1, memory_gb=2.0)  # numpy on the CPU

    def __init__(self, feature_size: int = 16, k: int = 1):
        self.feature_size = feature_size
        self.k = k

    def _features(self, images: np.ndarray) -> np.ndarray:
        from PIL import Image

        s = self.feature_size
        feats = [np.asarray(Image.fromarray(im).convert("L").resize((s, s), Image.BILINEAR),
                            dtype=np.float32).reshape(-1) / 255.0 for im in images]
        return np.stack(feats) if feats else np.zeros((0, s * s), np.float32)

    def fit(self, train: TrainData, ctx: Optional[RunContext] = None) -> "PixelKNN":
        ctx = self._context(train, ctx)
        if self.k < 1:
            raise ValueError(f"pixelknn: k must be >= 1, got {self.k}")
        if self.feature_size < 1:
            raise ValueError(f"pixelknn: feature_size must be >= 1, got {self.feature_size}")
        if len(train.normal) < self.k:
            raise ValueError(f"pixelknn: k={self.k} exceeds the {len(train.normal)} normal "
                             f"training images")
        self.bank_ = self._features(train.normal)
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        self._check_fitted("bank_")
        q = self._features(images)
        d2 = (q ** 2).sum(1)[:, None] + (self.bank_ ** 2).sum(1)[None, :] - 2 * q @ self.bank_.T
        d = np.sqrt(np.maximum(d2, 0.0))
        return np.sort(d, axis=1)[:, :self.k].mean(axis=1).astype(np.float64)

    def state_dict(self) -> dict:
        import torch

        self._check_fitted("bank_")
        return {"bank": torch.from_numpy(self.bank_)}
