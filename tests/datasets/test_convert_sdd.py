"""SDD (KolektorSDD) converter on tiny fake parts: thirds relabelled by their mask."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.convert import ConversionError
from bench.datasets.layout import dataset_fingerprint, read_subset
from bench.registry import get_dataset

H, W = 10, 6  # thirds: rows [0,3), [3,6), [6,10)


def part(folder: Path, name: str, seed: int, defect_rows=(), mask_shape=(H, W)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 255, (H, W), dtype=np.uint8)).save(folder / f"{name}.jpg")
    m = np.zeros(mask_shape, np.uint8)
    for r in defect_rows:
        m[r, 1] = 255
    Image.fromarray(m).save(folder / f"{name}_label.bmp")


def make_raw(root: Path) -> Path:
    part(root / "kos01", "Part0", 1)
    part(root / "kos01", "Part1", 2, defect_rows=[8])       # third 2 defective
    part(root / "kos02", "Part0", 3, defect_rows=[0, 4])    # thirds 0 and 1
    part(root / "kos02", "Part1", 4)
    return root


def test_convert_layout_counts(tmp_path):
    raw = make_raw(tmp_path / "raw" / "KolektorSDD")
    res = get_dataset("sdd").prepare(tmp_path / "raw", tmp_path / "a")  # wrapper folder found
    idx = read_subset(tmp_path / "a", "SDD")
    assert [Path(p).name for p in idx.anomalies["defect"]] == [
        "kos01_Part1_2.png", "kos02_Part0_0.png", "kos02_Part0_1.png"]
    normals = sorted(Path(p).name for p in idx.train_good + idx.test_good)
    assert normals == sorted(["kos01_Part0_0.png", "kos01_Part0_1.png", "kos01_Part0_2.png",
                              "kos01_Part1_0.png", "kos01_Part1_1.png", "kos02_Part0_2.png",
                              "kos02_Part1_0.png", "kos02_Part1_1.png", "kos02_Part1_2.png"])
    assert (len(idx.train_good), len(idx.test_good)) == (6, 3)  # 9 normal thirds, 25 % → 3
    assert res.counts == {"SDD": {"train_good": 6, "test_good": 3, "anomalies": {"defect": 3}}}
    seg = np.asarray(Image.open(tmp_path / "a" / "SDD" / "test" / "defect" / "kos01_Part1_2.png"))
    assert seg.shape == (4, W, 3)  # the last third takes the remainder rows
    assert (tmp_path / "a" / "SDD" / "ground_truth" / "defect" / "kos01_Part1_2_mask.png").is_file()
    get_dataset("sdd").prepare(raw, tmp_path / "b")
    assert dataset_fingerprint([idx]) == dataset_fingerprint([read_subset(tmp_path / "b", "SDD")])


def test_shape_mismatch_names_both_files(tmp_path):
    raw = make_raw(tmp_path / "raw")
    part(raw / "kos03", "Part5", 5, mask_shape=(H + 2, W))
    with pytest.raises(ConversionError, match=r"kos03/Part5\.jpg is 6×10 but its mask "
                                              r".*kos03/Part5_label\.bmp is 6×12"):
        get_dataset("sdd").prepare(raw, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_missing_mask_and_orphan_mask(tmp_path):
    raw = make_raw(tmp_path / "raw")
    (raw / "kos02" / "Part1_label.bmp").unlink()
    with pytest.raises(ConversionError, match=r"Part1\.jpg has no mask .*Part1_label\.bmp"):
        get_dataset("sdd").prepare(raw, tmp_path / "o")
    raw = make_raw(tmp_path / "raw2")
    (raw / "kos02" / "Part1.jpg").unlink()
    with pytest.raises(ConversionError, match=r"mask .*Part1_label\.bmp has no image"):
        get_dataset("sdd").prepare(raw, tmp_path / "o")
