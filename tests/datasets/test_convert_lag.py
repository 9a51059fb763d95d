"""LAG outlier-source converter: <root>/LAG/train/good/, groups selectable and recorded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.commands import check_dataset
from bench.datasets.convert import ConversionError
from bench.registry import get_dataset


def make_raw(root: Path) -> Path:
    for g, names in (("non_glaucoma", ["n1", "n2"]), ("suspicious_glaucoma", ["s1"])):
        (root / "LAG" / g / "image").mkdir(parents=True)
        (root / "LAG" / g / "attention_map").mkdir(parents=True)
        for i, n in enumerate(names):
            Image.fromarray(np.full((6, 6, 3), 40 * i + len(g), np.uint8)).save(
                root / "LAG" / g / "image" / f"{n}.jpg")
            Image.fromarray(np.zeros((6, 6), np.uint8)).save(
                root / "LAG" / g / "attention_map" / f"{n}.jpg")
    return root


def test_convert_layout(tmp_path):
    raw = make_raw(tmp_path / "raw")
    ds = get_dataset("lag")
    res = ds.prepare(raw, ds.root(tmp_path / "data"))
    good = tmp_path / "data" / "lag" / "LAG" / "train" / "good"
    assert sorted(p.name for p in good.iterdir()) == [
        "non_glaucoma_n1.jpg", "non_glaucoma_n2.jpg", "suspicious_glaucoma_s1.jpg"]
    assert res.counts == {"LAG": {"train_good": 3}}
    rep = check_dataset(ds, tmp_path / "data")
    assert rep.errors == [] and rep.fingerprint.startswith("3-")
    # deterministic: a second conversion has the same fingerprint
    ds.prepare(raw, ds.root(tmp_path / "data2"))
    assert check_dataset(ds, tmp_path / "data2").fingerprint == rep.fingerprint


def test_groups_option_and_errors(tmp_path):
    raw = make_raw(tmp_path / "raw")
    ds = get_dataset("lag")
    out = tmp_path / "o"
    ds.prepare(raw, out, lag_groups="non_glaucoma")
    assert len(list((out / "LAG" / "train" / "good").iterdir())) == 2
    assert json.loads((out / ".prepared").read_text())["options"]["lag_groups"] == ["non_glaucoma"]
    with pytest.raises(ConversionError, match=r"lag_groups glaucoma not valid"):
        ds.prepare(raw, tmp_path / "o2", lag_groups="glaucoma")
    with pytest.raises(ConversionError, match=r"expected folders non_glaucoma/ and/or "
                                              r"suspicious_glaucoma/"):
        ds.prepare(tmp_path / "raw" / "LAG" / "non_glaucoma", tmp_path / "o3")
