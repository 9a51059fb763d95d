"""Bad input gets a clear error naming the path (datasets.md §4)."""
import numpy as np
import pytest
from PIL import Image

from bench.datasets.images import ImageDecodeError, decode_image
from bench.datasets.layout import LayoutError, list_subsets, read_subset


def test_missing_subset_names_present_ones(toy_root):
    with pytest.raises(LayoutError, match="Did you mean 'alpha'"):
        read_subset(toy_root, "alpah")


def test_missing_folders(toy_root, tmp_path):
    import shutil
    shutil.rmtree(toy_root / "alpha/train/good")
    with pytest.raises(LayoutError, match=r"alpha/train/good"):
        read_subset(toy_root, "alpha")
    (tmp_path / "empty/s/train/good").mkdir(parents=True)
    (tmp_path / "empty/s/test/good").mkdir(parents=True)
    with pytest.raises(LayoutError, match="no normal training images"):
        read_subset(tmp_path / "empty", "s")
    with pytest.raises(LayoutError, match="no subset folder"):
        list_subsets(tmp_path / "empty/s/train")


def test_no_anomaly_classes(toy_root):
    import shutil
    for d in (toy_root / "beta/test").iterdir():
        if d.name != "good":
            shutil.rmtree(d)
    with pytest.raises(LayoutError, match="no anomaly class folder"):
        read_subset(toy_root, "beta")


def test_hidden_masks_and_non_images_ignored(toy_root):
    d = toy_root / "alpha/test/bar"
    n = len(read_subset(toy_root, "alpha").anomalies["bar"])
    (d / ".DS_Store").write_bytes(b"junk")
    (d / "._000.png").write_bytes(b"junk")
    (d / "notes.txt").write_text("hello")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "x_mask.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "UPPER.JPEG")
    idx = read_subset(toy_root, "alpha")
    assert len(idx.anomalies["bar"]) == n + 1
    assert any(p.endswith("UPPER.JPEG") for p in idx.anomalies["bar"])


def test_corrupt_and_empty_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageDecodeError, match="broken.png"):
        decode_image(bad)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.jpg.*0 bytes"):
        decode_image(empty)
    # truncated file: header fine, data cut
    good = tmp_path / "ok.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(good)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageDecodeError, match="trunc.png"):
        decode_image(trunc)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "1", "LA"])
def test_modes_become_rgb_uint8(tmp_path, mode):
    rng = np.random.RandomState(1)
    base = Image.fromarray(rng.randint(0, 255, (10, 12, 3), np.uint8))
    if mode == "I;16":
        im = Image.fromarray((rng.randint(0, 65535, (10, 12))).astype(np.uint16))
        ext = ".png"
    else:
        im = base.convert(mode)
        ext = ".tif" if mode == "CMYK" else ".png"
    p = tmp_path / f"im{ext}"
    im.save(p)
    out = decode_image(p)
    assert out.dtype == np.uint8 and out.shape == (10, 12, 3)
    if mode == "I;16":  # rescaled by the dtype range, not saturated at 255
        src = np.asarray(Image.open(p)).astype(np.float64)
        assert np.abs(out[..., 0] - np.rint(src / 65535 * 255)).max() <= 1
        assert out.max() > 200 and out.min() < 50
    # the same file decodes the same way every time
    assert np.array_equal(out, decode_image(p))


def test_npy_rules(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.random.RandomState(0).uniform(0, 1, (6, 6, 5)))
    out = decode_image(p)
    assert out.shape == (6, 6, 3) and out.max() > 128  # [0,1] floats scaled by 255
    np.save(p, np.full((6, 6, 3), 300.0))
    with pytest.raises(ImageDecodeError, match="outside"):
        decode_image(p)
    np.save(p, np.zeros((6, 6)))
    with pytest.raises(ImageDecodeError, match="H×W×C"):
        decode_image(p)
    np.save(p, np.full((4, 4, 6), 200.7))  # 0–255 floats (Mastcam): truncated like upstream
    assert decode_image(p)[0, 0, 0] == 200
