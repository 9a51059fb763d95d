"""Shared parts of the component comparisons with the upstream code (issue 16).

One home for: putting an upstream tree on the import path, reporting a check as
``agree`` / ``differ (size)``, mapping the upstream ResNet-18 trunk's state-dict names to
ours, and the augmentation checks both upstream repositories share (the same torchvision/PIL
transforms: rotation, resize, normalisation) and the tensor comparisons.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch

RESULTS: list[tuple[str, str, bool, str]] = []


def report(component: str, name: str, agree: bool, size: str = "", note: str = "") -> bool:
    """Print one check line: ``[component] name: agree`` or ``… differ (size)``."""
    verdict = "agree" if agree else f"differ ({size})"
    extra = f" — {size}" if agree and size else ""
    line = f"[{component}] {name}: {verdict}{extra}"
    if note:
        line += f"  [{note}]"
    print(line, flush=True)
    RESULTS.append((component, name, agree, size))
    return agree


def summary_line() -> str:
    n_agree = sum(1 for r in RESULTS if r[2])
    return f"{n_agree} of {len(RESULTS)} checks agree; differ: " + (
        ", ".join(f"[{c}] {n}" for c, n, a, _ in RESULTS if not a) or "none")


def max_diff(a, b) -> float:
    a = torch.as_tensor(a).double()
    b = torch.as_tensor(b).double()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a - b).abs().max()) if a.numel() else 0.0


def check_close(component: str, name: str, a, b, atol: float, note: str = "") -> bool:
    """Agree when max |a − b| ≤ atol (shapes must match)."""
    try:
        d = max_diff(a, b)
    except ValueError as exc:
        return report(component, name, False, str(exc), note)
    return report(component, name, d <= atol, f"max |Δ| = {d:.2e}, tolerance {atol:.0e}", note)


def use_upstream(tree: Path) -> Path:
    """Put one prepared upstream tree (…/DRA or …/devnet) first on ``sys.path``; its top-level
    packages (``modeling``, ``datasets``, ``dataloaders``) shadow nothing of ours (ours live
    under ``bench``)."""
    tree = Path(tree).resolve()
    if not (tree / "train.py").is_file():
        raise SystemExit(f"error: {tree} is not a prepared upstream tree (no train.py); run "
                         f"benchmarks/upstream/prepare.sh DEST and pass DEST/DRA or DEST/devnet")
    for mod in [m for m in sys.modules if m.split(".")[0] in ("modeling", "datasets",
                                                                 "dataloaders", "utils")]:
        del sys.modules[mod]
    sys.path.insert(0, str(tree))
    os.environ.setdefault("UPSTREAM_WEIGHTS", "none")
    os.environ.setdefault("MPLBACKEND", "Agg")
    return tree


@contextlib.contextmanager
def sorted_listdir():
    """``os.listdir`` in sorted order (our protocol sorts file lists; upstream uses the
    file-system order, which is arbitrary), for the split comparisons."""
    real = os.listdir
    os.listdir = lambda path=".": sorted(real(path))
    try:
        yield
    finally:
        os.listdir = real


# -- state dicts -------------------------------------------------------------------------------
_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def trunk_key(upstream_key: str, upstream_prefix: str, our_prefix: str) -> Optional[str]:
    """Our name for an upstream ResNet trunk entry (``<prefix>.net.layer1.0.conv1.weight`` →
    ``<ours>.body.4.0.conv1.weight``); None for the unused classifier (``fc``)."""
    rest = upstream_key[len(upstream_prefix):]
    first, _, tail = rest.partition(".")
    if first == "fc":
        return None
    return f"{our_prefix}.{_TRUNK.index(first)}.{tail}"


def map_state(upstream_state: dict, rules: Iterable[tuple[str, str]],
              trunk: tuple[str, str]) -> dict:
    """Rename an upstream state dict to ours: ``trunk`` = (upstream prefix, our prefix) for
    the ResNet trunk, ``rules`` = (upstream prefix, our prefix) pairs for the heads."""
    out = {}
    for k, v in upstream_state.items():
        if k.startswith(trunk[0]):
            nk = trunk_key(k, trunk[0], trunk[1])
            if nk is not None:
                out[nk] = v.clone()
            continue
        for up, ours in rules:
            if k.startswith(up):
                out[ours + k[len(up):]] = v.clone()
                break
        else:
            raise KeyError(f"no mapping for upstream parameter {k}")
    return out


def compare_states(component: str, name: str, ours: dict, mapped_upstream: dict,
                   atol: float, relative: bool = False) -> bool:
    """Every parameter and buffer (BatchNorm running statistics included) equal within atol
    (``relative``: |Δ| / max(1, |upstream|), so large running variances compare fairly)."""
    missing = sorted(set(ours) ^ set(mapped_upstream))
    if missing:
        return report(component, name, False, f"names differ: {missing[:4]}")
    worst, where = 0.0, ""
    for k in ours:
        a, b = ours[k].double(), mapped_upstream[k].double()
        d = (a - b).abs()
        if relative:
            d = d / b.abs().clamp(min=1.0)
        d = float(d.max()) if d.numel() else 0.0
        if d > worst:
            worst, where = d, k
    what = "max |Δ|/max(1,|x|)" if relative else "max |Δ|"
    return report(component, name, worst <= atol,
                  f"{what} = {worst:.2e} ({where or 'all equal'}), tolerance {atol:.0e}")


# -- images ------------------------------------------------------------------------------------
def sample_images(root: Path, subset: str, n: int, size: int) -> tuple[list, np.ndarray]:
    """(PIL images resized by torchvision as upstream does, the same resized by our decoder as
    uint8 N×H×W×3) for the first ``n`` sorted training images of a subset."""
    from PIL import Image
    from torchvision import transforms

    from bench.datasets.images import load_image

    files = sorted((Path(root) / subset / "train" / "good").iterdir())[:n]
    pil = [transforms.Resize((size, size))(Image.open(f).convert("RGB")) for f in files]
    ours = np.stack([load_image(f, size) for f in files])
    return pil, ours


def _border_mask(h: int, w: int, angle: float) -> np.ndarray:
    """Pixels within 1 px of the rotated image's edge (where the source boundary lies)."""
    from PIL import Image

    ones = Image.fromarray(np.full((h, w), 255, np.uint8)).rotate(angle, Image.NEAREST)
    a = np.asarray(ones) > 0
    edge = np.zeros_like(a)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            edge |= np.roll(np.roll(a, dy, 0), dx, 1) != a
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    return edge


