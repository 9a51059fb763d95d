"""External outlier sources (``--outliers NAME|PATH``): LAG for the medical datasets, MVTec AD
for the Table 4 ablation and SAOE, or any folder laid out as ``<root>/<X>/train/good/``.

The pool is every image under ``<X>/train/good/`` of every ``<X>`` except the target's own
category (and any explicitly excluded ones) — the released code only skips the folder named
like the target class; overlapping data must be excluded by name (datasets.md §1.10–§1.11).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .images import is_image_file
from .layout import LayoutError, _HashCache, content_fingerprint


@dataclass
class OutlierPool:
    root: Path
    paths: list[str]          # relative to root, sorted (category, then name)
    excluded: list[str]       # category folders left out
    fingerprint: str
    # (category, its paths, their fingerprint): the unit the decoded-image cache keeps
    groups: list[tuple[str, list[str], str]] = field(default_factory=list)

    def describe(self) -> str:
        cats = [c for c, _, _ in self.groups]
        shown = ", ".join(cats[:4]) + (f" and {len(cats) - 4} more" if len(cats) > 4 else "")
        out = f" without {', '.join(self.excluded)}" if self.excluded else ""
        return (f"{len(self.paths)} images of {len(cats)} categor"
                f"{'y' if len(cats) == 1 else 'ies'} ({shown}) from {self.root}{out}, "
                f"fingerprint {self.fingerprint}")


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
    cache = _HashCache(root)
    groups, pairs = [], []
    for c in cats:
        if c in excl:
            continue
        paths = [f"{c}/train/good/{p.name}"
                 for p in sorted((root / c / "train" / "good").iterdir(), key=lambda q: q.name)
                 if p.is_file() and is_image_file(p)]
        if not paths:
            continue
        mine = [(rel, cache.get(root, rel)) for rel in paths]
        groups.append((c, paths, content_fingerprint(mine)))
        pairs += mine
    cache.save()
    if not pairs:
        raise LayoutError(f"outlier source {root} holds no image once {', '.join(excl)} "
                          f"{'is' if len(excl) == 1 else 'are'} excluded")
    return OutlierPool(root, [rel for rel, _ in pairs], [c for c in cats if c in excl],
                       content_fingerprint(pairs), groups)
