"""AITEX converter on tiny fake strips (1024×256 instead of 4096×256; the code handles any
width that is a multiple of the 256-px tile)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.convert import ConversionError
from bench.datasets.layout import dataset_fingerprint, read_subset
from bench.registry import get_dataset

W, H = 1024, 256


def strip(path: Path, seed: int, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 255, (h, w), dtype=np.uint8)).save(path)


def mask(path: Path, tiles: list[int], w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((H, w), np.uint8)
    for k in tiles:
        m[100:110, k * 256 + 5:k * 256 + 20] = 255
    Image.fromarray(m).save(path)


def make_raw(root: Path, nested: bool = True) -> Path:
    strip(root / "NODefect_images" / "2306881-210020u" / "0001_000_05.png", 1)
    strip(root / "NODefect_images" / "2306881-210020u" / "0002_000_05.png", 2)
    strip(root / "NODefect_images" / "2311517-195063u" / "0003_000_02.png", 3)
    d = root / "Defect_images" / ("Defect_images" if nested else "")
    m = root / "Mask_images" / ("Mask_images" if nested else "")
    strip(d / "0010_002_00.png", 10)
    mask(m / "0010_002_00_mask.png", [1, 3])
    strip(d / "0011_019_01.png", 11)
    mask(m / "0011_019_01_mask.png", [0])
    return root


def convert(raw: Path, out: Path, **opts):
    return get_dataset("aitex").prepare(raw, out, **opts)


@pytest.mark.parametrize("nested", [True, False])
def test_convert_layout_counts(tmp_path, nested):
    raw = make_raw(tmp_path / "raw", nested)
    res = convert(raw, tmp_path / "a" / "aitex")
    root = tmp_path / "a" / "aitex"
    idx = read_subset(root, "AITEX")
    # 3 defect-free strips × 4 tiles = 12 normal tiles: 25 % → 3 test, 9 train
    assert (len(idx.train_good), len(idx.test_good)) == (9, 3)
    normals = sorted(Path(p).name for p in idx.train_good + idx.test_good)
    assert normals == sorted(f"{fab}_{s}_{k}.png" for fab, s in
                             [("2306881-210020u", "0001_000_05"), ("2306881-210020u", "0002_000_05"),
                              ("2311517-195063u", "0003_000_02")] for k in range(4))
    # only tiles with a non-empty mask tile are kept, named by their position
    assert {c: [Path(p).name for p in v] for c, v in idx.anomalies.items()} == {
        "Broken_end": ["0010_002_00_1.png", "0010_002_00_3.png"],
        "Fuzzyball": ["0011_019_01_0.png"]}
    assert res.counts["AITEX"]["anomalies"] == {"Broken_end": 2, "Fuzzyball": 1}
    gt = root / "AITEX" / "ground_truth" / "Broken_end" / "0010_002_00_3_mask.png"
    assert np.asarray(Image.open(gt)).any()
    assert idx.masks["AITEX/test/Broken_end/0010_002_00_3.png"].endswith("0010_002_00_3_mask.png")
    # tiles are 3-channel 256×256 crops of the strip
    tile = np.asarray(Image.open(root / "AITEX" / "test" / "Fuzzyball" / "0011_019_01_0.png"))
    src = np.asarray(Image.open(next(raw.rglob("0011_019_01.png"))))
    assert tile.shape == (256, 256, 3) and (tile[..., 0] == src[:, :256]).all()
    # determinism
    convert(raw, tmp_path / "b" / "aitex")
    assert dataset_fingerprint([idx]) == dataset_fingerprint(
        [read_subset(tmp_path / "b" / "aitex", "AITEX")])


def test_missing_mask_names_strip(tmp_path):
    raw = make_raw(tmp_path / "raw")
    (raw / "Mask_images" / "Mask_images" / "0011_019_01_mask.png").unlink()
    with pytest.raises(ConversionError, match=r"0011_019_01\.png has no mask.*aitex_drop_unmasked"):
        convert(raw, tmp_path / "o")
    res = convert(raw, tmp_path / "o", aitex_drop_unmasked="true")
    assert res.counts["AITEX"]["anomalies"] == {"Broken_end": 2}
    assert res.options["aitex_drop_unmasked"] is True
    assert any("0011_019_01" in w for w in res.warnings)


def test_partial_masks_merge_option(tmp_path):
    raw = make_raw(tmp_path / "raw")
    mdir = raw / "Mask_images" / "Mask_images"
    (mdir / "0010_002_00_mask.png").unlink()
    mask(mdir / "0010_002_00_mask1.png", [0])
    mask(mdir / "0010_002_00_mask2.png", [2])
    with pytest.raises(ConversionError, match=r"only partial masks 0010_002_00_mask1.png, "
                                              r"0010_002_00_mask2.png.*aitex_merge_partial_masks"):
        convert(raw, tmp_path / "o")
    res = convert(raw, tmp_path / "o", aitex_merge_partial_masks=True)
    assert res.counts["AITEX"]["anomalies"]["Broken_end"] == 2  # tiles 0 and 2 (the union)
    assert (tmp_path / "o" / "AITEX" / "test" / "Broken_end" / "0010_002_00_2.png").is_file()
    assert '"aitex_merge_partial_masks": true' in (tmp_path / "o" / ".prepared").read_text()


def test_bad_inputs(tmp_path):
    raw = make_raw(tmp_path / "raw")
    strip(raw / "NODefect_images" / "2311517-195063u" / "0004_000_02.png", 4, h=200)
    with pytest.raises(ConversionError, match=r"0004_000_02.png: strip height is 200 px, expected 256"):
        convert(raw, tmp_path / "o")
    raw = make_raw(tmp_path / "raw2")
    mask(raw / "Mask_images" / "Mask_images" / "0099_002_00_mask.png", [0])
    with pytest.raises(ConversionError, match=r"mask .*0099_002_00_mask.png has no defect image"):
        convert(raw, tmp_path / "o")
    raw = make_raw(tmp_path / "raw3")
    strip(raw / "Defect_images" / "Defect_images" / "0012_777_00.png", 12)
    mask(raw / "Mask_images" / "Mask_images" / "0012_777_00_mask.png", [0])
    with pytest.raises(ConversionError, match=r"0012_777_00.png: defect code '777'"):
        convert(raw, tmp_path / "o")
    raw = make_raw(tmp_path / "raw4")
    mask(raw / "Mask_images" / "Mask_images" / "0011_019_01_mask.png", [0], w=768)
    with pytest.raises(ConversionError, match=r"0011_019_01_mask.png is 768×256 but its strip"):
        convert(raw, tmp_path / "o")
    assert not (tmp_path / "o").exists()
