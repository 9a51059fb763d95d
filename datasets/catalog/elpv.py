"""ELPV: electroluminescence images of solar cells (datasets.md §1.4).

Source: github.com/zae-bayern/elpv-dataset (Buerhop-Lutz et al. 2018; Deitsch et al. 2019),
also installable as the pip package ``elpv-dataset`` (``pip install 'osad-bench[elpv]'``),
which ships ``elpv_dataset/data/{labels.csv,images/}``.
Licence: images **CC BY-NC-SA 4.0 (non-commercial)**; the package's Python code Apache-2.0.

Conversion (the released ``convert_elpv.py``): defect probability 0 → normal, 1 → anomaly
foldered by module type (``test/mono``, ``test/poly``), 1/3 and 2/3 dropped. The normal cells
are split with ``train_test_split(normals_in_labels_csv_order, test_size=0.25,
random_state=42)``; label-file order is fixed, so this reproduces the released split exactly:
train 1,131 (454 mono + 677 poly), test/good 377 (134 mono + 243 poly), mono 313, poly 402.
Files keep their ``cellNNNN.png`` names. Subset name: ``elpv`` (the released classname).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, require_dir,
                       require_file, split_normals, split_note)

SUBSET = "elpv"
TYPES = ("mono", "poly")
# The four probabilities of the labelling scheme; labels.csv stores 1/3 as 0.3333333333333333.
KNOWN_PROBS = {Fraction(0): "normal", Fraction(1, 3): "drop", Fraction(2, 3): "drop",
               Fraction(1): "anomaly"}


def _classify(prob: float):
    for p, what in KNOWN_PROBS.items():
        if abs(prob - float(p)) < 1e-6:
            return what
    return None


def read_labels(labels: Path) -> list[tuple[str, float, str]]:
    """Rows (image path, probability, type) of ``labels.csv`` in file order, validated."""
    rows, seen = [], set()
    for lineno, line in enumerate(labels.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ConversionError(f"{labels}:{lineno}: expected 'path probability type', got "
                                  f"{line.strip()!r}")
        path, prob_text, kind = parts
        try:
            prob = float(prob_text)
        except ValueError:
            raise ConversionError(f"{labels}:{lineno}: probability {prob_text!r} is not a "
                                  f"number") from None
        if _classify(prob) is None:
            raise ConversionError(f"{labels}:{lineno}: unknown defect probability {prob_text} "
                                  f"for {path}; ELPV uses only 0, 1/3, 2/3 and 1")
        if kind not in TYPES:
            raise ConversionError(f"{labels}:{lineno}: unknown module type {kind!r} for {path}; "
                                  f"expected mono or poly")
        if path in seen:
            raise ConversionError(f"{labels}:{lineno}: {path} is listed twice")
        seen.add(path)
        rows.append((path, prob, kind))
    if not rows:
        raise ConversionError(f"{labels} holds no label rows")
    return rows


@register_dataset("elpv")
class ELPV(ConvertedDataset):
    title = "ELPV solar cells (electroluminescence), 2 anomaly classes (mono, poly)"
    source = ("github.com/zae-bayern/elpv-dataset (Buerhop-Lutz et al. 2018; Deitsch et al. "
              "2019); pip package elpv-dataset")
    license = ("images CC BY-NC-SA 4.0 (non-commercial, share-alike); package code "
               "Apache-2.0")
    non_commercial = True
    subsets = [SUBSET]
    anomaly_classes = {SUBSET: ["mono", "poly"]}
    hard_known_classes = {SUBSET: ["mono", "poly"]}
    paper_img_size = 224
    exposure_outliers = "mvtec_ad"  # SAOE: the other MVTec AD categories
    img_size_note = ("unverified: the paper says 448 or 224 by native resolution; 224 for the "
                     "300 px cells is a reasoned reading, datasets.md §0")
    expected_counts = {SUBSET: {"train_good": 1131, "test_good": 377,
                                "anomalies": {"mono": 313, "poly": 402}, "classes": 2}}
    package = "elpv-dataset"
    raw_layout = """\
<raw>/labels.csv          whitespace-separated: images/cellNNNN.png probability mono|poly
<raw>/images/cellNNNN.png 2,624 PNGs, 300×300 grayscale
(the repository's src/elpv_dataset/data/ folder, or the installed package's data folder)"""
    notes = ["probabilities 1/3 and 2/3 are dropped; normal cells of both types are pooled; "
             "the split reproduces the released convert_elpv.py exactly (label-file order)"]

    def raw_from_package(self) -> Path:
        try:
            from importlib.resources import files
            data = Path(str(files("elpv_dataset") / "data"))
        except ModuleNotFoundError:
            raise ConversionError("the ELPV data comes from the pip package elpv-dataset, which "
                                  "is not installed: run `pip install 'osad-bench[elpv]'` or "
                                  "`pip install elpv-dataset`, or pass --raw PATH to a copy of "
                                  "the repository's data folder") from None
        if not (data / "labels.csv").is_file():
            raise ConversionError(f"the installed elpv-dataset package has no labels.csv under "
                                  f"{data}; reinstall it (`pip install --force-reinstall "
                                  f"elpv-dataset`) or pass --raw PATH")
        return data

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        labels = require_file(raw / "labels.csv", "ELPV label file")
        require_dir(raw / "images", "ELPV cell images")
        rows = read_labels(labels)
        for path, _, _ in rows:
            require_file(raw / path, f"image listed in {labels.name}")
        normal = [path for path, p, _ in rows if _classify(p) == "normal"]
        dropped = sum(_classify(p) == "drop" for _, p, _ in rows)
        train, test = split_normals(normal, keep_order=True, what="normal ELPV cells (p = 0)")
        sub = SUBSET
        for path in train:
            conv.copy(raw / path, f"{sub}/train/good/{Path(path).name}")
        for path in test:
            conv.copy(raw / path, f"{sub}/test/good/{Path(path).name}")
        for path, p, kind in rows:
            if _classify(p) == "anomaly":
                conv.copy(raw / path, f"{sub}/test/{kind}/{Path(path).name}")
        conv.notes["split"] = split_note(True, "labels.csv order (reproduces the released split)")
        conv.notes["dropped_uncertain"] = dropped
