"""External outlier sources (``--outliers NAME|PATH``): LAG for the medical datasets, MVTec AD
for the Table 4 ablation and SAOE, or any folder laid out as ``<root>/<X>/train/good/``.

The pool is every image under ``<X>/train/good/`` of every ``<X>`` except the target's own
category (and any explicitly excluded ones) — the released code only skips the folder named
like the target class; overlapping data must be excluded by name (datasets.md §1.10–§1.11).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .images import is_image_file
from .layout import LayoutError, _HashCache


@dataclass
class OutlierPool:
    root: Path
    paths: list[str]          # relative to root, sorted
    excluded: list[str]       # category folders left out
    fingerprint: str


def outlier_pool(root: Path, exclude: Iterable[str] = ()) -> OutlierPool:
    """List the outlier images under ``root``, leaving out the categories in ``exclude``."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"outlier source {root} does not exist")
    excl = sorted(set(exclude))
    cats = sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "train" / "good").is_dir())
    if not cats:
        raise LayoutError(f"outlier source {root} has no <category>/train/good/ folder; lay it "
                          f"out like MVTec AD (`bench data prepare lag` does this for LAG)")
    used = [c for c in cats if c not in excl]
    paths = [f"{c}/train/good/{p.name}" for c in used
             for p in sorted((root / c / "train" / "good").iterdir(), key=lambda q: q.name)
             if p.is_file() and is_image_file(p)]
    if not paths:
        raise LayoutError(f"outlier source {root} holds no image once {', '.join(excl)} "
                          f"{'is' if len(excl) == 1 else 'are'} excluded")
    cache = _HashCache(root)
    h = hashlib.sha256()
    for rel in paths:
        h.update(f"{rel}\0{cache.get(root, rel)}\n".encode())
    cache.save()
    return OutlierPool(root, paths, [c for c in cats if c in excl],
                       f"{len(paths)}-{h.hexdigest()[:16]}")
