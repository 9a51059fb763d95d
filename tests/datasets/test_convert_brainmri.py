"""BrainMRI converter on tiny fake no/ and yes/ folders: names with spaces, mixed
extensions, and the original 3-character filter option."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.convert import ConversionError
from bench.datasets.layout import dataset_fingerprint, read_subset
from bench.registry import get_dataset

NO = ["1 no.jpeg", "15 no.jpg", "No11.JPG", "no 5.png", "N7.jpg", "N8.jpg", "no 9.jpg"]
YES = ["Y1.jpg", "Y2.JPG", "Y 3.jpeg"]


def make_raw(root: Path) -> Path:
    for folder, names in (("no", NO), ("yes", YES)):
        (root / folder).mkdir(parents=True)
        for i, n in enumerate(names):
            fmt = "PNG" if n.endswith(".png") else "JPEG"
            shade = 20 + 30 * i + (100 if folder == "yes" else 0)
            Image.fromarray(np.full((6, 6), shade, np.uint8)).save(root / folder / n, format=fmt)
    return root


def test_convert_layout_counts(tmp_path):
    raw = make_raw(tmp_path / "raw" / "brain_tumor_dataset")
    res = get_dataset("brainmri").prepare(tmp_path / "raw", tmp_path / "a")
    idx = read_subset(tmp_path / "a", "brainmri")
    assert (len(idx.train_good), len(idx.test_good)) == (5, 2)   # 7 normal, ceil(1.75) = 2
    assert sorted(Path(p).name for p in idx.train_good + idx.test_good) == sorted(NO)
    assert sorted(Path(p).name for p in idx.anomalies["defect"]) == sorted(YES)
    assert (tmp_path / "a" / "brainmri" / "test" / "defect" / "Y 3.jpeg").read_bytes() == \
        (raw / "yes" / "Y 3.jpeg").read_bytes()
    assert any("would be ignored by the released loader" in w for w in res.warnings)
    get_dataset("brainmri").prepare(raw, tmp_path / "b")
    assert dataset_fingerprint([idx]) == dataset_fingerprint([read_subset(tmp_path / "b", "brainmri")])


def test_original_filter_option(tmp_path):
    raw = make_raw(tmp_path / "raw")
    full = get_dataset("brainmri").prepare(raw, tmp_path / "full")
    res = get_dataset("brainmri").prepare(raw, tmp_path / "o", original_filter="true")
    idx = read_subset(tmp_path / "o", "brainmri")
    names = [Path(p).name for p in idx.all_files]
    assert not any(n.endswith((".jpeg", ".JPG")) for n in names)
    assert sorted(Path(p).name for p in idx.anomalies["defect"]) == ["Y1.jpg"]
    # the split is made before filtering, as the original: kept files stay on their side
    full_idx = read_subset(tmp_path / "full", "brainmri")
    assert set(Path(p).name for p in idx.train_good) <= set(Path(p).name for p in full_idx.train_good)
    assert res.options["original_filter"] is True and full.options["original_filter"] is False


def test_missing_yes_folder(tmp_path):
    raw = make_raw(tmp_path / "raw")
    import shutil
    shutil.rmtree(raw / "yes")
    with pytest.raises(ConversionError, match=r"expected folders no/ and yes/"):
        get_dataset("brainmri").prepare(raw, tmp_path / "o")
