"""On-device image pre-processing, augmentation and the CutMix pseudo anomaly.

The released code augments every image with PIL in CPU loader workers (methods.md §0.2,
§1.4). Here the harness hands methods decoded uint8 arrays once, and these functions do the
same operations batched on the method's device:

* :func:`to_float` — uint8 N×H×W×3 → float N×3×H×W in [0, 1];
* :func:`random_rotate` — the released code's ``RandomRotation(180)``: one angle per image,
  uniform in [−180°, 180°], nearest-neighbour, uncovered corners filled with 0 (black, i.e.
  applied *before* normalisation);
* :func:`cutmix` — DRA's CutMix pseudo anomaly (§1.4), on [0, 1] images before rotation;
* :func:`color_jitter` — torchvision ``ColorJitter`` semantics on [0, 1] float tensors;
* :func:`normalize` — ImageNet mean/std, always the last step.

Randomness: every random number comes from an explicit CPU ``torch.Generator`` (drawn on the
CPU, then moved to the data's device), never from a global RNG, so a run repeats exactly
under its seed whatever the device. Differences from the PIL pipeline: the rotation grid and
the colour jitter work on float values (PIL rounds to uint8 after each operation), and
rotation samples pixel centres with ``grid_sample`` (PIL's nearest-neighbour rotation may pick
a neighbouring pixel on some boundaries). Neither changes what the augmentation is.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale (used by contrast/saturation).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# CutMix constants of the released DRA code (methods.md §1.4).
CUTMIX_AREA = (0.02, 0.15)           # patch area as a fraction of the image area
CUTMIX_ASPECT = (0.3, 1 / 0.3)       # aspect ratio width/height, drawn log-uniformly
CUTMIX_JITTER = 0.1                  # brightness/contrast/saturation/hue of the patch jitter


def _check_images(x: torch.Tensor, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{what} expects a float tensor N×3×H×W, got shape {tuple(x.shape)}")


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    """n uniform draws in [low, high) from ``generator`` (on the CPU)."""
    return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low


def to_float(images: Union[np.ndarray, torch.Tensor],
             device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """uint8 images N×H×W×3 (numpy or torch, channels last as the harness delivers them) →
    float32 tensor N×3×H×W with values in [0, 1] on ``device`` (default: where they are).

    The uint8 data are moved first and converted on the device (4× less to transfer)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"to_float expects uint8 images N×H×W×3, got {images.dtype} "
                         f"{tuple(images.shape)}")
    if device is not None:
        images = images.to(device, non_blocking=True)
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of a float N×3×H×W tensor in [0, 1]."""
    _check_images(x, "normalize")
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# -- rotation -------------------------------------------------------------------------------
def rotate(x: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each image of N×C×H×W ``x`` about its centre by ``angles_deg[i]`` degrees
    (counter-clockwise as displayed, like PIL), nearest-neighbour, with 0 outside the source.

    Apply before :func:`normalize` so the uncovered corners are black, as in the released code.
    """
    if x.ndim != 4:
        raise ValueError(f"rotate expects N×C×H×W, got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    angles = torch.as_tensor(angles_deg, dtype=torch.float64).reshape(-1)
    if angles.numel() != n:
        raise ValueError(f"rotate got {angles.numel()} angles for {n} images")
    rad = angles * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # affine_grid maps each output location (normalised to [-1, 1] per axis) to the source
    # location it samples. For a rotation in pixel units on a non-square image the
    # normalisation differs per axis, hence the h/w factors. With y pointing down, sampling
    # at (cos·x − sin·y, sin·x + cos·y) turns the picture counter-clockwise on screen.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * h / w
    theta[:, 1, 0] = sin * w / h
    theta[:, 1, 1] = cos
    theta = theta.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    src = x if x.is_floating_point() else x.float()
    out = F.grid_sample(src, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out if x.is_floating_point() else out.to(x.dtype)


def random_rotate(x: torch.Tensor, generator: torch.Generator,
                  max_degrees: float = 180.0) -> torch.Tensor:
    """Rotate every image by its own angle, uniform in [−max_degrees, max_degrees]
    (methods.md §0.2: 180, applied to every training image). See :func:`rotate`."""
    angles = _uniform(generator, x.shape[0], -max_degrees, max_degrees)
    return rotate(x, angles)


# -- colour jitter -------------------------------------------------------------------------
def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(img: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    ratio = ratio.view(-1, 1, 1, 1)
    return (ratio * img + (1.0 - ratio) * other).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    safe_max = torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    s = delta / safe_max
    hr = ((g - b) / safe_delta) % 6.0
    hg = (b - r) / safe_delta + 2.0
    hb = (r - g) / safe_delta + 4.0
    # Ties resolve in the order r, g, b (any choice gives the same colour back).
    h = torch.where(maxc == r, hr, torch.where(maxc == g, hg, hb))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h)) % 1.0
    return torch.stack([h, s, maxc], dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x[:, 0], x[:, 1], x[:, 2]
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    # The six sectors of the hue circle, as (r, g, b) choices from (v, q, p, t).
    r = torch.stack([v, q, p, p, t, v], dim=1)
    g = torch.stack([t, v, v, q, p, p], dim=1)
    b = torch.stack([p, p, t, v, v, q], dim=1)
    idx = i.unsqueeze(1)
    return torch.cat([r.gather(1, idx), g.gather(1, idx), b.gather(1, idx)], dim=1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale every image of N×3×H×W ``x`` by its factor (torchvision semantics), clamp to [0,1]."""
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with the mean of its grayscale version (torchvision semantics)."""
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its grayscale version (torchvision semantics)."""
    return _blend(x, _gray(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each image's hue by ``shift[i]`` turns (in [−0.5, 0.5]; torchvision semantics)."""
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(hsv)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def apply_color_jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                       saturation: torch.Tensor, hue: torch.Tensor,
                       order: torch.Tensor) -> torch.Tensor:
    """Deterministic part of :func:`color_jitter`: per-image factors (shape N) and per-image
    order (N×4, a permutation of 0=brightness, 1=contrast, 2=saturation, 3=hue)."""
    _check_images(x, "color_jitter")
    dev = x.device
    factors = [t.to(device=dev, dtype=x.dtype) for t in (brightness, contrast, saturation, hue)]
    out = x.clone()
    order = order.cpu()
    for pos in range(4):
        for op in range(4):
            sel = torch.nonzero(order[:, pos] == op).flatten()
            if sel.numel() == 0:
                continue
            sel_dev = sel.to(dev)
            out[sel_dev] = _JITTER_OPS[op](out[sel_dev], factors[op][sel_dev])
    return out


def color_jitter(x: torch.Tensor, generator: torch.Generator, brightness: float = 0.1,
                 contrast: float = 0.1, saturation: float = 0.1,
                 hue: float = 0.1) -> torch.Tensor:
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` on a float N×3×H×W
    batch in [0, 1], with independent factors and a random operation order per image:
    brightness/contrast/saturation factors uniform in [1−v, 1+v], hue shift in [−hue, hue]."""
    for name, v in (("brightness", brightness), ("contrast", contrast),
                    ("saturation", saturation)):
        if not 0 <= v <= 1:
            raise ValueError(f"color_jitter {name}={v!r} must be in [0, 1]")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"color_jitter hue={hue!r} must be in [0, 0.5]")
    n = x.shape[0]
    order = torch.stack([torch.randperm(4, generator=generator) for _ in range(n)]) if n else \
        torch.zeros(0, 4, dtype=torch.long)
    b = _uniform(generator, n, 1 - brightness, 1 + brightness)
    c = _uniform(generator, n, 1 - contrast, 1 + contrast)
    s = _uniform(generator, n, 1 - saturation, 1 + saturation)
    h = _uniform(generator, n, -hue, hue)
    return apply_color_jitter(x, b, c, s, h, order)


# -- CutMix pseudo anomalies -----------------------------------------------------------------
class CutMixBox(NamedTuple):
    """A CutMix patch: its size and where it is cut from (src) and pasted to (dst), pixels."""

    h: int
    w: int
    src_y: int
    src_x: int
    dst_y: int
    dst_x: int


def cutmix_box(size: Union[int, tuple[int, int]], generator: torch.Generator) -> CutMixBox:
    """Draw one CutMix patch for an image of ``size`` (side, or (H, W)), methods.md §1.4:
    area A = U(0.02, 0.15)·H·W, aspect ρ = w/h log-uniform in [0.3, 1/0.3],
    w = round(√(A·ρ)), h = round(√(A/ρ)) (clipped to [1, side]); source and destination
    corners independent, each the floor of a uniform real in [0, side − patch]."""
    hh, ww = (size, size) if isinstance(size, int) else size
    if hh < 1 or ww < 1:
        raise ValueError(f"cutmix_box needs a positive image size, got {size!r}")
    r = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
    area = (CUTMIX_AREA[0] + r[0] * (CUTMIX_AREA[1] - CUTMIX_AREA[0])) * hh * ww
    lo, hi = math.log(CUTMIX_ASPECT[0]), math.log(CUTMIX_ASPECT[1])
    aspect = math.exp(lo + r[1] * (hi - lo))
    w = min(max(int(round(math.sqrt(area * aspect))), 1), ww)
    h = min(max(int(round(math.sqrt(area / aspect))), 1), hh)
    src_x, src_y = int(r[2] * (ww - w)), int(r[3] * (hh - h))
    dst_x, dst_y = int(r[4] * (ww - w)), int(r[5] * (hh - h))
    return CutMixBox(h, w, src_y, src_x, dst_y, dst_x)


def cutmix(x: torch.Tensor, generator: torch.Generator, *, return_boxes: bool = False,
           jitter: float = CUTMIX_JITTER):
    """DRA's CutMix pseudo anomaly (methods.md §1.4) on each image of a float N×3×H×W batch
    in [0, 1]: cut a random patch from the image itself, colour-jitter it (0.1 each) and
    paste it hard at an independent random position. Returns a new tensor (and the list of
    :class:`CutMixBox` when ``return_boxes``). Rotation/normalisation come afterwards."""
    _check_images(x, "cutmix")
    out = x.clone()
    boxes = []
    for i in range(x.shape[0]):
        box = cutmix_box((x.shape[2], x.shape[3]), generator)
        patch = x[i:i + 1, :, box.src_y:box.src_y + box.h, box.src_x:box.src_x + box.w]
        patch = color_jitter(patch, generator, jitter, jitter, jitter, jitter)
        out[i, :, box.dst_y:box.dst_y + box.h, box.dst_x:box.dst_x + box.w] = patch[0]
        boxes.append(box)
    return (out, boxes) if return_boxes else out


def train_transform(images_u8: torch.Tensor, generator: Optional[torch.Generator],
                    *, rotate_images: bool = True) -> torch.Tensor:
    """The released code's training transform on a uint8 N×H×W×3 batch already on its
    device: to [0, 1] → random ±180° rotation (if ``rotate_images``) → ImageNet normalisation."""
    x = to_float(images_u8)
    if rotate_images:
        if generator is None:
            raise ValueError("train_transform with rotation needs a torch.Generator")
        x = random_rotate(x, generator)
    return normalize(x)