def check_transforms(component: str, root: Path, subset: str, size: int) -> None:
    """Resize, normalisation and rotation: torchvision/PIL (upstream) vs ours, pixel for pixel."""
    from torchvision import transforms

    from bench.methods.common.augment import normalize, rotate, to_float

    pil, ours_u8 = sample_images(root, subset, 4, size)
    up_u8 = np.stack([np.asarray(im) for im in pil])
    d = np.abs(up_u8.astype(int) - ours_u8.astype(int))
    report(component, f"resize 128→{size} (PIL bilinear via torchvision Resize vs ours)",
           d.max() == 0, f"max |Δ| = {d.max()} grey levels, {np.mean(d > 0):.2%} of values")
    tv = torch.stack([transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(
        transforms.ToTensor()(im)) for im in pil])
    check_close(component, "ToTensor + Normalize vs to_float + normalize", tv,
                normalize(to_float(up_u8)), 1e-6)

    # Rotation: torchvision RandomRotation(180) = PIL rotate(angle, NEAREST, fill 0) for its
    # drawn angle; ours for the same angle. Where do the pixels that differ sit?
    x = to_float(up_u8[:1])
    for angle in (0.0, 90.0, -90.0, 180.0, 30.0, -45.0, 17.3, -123.4):
        up = np.asarray(transforms.functional.rotate(pil[0], angle,
                                                     transforms.InterpolationMode.NEAREST))
        ours = (rotate(x, torch.tensor([angle]))[0].permute(1, 2, 0).numpy() * 255).round()
        ours = ours.astype(np.uint8)
        differ = np.any(up != ours, axis=2)
        border = _border_mask(size, size, angle)
        share = differ.mean()
        on_border = differ[border].sum() / max(differ.sum(), 1)
        mirrored = np.any(np.asarray(transforms.functional.rotate(
            pil[0], -angle, transforms.InterpolationMode.NEAREST)) != ours, axis=2).mean()
        report(component, f"rotation {angle:+.1f}° (PIL NEAREST vs ours)", share == 0,
               f"{share:.2%} of pixels differ, {on_border:.0%} of them within 1 px of an "
               f"edge; same angle the other way round: {mirrored:.2%} differ")


def check_sampler_streams(component: str, upstream_sampler_cls, cfg, n_normal: int,
                          n_anomaly: int, normal_slots: int, seed: int,
                          n_batches: int) -> None:
    """Batch composition and per-image draw counts of the upstream BalancedBatchSampler vs
    ours, both driven by numpy's Mersenne Twister with the same seed."""
    from bench.methods.common.samplers import BalancedBatchSampler

    class _DS:  # the two index lists the upstream sampler reads
        normal_idx = np.arange(n_normal)
        outlier_idx = np.arange(n_normal, n_normal + n_anomaly)

    np.random.seed(seed)
    up = upstream_sampler_cls(cfg, _DS())
    up_batches = []
    it = iter(up)
    for _ in range(n_batches):
        try:
            up_batches.append(np.array(next(it)))
        except StopIteration:
            it = iter(up)
            up_batches.append(np.array(next(it)))
    ours = BalancedBatchSampler(n_normal, n_anomaly, cfg.batch_size, normal_slots,
                                np.random.RandomState(seed))
    our_batches = []
    for _ in range(n_batches):
        ni, ai = ours.next()
        our_batches.append(np.concatenate([ni, ai + n_normal]))
    comp_up = {(int((b < n_normal).sum()), int((b >= n_normal).sum())) for b in up_batches}
    comp_ours = {(int((b < n_normal).sum()), int((b >= n_normal).sum())) for b in our_batches}
    report(component, "batch composition (normal, labelled anomaly) slots", comp_up == comp_ours,
           f"upstream {sorted(comp_up)}, ours {sorted(comp_ours)}")
    same = all(np.array_equal(a, b) for a, b in zip(up_batches, our_batches))
    n_same = sum(np.array_equal(a, b) for a, b in zip(up_batches, our_batches))
    report(component, f"indices of {n_batches} batches, same numpy seed", same,
           f"{n_same} of {n_batches} batches identical")
    cu = np.bincount(np.concatenate(up_batches), minlength=n_normal + n_anomaly)
    co = np.bincount(np.concatenate(our_batches), minlength=n_normal + n_anomaly)
    report(component, f"draws per image over {n_batches} batches (normal: min–max; "
                      f"anomaly: min–max)", np.array_equal(cu, co),
           f"upstream {cu[:n_normal].min()}–{cu[:n_normal].max()}; "
           f"{cu[n_normal:].min()}–{cu[n_normal:].max()}, ours {co[:n_normal].min()}–"
           f"{co[:n_normal].max()}; {co[n_normal:].min()}–{co[n_normal:].max()}")
