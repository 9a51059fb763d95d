"""CutPaste pseudo anomalies (Li, Sohn, Yoon, Pfister, "CutPaste: Self-Supervised Learning for
Anomaly Detection and Localization", CVPR 2021), batched on the images' device.

DRA's Table 4 compares pseudo-anomaly sources: CutMix (DRA's default, methods.md §1.4),
CutPaste-Scar ("CP-Scar") and CutPaste-Mix ("CP-Mix", "utilizes both CutMix and CP-Scar").
The DRA release only contains CutMix, so Scar and Mix are implemented here from the CutPaste
paper's definitions (and the hyper-parameters of its public reference implementation), not
from any DRA code:

* **CutPaste (normal)**: cut a rectangle of area U(0.02, 0.15)·H·W, aspect ratio
  log-uniform in [0.3, 1/0.3], from the image itself, colour-jitter it (brightness,
  contrast, saturation, hue 0.1) and paste it hard at an independent random position. This
  is exactly DRA's "CutMix" (same constants), so :func:`cutpaste_normal` *is*
  :func:`bench.methods.common.augment.cutmix` and is not re-implemented.
* **CutPaste-Scar** (:func:`cutpaste_scar`): a thin rectangle of width U(2, 16) px and length
  U(10, 25) px (CutPaste's values at 256 px; here multiplied by side/256 so a scar covers the
  same fraction of the image at any resolution, with a floor of 1 px), cut from a random
  position of the image itself, colour-jittered as above, rotated by U(−45°, 45°) about its
  centre (nearest neighbour, like PIL's default ``rotate``) and pasted so that the bounding
  box of the rotated scar lies at a uniformly random position inside the image. Only the
  pixels covered by the rotated rectangle change (CutPaste pastes through the rotated alpha
  mask). As in CutPaste the width runs along x and the length along y before rotation.
* **CutPaste-Mix** (:func:`cutpaste_mix`): each image independently gets CutPaste (normal) or
  Scar with probability 1/2 (CutPaste's "union" of the two, which is how the DRA paper
  describes CP-Mix).

All random numbers come from an explicit CPU ``torch.Generator`` (as in ``augment``), so a
run repeats exactly under its seed on any device. Inputs and outputs are float N×3×H×W in
[0, 1], before rotation and normalisation.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Union

import torch

from .augment import CUTMIX_JITTER, color_jitter, cutmix

# CutPaste-Scar constants (Li et al. 2021) in pixels at the reference side below.
SCAR_WIDTH = (2.0, 16.0)
SCAR_LENGTH = (10.0, 25.0)
SCAR_ANGLE = (-45.0, 45.0)          # degrees
SCAR_REFERENCE_SIDE = 256           # the CutPaste paper's image size

# The synthetic pseudo-anomaly kinds this module can make (see :func:`synthesize`).
SYNTHETIC_KINDS = ("cutmix", "cutpaste_scar", "cutpaste_mix")

cutpaste_normal = cutmix  # identical definition (see the module docstring)


class ScarBox(NamedTuple):
    """One scar: patch size (h = length, w = width, pixels), where it is cut from, its
    rotation (degrees, counter-clockwise on screen) and the top-left corner and size of the
    rotated patch's bounding box at the destination."""

    h: int
    w: int
    src_y: int
    src_x: int
    angle: float
    dst_y: int
    dst_x: int
    box_h: int
    box_w: int


def _rotated_extent(h: int, w: int, angle_deg: float) -> tuple[int, int]:
    """Height and width (pixels) of the bounding box of an h×w rectangle rotated by angle."""
    a = math.radians(angle_deg)
    c, s = abs(math.cos(a)), abs(math.sin(a))
    return math.ceil(h * c + w * s - 1e-9), math.ceil(h * s + w * c - 1e-9)


def scar_box(size: Union[int, tuple[int, int]], generator: torch.Generator) -> ScarBox:
    """Draw one CutPaste-Scar for an image of ``size`` (side, or (H, W)); see the module
    docstring for the distributions."""
    hh, ww = (size, size) if isinstance(size, int) else size
    if hh < 1 or ww < 1:
        raise ValueError(f"scar_box needs a positive image size, got {size!r}")
    scale = min(hh, ww) / SCAR_REFERENCE_SIDE
    r = torch.rand(7, generator=generator, dtype=torch.float64).tolist()
    w = SCAR_WIDTH[0] + r[0] * (SCAR_WIDTH[1] - SCAR_WIDTH[0])
    h = SCAR_LENGTH[0] + r[1] * (SCAR_LENGTH[1] - SCAR_LENGTH[0])
    w = min(max(int(round(w * scale)), 1), ww)
    h = min(max(int(round(h * scale)), 1), hh)
    src_x, src_y = int(r[2] * (ww - w)), int(r[3] * (hh - h))
    angle = SCAR_ANGLE[0] + r[4] * (SCAR_ANGLE[1] - SCAR_ANGLE[0])
    box_h, box_w = _rotated_extent(h, w, angle)
    box_h, box_w = min(box_h, hh), min(box_w, ww)
    dst_x, dst_y = int(r[5] * (ww - box_w)), int(r[6] * (hh - box_h))
    return ScarBox(h, w, src_y, src_x, angle, dst_y, dst_x, box_h, box_w)


