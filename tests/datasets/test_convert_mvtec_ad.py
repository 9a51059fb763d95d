"""MVTec AD 'converter' (validated copy) on two tiny fake categories."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.commands import check_dataset
from bench.datasets.convert import ConversionError
from bench.datasets.layout import dataset_fingerprint, read_subset
from bench.registry import get_dataset


def png(path: Path, value: int, rgb=True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (6, 6, 3) if rgb else (6, 6)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def make_raw(root: Path) -> Path:
    v = 0
    for cat, classes in (("carpet", ["color", "cut"]), ("metal_nut", ["bent", "flip"])):
        for split, n in (("train", 3), ("test", 2)):
            for i in range(n):
                v += 1
                png(root / cat / split / "good" / f"{i:03d}.png", v, rgb=cat == "carpet")
        for c in classes:
            for i in range(2):
                v += 1
                png(root / cat / "test" / c / f"{i:03d}.png", v)
                png(root / cat / "ground_truth" / c / f"{i:03d}_mask.png", 255, rgb=False)
    (root / "license.txt").write_text("CC BY-NC-SA 4.0")
    return root


def test_convert_selection(tmp_path):
    raw = make_raw(tmp_path / "raw" / "mvtec_anomaly_detection")
    ds = get_dataset("mvtec_ad")
    res = ds.prepare(tmp_path / "raw", ds.root(tmp_path / "data"),
                     categories="carpet,metal_nut")
    root = tmp_path / "data" / "mvtec_ad"
    assert res.counts == {
        "carpet": {"train_good": 3, "test_good": 2, "anomalies": {"color": 2, "cut": 2}},
        "metal_nut": {"train_good": 3, "test_good": 2, "anomalies": {"bent": 2, "flip": 2}}}
    idx = read_subset(root, "carpet")
    assert idx.masks["carpet/test/cut/001.png"] == "carpet/ground_truth/cut/001_mask.png"
    assert (root / "carpet/train/good/000.png").read_bytes() == \
        (raw / "carpet/train/good/000.png").read_bytes()
    assert ds.expected_subsets(tmp_path / "data") == ["carpet", "metal_nut"]
    rep = check_dataset(ds, tmp_path / "data")
    # tiny fake: counts differ from Table 5 and hard classes are missing → errors, no crash
    assert any("carpet train_good: expected 280, found 3" in e for e in rep.errors)
    assert any("hard-setting known class 'hole'" in e for e in rep.errors)
    assert any("only a selection of the subsets" in w for w in rep.warnings)
    ds.prepare(raw, tmp_path / "b", categories=["metal_nut", "carpet"], link=True)
    assert dataset_fingerprint([idx, read_subset(root, "metal_nut")]) == dataset_fingerprint(
        [read_subset(tmp_path / "b", "carpet"), read_subset(tmp_path / "b", "metal_nut")])


def test_bad_inputs(tmp_path):
    raw = make_raw(tmp_path / "raw")
    ds = get_dataset("mvtec_ad")
    with pytest.raises(ConversionError, match=r"categories grid, leather, .* missing under .*"
                                              r"--option categories=a,b"):
        ds.prepare(raw, tmp_path / "o")
    with pytest.raises(ConversionError, match=r"unknown MVTec AD category carpt"):
        ds.prepare(raw, tmp_path / "o", categories="carpt")
    png(raw / "carpet" / "ground_truth" / "cut" / "009_mask.png", 255, rgb=False)
    with pytest.raises(ConversionError, match=r"mask .*009_mask.png has no image"):
        ds.prepare(raw, tmp_path / "o", categories="carpet")
    with pytest.raises(ConversionError, match=r"unknown option\(s\) colour"):
        ds.prepare(raw, tmp_path / "o", colour=1)
    assert not (tmp_path / "o").exists()
