"""Mastcam converter on tiny fake .npy tiles: the dataset's own split, test_novel/all never
copied, validation_typical unused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.datasets.convert import ConversionError
from bench.datasets.images import decode_image
from bench.datasets.layout import dataset_fingerprint, read_subset
from bench.registry import get_dataset


def tile(path: Path, seed: int, shape=(4, 4, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.random.RandomState(seed).uniform(0, 255, shape))  # float64, 0–255 scale


def make_raw(root: Path) -> Path:
    for i in range(3):
        tile(root / "train_typical" / f"t{i}.npy", i)
    for i in range(2):
        tile(root / "test_typical" / f"u{i}.npy", 10 + i)
    tile(root / "validation_typical" / "v0.npy", 20)
    tile(root / "test_novel" / "bedrock" / "b0.npy", 30)
    tile(root / "test_novel" / "bedrock" / "b1.npy", 31)
    tile(root / "test_novel" / "drt" / "d0.npy", 32)
    tile(root / "test_novel" / "veins" / "b1.npy", 31)  # a multi-label frame: same bytes
    for name in ("b0", "b1", "d0"):
        tile(root / "test_novel" / "all" / f"{name}.npy", 30)
    return root


def test_convert_layout_counts(tmp_path):
    raw = make_raw(tmp_path / "raw")
    res = get_dataset("mastcam").prepare(raw, tmp_path / "a")
    root = tmp_path / "a"
    idx = read_subset(root, "mastcam")
    assert [Path(p).name for p in idx.train_good] == ["t0.npy", "t1.npy", "t2.npy"]
    assert [Path(p).name for p in idx.test_good] == ["u0.npy", "u1.npy"]
    assert {c: [Path(p).name for p in v] for c, v in idx.anomalies.items()} == {
        "bedrock": ["b0.npy", "b1.npy"], "drt": ["d0.npy"], "veins": ["b1.npy"]}
    assert not (root / "mastcam" / "test" / "all").exists()
    assert not any("validation" in str(p) or "/all/" in str(p) for p in root.rglob("*"))
    assert res.counts["mastcam"]["anomalies"] == {"bedrock": 2, "drt": 1, "veins": 1}
    # copied byte for byte, decodes to bands 0–2
    assert (root / "mastcam/train/good/t0.npy").read_bytes() == \
        (raw / "train_typical/t0.npy").read_bytes()
    assert decode_image(root / "mastcam/train/good/t0.npy").shape == (4, 4, 3)
    get_dataset("mastcam").prepare(raw, tmp_path / "b")
    assert dataset_fingerprint([idx]) == dataset_fingerprint([read_subset(tmp_path / "b", "mastcam")])


def test_bad_inputs(tmp_path):
    raw = make_raw(tmp_path / "raw")
    tile(raw / "test_novel" / "drt" / "d9.npy", 9, shape=(4, 4))
    with pytest.raises(ConversionError, match=r"d9\.npy: Mastcam tiles must be H×W×C"):
        get_dataset("mastcam").prepare(raw, tmp_path / "o")
    raw = make_raw(tmp_path / "raw2")
    import shutil
    shutil.rmtree(raw / "test_novel")
    with pytest.raises(ConversionError, match=r"missing folder .*test_novel"):
        get_dataset("mastcam").prepare(raw, tmp_path / "o")
