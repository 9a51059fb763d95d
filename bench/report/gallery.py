"""The paper's Fig. 4 for any prepared dataset: normal and anomalous example images of each
subset (``bench data gallery NAME``). The examples are the first images of the sorted file
lists (normal test images; one per anomaly class, in class order), so the figure is a pure
function of the data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import figures


def gallery_examples(names: list[str], data_root: Optional[Path] = None, *, per_row: int = 4,
                     size: int = 96, subsets: Optional[list[str]] = None) -> dict:
    """{"dataset/subset": [(uint8 image, class), ...]}: ``per_row`` normal test images and up
    to ``per_row`` anomalies (one per class first) of every subset of each dataset."""
    from ..datasets.base import default_data_root
    from ..datasets.images import load_image
    from ..datasets.layout import read_subset
    from ..plan import dataset_subsets, resolve_dataset

    root_dir = Path(data_root).expanduser() if data_root else default_data_root()
    out = {}
    for name in names:
        ds = resolve_dataset(name)
        root = ds.locate(root_dir)   # a clear error naming the command that prepares it
        for sub in dataset_subsets(ds, root, subsets):
            index = read_subset(root, sub)
            normal = [(load_image(root / p, size), "good") for p in index.test_good[:per_row]]
            picks, depth = [], 0
            while len(picks) < per_row and any(depth < len(v) for v in index.anomalies.values()):
                for c in index.classes:
                    if depth < len(index.anomalies[c]) and len(picks) < per_row:
                        picks.append((load_image(root / index.anomalies[c][depth], size), c))
                depth += 1
            label = ds.label
            out[f"{label}/{sub}" if label != sub else sub] = normal + picks
    return out


def write_gallery(names: list[str], out: Path | str, data_root: Optional[Path] = None, *,
                  per_row: int = 4, size: int = 96, subsets: Optional[list[str]] = None,
                  formats=figures.FORMATS) -> list[Path]:
    return figures.gallery(gallery_examples(names, data_root, per_row=per_row, size=size,
                                            subsets=subsets), out, formats=formats)
