"""Helpers for testing methods, ours and third-party plugins': tiny in-memory data with
large, high-contrast defects (no files, no downloads).

``toy_problem`` returns a :class:`~bench.api.TrainData`, a :class:`~bench.api.RunContext`
and a labelled test set, so a method test is: build, fit, score, compute the AUC.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .api import RunContext, TrainData

TOY_CLASSES = ("bright_square", "dark_square", "bar", "ring")


def _normal_image(rng: np.random.RandomState, size: int) -> np.ndarray:
    """A smooth mid-grey texture: a few random low-frequency sinusoids plus mild noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.full((size, size), 0.5)
    for _ in range(3):
        fx, fy = rng.uniform(1, 4, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        img += 0.06 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    img += rng.normal(0, 0.02, size=(size, size))
    rgb = np.stack([img * t for t in rng.uniform(0.9, 1.1, size=3)], axis=-1)
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


def _add_defect(img: np.ndarray, cls: str, rng: np.random.RandomState) -> np.ndarray:
    """Paint a large (about a fifth of the side or more), high-contrast defect of class ``cls``."""
    out = img.copy()
    s = img.shape[0]
    w = max(3, int(s * rng.uniform(0.22, 0.32)))
    y, x = rng.randint(0, s - w, size=2)
    if cls == "bright_square":
        out[y:y + w, x:x + w] = 250
    elif cls == "dark_square":
        out[y:y + w, x:x + w] = 5
    elif cls == "bar":
        t = max(2, s // 12)
        if rng.rand() < 0.5:
            out[y:y + t, :] = (240, 20, 20)
        else:
            out[:, x:x + t] = (240, 20, 20)
    elif cls == "ring":
        yy, xx = np.mgrid[0:s, 0:s]
        r = np.hypot(yy - (y + w / 2), xx - (x + w / 2))
        out[(r > w * 0.3) & (r < w * 0.5)] = (20, 20, 240)
    else:
        raise ValueError(f"unknown toy defect class {cls!r}; known: {TOY_CLASSES}")
    return out


@dataclass
class ToyProblem:
    train: TrainData
    context: RunContext       # CPU unless asked, seeded with the problem's seed
    test_images: np.ndarray   # uint8 N×S×S×3
    test_labels: np.ndarray   # 0 normal, 1 anomaly
    test_classes: list[str]   # "good" or the defect class


def toy_problem(*, size: int = 32, n_normal: int = 24, shots: int = 4, n_test: int = 24,
                seed: int = 0, classes: tuple[str, ...] = TOY_CLASSES,
                seen: tuple[str, ...] | None = None, n_outliers: int = 0,
                device: str = "cpu") -> ToyProblem:
    """A tiny anomaly-detection problem. Labelled anomalies come from ``seen`` (default: all
    ``classes``); the test set has ``n_test`` normals and ``n_test`` anomalies of every class.
    ``n_outliers > 0`` adds external outlier images (a different texture family). The
    problem's context trains on ``device`` with ``seed`` and no pretrained weights."""
    rng = np.random.RandomState(seed)
    seen = tuple(seen or classes)
    normal = np.stack([_normal_image(rng, size) for _ in range(n_normal)])
    anom_cls = [seen[i % len(seen)] for i in range(shots)]
    anomalies = (np.stack([_add_defect(_normal_image(rng, size), c, rng) for c in anom_cls])
                 if shots else np.zeros((0, size, size, 3), np.uint8))
    test_imgs, labels, tcls = [], [], []
    for _ in range(n_test):
        test_imgs.append(_normal_image(rng, size)); labels.append(0); tcls.append("good")
    for i in range(n_test):
        c = classes[i % len(classes)]
        test_imgs.append(_add_defect(_normal_image(rng, size), c, rng)); labels.append(1)
        tcls.append(c)
    outliers = None
    if n_outliers:
        outliers = np.clip(rng.uniform(0, 255, size=(n_outliers, size, size, 3)), 0,
                           255).astype(np.uint8)
    train = TrainData(normal=normal, anomalies=anomalies, anomaly_classes=anom_cls,
                      outliers=outliers)
    context = RunContext(device=device, seed=seed, weights="none", img_size=size)
    return ToyProblem(train, context, np.stack(test_imgs), np.array(labels), tcls)


def write_toy_layout(root, *, subsets=("alpha", "beta"), classes=TOY_CLASSES, size=32,
                     n_train=12, n_test_good=6, n_per_class=5, seed=0, shuffle_names=False):
    """Write a tiny MVTec-layout dataset of PNGs under ``root`` (one folder per subset) and
    return ``root``. ``shuffle_names`` gives files random names so that sorted order differs
    from creation order (tests of order independence)."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    rng = np.random.RandomState(seed)

    def name(i: int) -> str:
        return f"{rng.randint(0, 10**6):06d}_{i}.png" if shuffle_names else f"{i:03d}.png"

    for sub in subsets:
        for folder, n, cls in ([("train/good", n_train, None), ("test/good", n_test_good, None)]
                               + [(f"test/{c}", n_per_class, c) for c in classes]):
            d = root / sub / folder
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = _normal_image(rng, size)
                if cls is not None:
                    img = _add_defect(img, cls, rng)
                Image.fromarray(img).save(d / name(i))
    return root
