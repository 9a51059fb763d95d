"""Decoding one image file into a 3-channel 8-bit RGB array, the same way every time.

Rules (datasets.md §0 and §4): grayscale is replicated to three channels; palette images
are converted; RGBA/LA drop alpha; CMYK becomes RGB; 16-bit and 32-bit integer and float
images are rescaled by their dtype range (a plain PIL RGB conversion would saturate them);
``.npy`` files must be H×W×C with C ≥ 3 (channels 0–2 are used; floats in [0, 1] are scaled
by 255, values outside [0, 255] are an error rather than the original code's silent wrap).
Resizing to a square ``size × size`` is bilinear, as torchvision's default ``Resize`` on a PIL
image in the released code (aspect ratio not kept).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")

# Bump whenever a rule below changes the pixels a file decodes to (mode conversion, 16-bit
# scaling, the .npy rules, resizing). It is part of the decoded-image cache key and of every
# run id, so arrays and results made by an older decoder are never reused.
DECODER_VERSION = "1"


class ImageDecodeError(ValueError):
    """A file that cannot be decoded into an image; the message names the file."""


def is_image_file(path: Path) -> bool:
    """Image by extension (any letter case); hidden files (``.x``, ``._x``) are not images."""
    name = path.name
    return (not name.startswith(".")) and path.suffix.lower() in IMAGE_EXTENSIONS


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min < 0:  # signed: map the dtype range linearly
            scaled = (arr.astype(np.float64) - info.min) / (info.max - info.min) * 255.0
        else:
            scaled = arr.astype(np.float64) / info.max * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ImageDecodeError(f"{path}: image holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
        elif lo < 0.0 or hi > 255.0:
            raise ImageDecodeError(
                f"{path}: float image values span [{lo:.3g}, {hi:.3g}], outside [0, 1] and "
                f"[0, 255]; rescale it to one of these ranges before benchmarking")
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    raise ImageDecodeError(f"{path}: unsupported pixel type {arr.dtype}")


def _decode_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ImageDecodeError(f"{path}: cannot read .npy array ({exc})") from exc
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ImageDecodeError(f"{path}: .npy image must be H×W×C with C >= 3, got shape "
                               f"{arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) > 1.0:
        # 0–255 scale floats (Mastcam): truncate as the released loader does, after a range check
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            raise ImageDecodeError(f"{path}: .npy values span [{lo:.3g}, {hi:.3g}], outside "
                                   f"[0, 255]")
        return np.ascontiguousarray(arr[..., :3].astype(np.uint8))
    return np.ascontiguousarray(_to_uint8(arr[..., :3], path))


def _decode_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decode fully: truncated files fail here, not later in training
            mode = im.mode
            if mode in ("RGB",):
                return np.asarray(im, dtype=np.uint8).copy()
            if mode in ("L", "1"):
                g = np.asarray(im.convert("L"), dtype=np.uint8)
                return np.repeat(g[..., None], 3, axis=2)
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                g = np.asarray(im)
                if mode.startswith("I;16"):
                    g = g.astype(np.uint16)
                g = _to_uint8(g, path)
                return np.repeat(g[..., None], 3, axis=2)
            if mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "La",
                        "RGBa"):
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
            raise ImageDecodeError(f"{path}: unsupported image mode {mode!r}")
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc}); replace or remove "
                               f"the file") from exc


def decode_image(path: Path | str) -> np.ndarray:
    """Decode ``path`` into a uint8 H×W×3 RGB array, or raise :class:`ImageDecodeError`."""
    path = Path(path)
    if not path.is_file():
        raise ImageDecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageDecodeError(f"{path}: file is empty (0 bytes)")
    if path.suffix.lower() == ".npy":
        return _decode_npy(path)
    return _decode_pil(path)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear square resize with PIL (the released code's torchvision ``Resize`` on PIL)."""
    from PIL import Image

    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def load_image(path: Path | str, size: int) -> np.ndarray:
    """Decode and square-resize one image to ``size × size``."""
    return resize_square(decode_image(path), size)
