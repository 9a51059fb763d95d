"""Optical (DAGM 2007) converter on tiny fake classes: Labels.txt with header and CRLF,
names built from (class, split, file), nested and flat class folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.convert import ConversionError
from bench.datasets.layout import dataset_fingerprint, read_subset
from bench.registry import get_dataset


def split_dir(folder: Path, rows: list[tuple[str, int]], seed: int, crlf=True) -> None:
    (folder / "Label").mkdir(parents=True)
    lines = ["1"]
    for i, (name, flag) in enumerate(rows, 1):
        Image.fromarray(np.full((8, 8), seed * 10 + i, np.uint8)).save(folder / name)
        if flag:
            m = np.zeros((8, 8), np.uint8)
            m[2:4, 2:4] = 255
            label = name.replace(".PNG", "_label.PNG")
            Image.fromarray(m).save(folder / "Label" / label)
            lines.append(f"{i}\t1\t{name}\t0\t{label}")
        else:
            lines.append(f"{i}\t0\t{name}\t0\t0")
    (folder / "Label" / "Labels.txt").write_bytes(("\r\n" if crlf else "\n").join(lines).encode()
                                                  + b"\r\n")


def make_raw(root: Path) -> Path:
    # Class1 nested as in the Kaggle mirror, Class2 flat; same file numbers in both classes
    split_dir(root / "Class1" / "Class1" / "Train", [("0001.PNG", 0), ("0002.PNG", 1),
                                                     ("0003.PNG", 0)], 1)
    split_dir(root / "Class1" / "Class1" / "Test", [("0001.PNG", 0), ("0004.PNG", 0)], 2)
    split_dir(root / "Class2" / "Train", [("0001.PNG", 1), ("0002.PNG", 0)], 3, crlf=False)
    split_dir(root / "Class2" / "Test", [("0001.PNG", 0), ("0005.PNG", 0)], 4)
    return root


def test_convert_layout_counts(tmp_path):
    raw = make_raw(tmp_path / "raw")
    res = get_dataset("optical").prepare(raw, tmp_path / "a")
    idx = read_subset(tmp_path / "a", "optical_class")
    assert {c: [Path(p).name for p in v] for c, v in idx.anomalies.items()} == {
        "Class0": ["Class1_Train_0002.PNG"], "Class1": ["Class2_Train_0001.PNG"]}
    normals = sorted(Path(p).name for p in idx.train_good + idx.test_good)
    assert normals == sorted(["Class1_Train_0001.PNG", "Class1_Train_0003.PNG",
                              "Class1_Test_0001.PNG", "Class1_Test_0004.PNG",
                              "Class2_Train_0002.PNG", "Class2_Test_0001.PNG",
                              "Class2_Test_0005.PNG"])
    assert (len(idx.train_good), len(idx.test_good)) == (5, 2)  # 7 normals, ceil(1.75) = 2
    assert idx.masks["optical_class/test/Class0/Class1_Train_0002.PNG"].endswith(
        "ground_truth/Class0/Class1_Train_0002_mask.PNG")
    assert any("found 2 DAGM class folders" in w for w in res.warnings)
    get_dataset("optical").prepare(raw, tmp_path / "b")
    assert dataset_fingerprint([idx]) == dataset_fingerprint(
        [read_subset(tmp_path / "b", "optical_class")])


def test_bad_flag_and_missing_file(tmp_path):
    raw = make_raw(tmp_path / "raw")
    labels = raw / "Class2" / "Train" / "Label" / "Labels.txt"
    labels.write_text(labels.read_text().replace("\t0\t0002.PNG", "\t7\t0002.PNG"))
    with pytest.raises(ConversionError, match=r"Labels.txt:3: unknown defect flag '7' for 0002.PNG"):
        get_dataset("optical").prepare(raw, tmp_path / "o")
    raw = make_raw(tmp_path / "raw2")
    (raw / "Class2" / "Test" / "0005.PNG").unlink()
    with pytest.raises(ConversionError, match=r"missing file .*Class2/Test/0005.PNG"):
        get_dataset("optical").prepare(raw, tmp_path / "o")