def _paste_rotated(out: torch.Tensor, patch: torch.Tensor, box: ScarBox) -> None:
    """Paste the C×h×w ``patch`` into C×H×W ``out`` (in place), rotated by ``box.angle`` about
    its centre and centred in the destination bounding box; nearest neighbour, only where the
    rotated rectangle covers a pixel centre."""
    dev = out.device
    ys = torch.arange(box.box_h, device=dev, dtype=torch.float64) + 0.5 - box.box_h / 2
    xs = torch.arange(box.box_w, device=dev, dtype=torch.float64) + 0.5 - box.box_w / 2
    dy, dx = torch.meshgrid(ys, xs, indexing="ij")
    a = math.radians(box.angle)
    c, s = math.cos(a), math.sin(a)
    # Screen coordinates have y pointing down; a counter-clockwise turn on screen maps patch
    # coordinates (u, v) to (u·c + v·s, −u·s + v·c). Invert it to find each destination
    # pixel's source location in the un-rotated patch.
    u = dx * c - dy * s + box.w / 2
    v = dx * s + dy * c + box.h / 2
    inside = (u >= 0) & (u < box.w) & (v >= 0) & (v < box.h)
    ui = u.floor().clamp(0, box.w - 1).long()
    vi = v.floor().clamp(0, box.h - 1).long()
    region = out[:, box.dst_y:box.dst_y + box.box_h, box.dst_x:box.dst_x + box.box_w]
    sampled = patch[:, vi, ui]
    region.copy_(torch.where(inside.unsqueeze(0), sampled.to(region.dtype), region))


def cutpaste_scar(x: torch.Tensor, generator: torch.Generator, *, return_boxes: bool = False,
                  jitter: float = CUTMIX_JITTER):
    """CutPaste-Scar on each image of a float N×3×H×W batch in [0, 1] (module docstring).
    Returns a new tensor (and the list of :class:`ScarBox` when ``return_boxes``)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"cutpaste_scar expects a float tensor N×3×H×W, got {tuple(x.shape)}")
    out = x.clone()
    boxes = []
    for i in range(x.shape[0]):
        box = scar_box((x.shape[2], x.shape[3]), generator)
        patch = x[i:i + 1, :, box.src_y:box.src_y + box.h, box.src_x:box.src_x + box.w]
        patch = color_jitter(patch, generator, jitter, jitter, jitter, jitter)[0]
        _paste_rotated(out[i], patch, box)
        boxes.append(box)
    return (out, boxes) if return_boxes else out


def cutpaste_mix(x: torch.Tensor, generator: torch.Generator, *, p_scar: float = 0.5,
                 return_choice: bool = False):
    """CutPaste-Mix: each image independently gets CutPaste-Scar with probability ``p_scar``,
    else CutPaste (normal) = DRA's CutMix. Returns a new tensor (and the boolean per-image
    "scar" choice when ``return_choice``)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"cutpaste_mix expects a float tensor N×3×H×W, got {tuple(x.shape)}")
    scar = torch.rand(x.shape[0], generator=generator, dtype=torch.float64) < p_scar
    out = x.clone()
    sel = torch.nonzero(scar).flatten()
    rest = torch.nonzero(~scar).flatten()
    if sel.numel():
        out[sel.to(x.device)] = cutpaste_scar(x[sel.to(x.device)], generator)
    if rest.numel():
        out[rest.to(x.device)] = cutpaste_normal(x[rest.to(x.device)], generator)
    return (out, scar) if return_choice else out


def synthesize(kind: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pseudo anomalies of ``kind`` (one of :data:`SYNTHETIC_KINDS`) made from the float
    N×3×H×W images ``x`` in [0, 1]."""
    if kind == "cutmix":
        return cutmix(x, generator)
    if kind == "cutpaste_scar":
        return cutpaste_scar(x, generator)
    if kind == "cutpaste_mix":
        return cutpaste_mix(x, generator)
    raise ValueError(f"unknown synthetic pseudo-anomaly kind {kind!r}; known: "
                     f"{', '.join(SYNTHETIC_KINDS)}")
