"""HeadCT converter on a tiny fake labels.csv + head_ct/head_ct/NNN.png."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.convert import ConversionError, seeded_split_indices
from bench.datasets.layout import dataset_fingerprint, read_subset
from bench.registry import get_dataset

LABELS = [(0, 1), (1, 0), (2, 0), (3, 1), (4, 0), (5, 0), (6, 0), (7, 1), (8, 0)]


def make_raw(root: Path, labels=LABELS, header="id, hemorrhage") -> Path:
    img = root / "head_ct" / "head_ct"
    img.mkdir(parents=True)
    for i, _ in labels:
        Image.fromarray(np.full((6, 6), 10 + 20 * i, np.uint8)).save(img / f"{i:03d}.png")
    (root / "labels.csv").write_text(header + "\n" + "\n".join(f"{i},{l}" for i, l in labels) + "\n")
    return root


def test_convert_layout_counts(tmp_path):
    raw = make_raw(tmp_path / "raw")
    res = get_dataset("headct").prepare(raw, tmp_path / "a")
    idx = read_subset(tmp_path / "a", "headct")
    normal = [f"{i:03d}.png" for i, l in LABELS if l == 0]       # csv order
    tr, te = seeded_split_indices(len(normal))
    assert [Path(p).name for p in idx.train_good] == sorted(normal[i] for i in tr)
    assert [Path(p).name for p in idx.test_good] == sorted(normal[i] for i in te)
    assert (len(idx.train_good), len(idx.test_good)) == (4, 2)
    assert [Path(p).name for p in idx.anomalies["defect"]] == ["000.png", "003.png", "007.png"]
    assert res.counts["headct"]["anomalies"] == {"defect": 3}
    get_dataset("headct").prepare(raw, tmp_path / "b")
    assert dataset_fingerprint([idx]) == dataset_fingerprint([read_subset(tmp_path / "b", "headct")])


def test_bad_label_and_missing_slice(tmp_path):
    raw = make_raw(tmp_path / "raw", LABELS[:-1] + [(8, 2)])
    with pytest.raises(ConversionError, match=r"labels.csv:10: unknown label '2' for id 8"):
        get_dataset("headct").prepare(raw, tmp_path / "o")
    raw = make_raw(tmp_path / "raw2")
    (raw / "head_ct" / "head_ct" / "004.png").unlink()
    with pytest.raises(ConversionError, match=r"missing file .*head_ct/head_ct/004.png"):
        get_dataset("headct").prepare(raw, tmp_path / "o")
