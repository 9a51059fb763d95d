"""Hyper-Kvasir converter on a tiny fake labeled-images tree."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.convert import ConversionError
from bench.datasets.layout import dataset_fingerprint, read_subset
from bench.registry import get_dataset

LANDMARKS = {"pylorus": ["a1", "a2"], "retroflex-stomach": ["b1"], "z-line": ["c1", "c2", "c3"]}
FINDINGS = {"barretts": ["f1"], "barretts-short-segment": ["f2", "f3"], "esophagitis-a": ["f4"],
            "esophagitis-b-d": ["f5"]}


def make_raw(root: Path) -> Path:
    gi = root / "labeled-images" / "upper-gi-tract"
    n = 0
    for group, folders in (("anatomical-landmarks", LANDMARKS),
                           ("pathological-findings", FINDINGS)):
        for folder, names in folders.items():
            (gi / group / folder).mkdir(parents=True)
            for name in names:
                n += 1
                Image.fromarray(np.full((5, 7, 3), 9 * n, np.uint8)).save(
                    gi / group / folder / f"{name}.jpg")
    (root / "labeled-images" / "lower-gi-tract").mkdir()
    return root


def test_convert_layout_counts(tmp_path):
    raw = make_raw(tmp_path / "raw")
    res = get_dataset("hyper_kvasir").prepare(raw, tmp_path / "a")
    idx = read_subset(tmp_path / "a", "hyperkvasir")
    assert (len(idx.train_good), len(idx.test_good)) == (4, 2)   # 6 landmarks pooled
    assert sorted(Path(p).stem for p in idx.train_good + idx.test_good) == \
        ["a1", "a2", "b1", "c1", "c2", "c3"]
    assert {c: [Path(p).stem for p in v] for c, v in idx.anomalies.items()} == FINDINGS
    assert res.warnings == []
    get_dataset("hyper_kvasir").prepare(raw, tmp_path / "b")
    assert dataset_fingerprint([idx]) == dataset_fingerprint(
        [read_subset(tmp_path / "b", "hyperkvasir")])


def test_bad_inputs(tmp_path):
    raw = make_raw(tmp_path / "raw")
    gi = raw / "labeled-images" / "upper-gi-tract"
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(gi / "anatomical-landmarks" / "z-line" / "a1.jpg")
    with pytest.raises(ConversionError, match=r"two raw files map to the same output .*a1.jpg"):
        get_dataset("hyper_kvasir").prepare(raw, tmp_path / "o")
    import shutil
    shutil.rmtree(gi / "pathological-findings")
    with pytest.raises(ConversionError, match=r"missing folder .*pathological-findings"):
        get_dataset("hyper_kvasir").prepare(raw, tmp_path / "o")
