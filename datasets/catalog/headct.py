"""HeadCT: head CT slices with / without haemorrhage (datasets.md §1.9).

Source: Kaggle "Head CT – hemorrhage" (felipekitamura; 200 PNG slices and ``labels.csv``),
also distributed by the KDAD authors. Licence: not verified (Kaggle terms not checked);
research use.

Conversion (the released ``convert_HeadCT.py``): ``labels.csv`` (header row, then
``id, hemorrhage``) gives each slice ``head_ct/head_ct/NNN.png`` (zero-padded 3-digit id) its
label; label 0 → normal, split 75/25 in **csv order** (``train_test_split``, seed 42 — the
released script's order, so its split is reproduced); label 1 → ``test/defect``. Files are
copied unchanged. Uses LAG as the paper's pseudo-anomaly source. Subset name: ``headct``.
"""
from __future__ import annotations

from pathlib import Path

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, find_root, require_file,
                       split_normals, split_note)

SUBSET = "headct"


def read_labels(path: Path) -> list[tuple[int, int]]:
    """(id, label) rows of HeadCT's ``labels.csv`` in file order, validated."""
    rows, seen = [], set()
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines, 1):
        parts = [p.strip() for p in line.split(",")]
        if not any(parts):
            continue
        if lineno == 1 and not parts[0].isdigit():
            continue  # header "id, hemorrhage"
        if len(parts) != 2 or not parts[0].isdigit():
            raise ConversionError(f"{path}:{lineno}: expected 'id,label', got {line.strip()!r}")
        if parts[1] not in ("0", "1"):
            raise ConversionError(f"{path}:{lineno}: unknown label {parts[1]!r} for id "
                                  f"{parts[0]}; expected 0 (normal) or 1 (haemorrhage)")
        ident = int(parts[0])
        if ident in seen:
            raise ConversionError(f"{path}:{lineno}: id {ident} is listed twice")
        seen.add(ident)
        rows.append((ident, int(parts[1])))
    if not rows:
        raise ConversionError(f"{path} holds no label rows")
    return rows


def _image_dir(root: Path) -> Path:
    nested = root / "head_ct" / "head_ct"
    return nested if nested.is_dir() else root / "head_ct"


@register_dataset("headct")
class HeadCT(ConvertedDataset):
    title = "Head CT haemorrhage, 1 anomaly class"
    source = ("Kaggle 'Head CT - hemorrhage' (felipekitamura); also the KDAD authors' copy "
              "(Salehi et al., CVPR 2021)")
    license = "not verified (Kaggle dataset terms not checked); research use"
    subsets = [SUBSET]
    anomaly_classes = {SUBSET: ["defect"]}
    hard_known_classes = {SUBSET: []}  # one anomaly class: no hard setting
    paper_img_size = 448
    paper_outliers = "lag"
    exposure_outliers = "lag"  # SAOE: LAG (medical)
    expected_counts = {SUBSET: {"train_good": 75, "test_good": 25, "anomalies": 100,
                                "classes": 1}}
    raw_layout = """\
<raw>/labels.csv                 header row, then: id, hemorrhage (0 or 1)
<raw>/head_ct/[head_ct/]NNN.png  200 slices, NNN = zero-padded id"""

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        root = find_root(raw, lambda p: (p / "labels.csv").is_file() and (p / "head_ct").is_dir(),
                         "labels.csv and head_ct/[head_ct/]NNN.png")
        labels = root / "labels.csv"
        rows = read_labels(labels)
        images = _image_dir(root)
        paths = {i: require_file(images / f"{i:03d}.png", f"slice listed in {labels}")
                 for i, _ in rows}
        normal = [i for i, lab in rows if lab == 0]
        train, test = split_normals(normal, keep_order=True, what="normal slices (label 0)")
        for part, ids in (("train/good", train), ("test/good", test),
                          ("test/defect", [i for i, lab in rows if lab == 1])):
            for i in ids:
                conv.copy(paths[i], f"{SUBSET}/{part}/{paths[i].name}")
        conv.notes["split"] = split_note(True, "labels.csv order (as the released script)")
