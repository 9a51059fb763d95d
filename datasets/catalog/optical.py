"""Optical: DAGM 2007 "industrial optical inspection" textures (datasets.md §1.5).

Source: DAGM/GNSS 2007 competition data (HCI Heidelberg); mirrored on Kaggle
("dagm-2007-competition-dataset-optical-inspection") and Zenodo (record 12750201).
Licence: not verified (the competition data's terms were not checked); treat as research use.

Conversion (the released ``convert_optical.py``, with names built explicitly): the rows of
``ClassN/Train/Label/Labels.txt`` and ``ClassN/Test/Label/Labels.txt`` (header line ``1``, then
index, defect flag 0/1, image file, unused, mask file; tabs or spaces; CRLF tolerated) give
each image's label. Flag-0 images of Train **and** Test of all ten classes form one normal
pool split 75/25 (sorted by output name, ``train_test_split``, seed 42; the released order
is not reproduced byte for byte). Flag-1 images go to ``test/Class0 … test/Class9`` (0-based
folders, DAGM Class1 → ``Class0``, as upstream), masks to ``ground_truth/ClassK/``.
Output names are ``Class<N>_<Train|Test>_<file>`` (N = the DAGM 1-based class), so files with
the same number in different classes or splits never overwrite each other — the released
script's path-position naming could silently lose files.

The paper treats the ten folders as **one** anomaly class (Table 5: 1 class) and runs only
the general setting. Both ``ClassN/ClassN/{Train,Test}`` (Kaggle) and ``ClassN/{Train,Test}``
are accepted. Subset name: ``optical_class`` (the released classname).
"""
from __future__ import annotations

import re
from pathlib import Path

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, find_root, require_dir,
                       require_file, split_normals, split_note)

SUBSET = "optical_class"
_CLASS_RE = re.compile(r"^Class(\d+)$")


def _class_dirs(root: Path) -> list[tuple[int, Path]]:
    out = []
    for p in root.iterdir():
        m = _CLASS_RE.match(p.name)
        if p.is_dir() and m:
            inner = p / p.name if (p / p.name).is_dir() else p  # Kaggle nests ClassN/ClassN
            out.append((int(m[1]), inner))
    return sorted(out)


def read_labels(path: Path) -> list[tuple[int, str, str]]:
    """(flag, image file, mask file or '') rows of a DAGM ``Labels.txt``."""
    rows = []
    lines = path.read_bytes().decode("utf-8", errors="strict").splitlines()  # CRLF-safe
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if lineno == 1 and len(parts) == 1:
            continue  # the header line "1"
        if len(parts) < 3:
            raise ConversionError(f"{path}:{lineno}: expected 'index flag image [unused mask]', "
                                  f"got {line.strip()!r}")
        flag, image = parts[1], parts[2]
        if flag not in ("0", "1"):
            raise ConversionError(f"{path}:{lineno}: unknown defect flag {flag!r} for {image}; "
                                  f"expected 0 or 1")
        mask = parts[4] if len(parts) >= 5 and parts[4] != "0" else ""
        if flag == "1" and not mask:
            raise ConversionError(f"{path}:{lineno}: defective image {image} has no mask file "
                                  f"in column 5")
        rows.append((int(flag), image, mask))
    return rows


@register_dataset("optical")
class Optical(ConvertedDataset):
    title = "DAGM 2007 optical inspection textures (paper: 1 anomaly class; 10 folders)"
    source = ("DAGM/GNSS 2007 competition (HCI Heidelberg); mirrors: Kaggle "
              "'dagm-2007-competition-dataset-optical-inspection', Zenodo record 12750201")
    license = "not verified (DAGM 2007 competition terms); research use"
    subsets = [SUBSET]
    anomaly_classes = {SUBSET: [f"Class{i}" for i in range(10)]}
    # The paper treats the ten folders as one class: no hard-setting runs.
    hard_known_classes = {SUBSET: []}
    paper_img_size = 448
    exposure_outliers = "mvtec_ad"  # SAOE: the other MVTec AD categories
    img_size_note = "unverified; 512 px originals"
    expected_counts = {SUBSET: {"train_good": 10500, "test_good": 3500, "anomalies": 2100,
                                "classes": 10}}
    count_notes = {SUBSET: {"classes": "the converted layout has 10 folders but the paper "
                                       "treats Optical as one anomaly class"}}
    notes = ["the paper runs only the general setting on Optical (10 folders, 1 class)"]
    raw_layout = """\
<raw>/Class1 … Class10/[ClassN/]Train/*.PNG              512×512 grayscale images
<raw>/Class1 … Class10/[ClassN/]Train/Label/Labels.txt   header '1', then: index flag image unused mask
<raw>/Class1 … Class10/[ClassN/]Train/Label/*_label.PNG  masks of the defective images
(the same under Test/)"""

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        root = find_root(raw, lambda p: bool(_class_dirs(p)),
                         "folders Class1 … Class10 with Train/ and Test/")
        normals, n_def = [], 0
        classes = _class_dirs(root)
        for num, cdir in classes:
            for split in ("Train", "Test"):
                sdir = require_dir(cdir / split, f"DAGM Class{num} {split} images")
                labels = require_file(sdir / "Label" / "Labels.txt", "DAGM label file")
                for flag, image, mask in read_labels(labels):
                    src = require_file(sdir / image, f"image listed in {labels}")
                    name = f"Class{num}_{split}_{image}"
                    if flag == 0:
                        normals.append((name, src))
                        continue
                    cls = f"Class{num - 1}"
                    msrc = require_file(sdir / "Label" / mask, f"mask listed in {labels}")
                    conv.copy(src, f"{SUBSET}/test/{cls}/{name}")
                    stem, _, ext = name.rpartition(".")
                    conv.copy(msrc, f"{SUBSET}/ground_truth/{cls}/{stem}_mask."
                                    f"{msrc.suffix.lstrip('.') or ext}")
                    n_def += 1
        if len(classes) != 10:
            conv.warn(f"found {len(classes)} DAGM class folders "
                      f"({', '.join(f'Class{n}' for n, _ in classes)}), expected Class1 … Class10")
        if not n_def:
            raise ConversionError(f"no defective (flag 1) rows in the Labels.txt files under "
                                  f"{root}")
        train, test = split_normals(normals, what="normal DAGM images")
        for part, items in (("train", train), ("test", test)):
            for name, src in items:
                conv.copy(src, f"{SUBSET}/{part}/good/{name}")
        conv.notes["split"] = split_note(False, "normal images of all classes and both splits, "
                                                "sorted by output name")
