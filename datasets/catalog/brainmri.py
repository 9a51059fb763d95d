"""BrainMRI: brain tumour MRI slices (datasets.md §1.8).

Source: Kaggle "Brain MRI Images for Brain Tumor Detection" (navoneel), used by KDAD
(Salehi et al., CVPR 2021). Licence: not verified (Kaggle page terms not checked); research
use.

Conversion (the released ``convert_BrainMRI.py``): ``no/`` (98 tumour-free) split 75/25 into
``train/good`` / ``test/good`` (sorted, ``train_test_split``, seed 42; the released
``os.listdir`` order is not reproduced byte for byte); all of ``yes/`` (155) →
``test/defect``. Files are copied unchanged, names with spaces kept (``1 no.jpeg``).

Mixed extensions: the released loader keeps only names ending in ``png``/``PNG``/``jpg``/
``npy`` and silently ignores ``.jpeg``/``.JPG`` files, so the original code used fewer images
than Table 5 says. By default every image is kept; ``--option original_filter=true`` drops
the files the released loader ignores (after the split, as the original did) for exact
replication. Uses LAG as the paper's pseudo-anomaly source. Subset name: ``brainmri``.
"""
from __future__ import annotations

from pathlib import Path

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, Option, find_root,
                       images_in, passes_original_filter, split_normals, split_note)

SUBSET = "brainmri"


@register_dataset("brainmri")
class BrainMRI(ConvertedDataset):
    title = "Brain MRI tumour detection, 1 anomaly class"
    source = ("Kaggle 'Brain MRI Images for Brain Tumor Detection' (navoneel); used by KDAD "
              "(Salehi et al., CVPR 2021)")
    license = "not verified (Kaggle dataset terms not checked); research use"
    subsets = [SUBSET]
    anomaly_classes = {SUBSET: ["defect"]}
    hard_known_classes = {SUBSET: []}  # one anomaly class: no hard setting
    paper_img_size = 448
    paper_outliers = "lag"
    exposure_outliers = "lag"  # SAOE: LAG (medical)
    expected_counts = {SUBSET: {"train_good": 73, "test_good": 25, "anomalies": 155,
                                "classes": 1}}
    options = {"original_filter": Option(
        False, "drop files the released loader ignores (names not ending in png/PNG/jpg/npy, "
               "e.g. .jpeg and .JPG), after the split, to replicate the original code")}
    count_notes = {SUBSET: {"train_good": "lower with original_filter=true (the released loader "
                                          "ignores .jpeg/.JPG files)",
                            "test_good": "lower with original_filter=true",
                            "anomalies": "lower with original_filter=true"}}
    raw_layout = """\
<raw>/no/*.jpg|*.jpeg|*.JPG|*.png    98 tumour-free slices (names may contain spaces)
<raw>/yes/*                          155 tumour slices
(a wrapping folder such as brain_tumor_dataset/ is found automatically)"""

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        root = find_root(raw, lambda p: (p / "no").is_dir() and (p / "yes").is_dir(),
                         "folders no/ and yes/", wrappers=("brain_tumor_dataset",))
        normal, tumour = images_in(root / "no"), images_in(root / "yes")
        if not tumour:
            raise ConversionError(f"no images in {root / 'yes'}")
        train, test = split_normals(normal, key=lambda p: p.name, what=f"images in {root / 'no'}")
        keep = passes_original_filter if opts["original_filter"] else (lambda name: True)
        dropped = []
        for part, files in (("train/good", train), ("test/good", test), ("test/defect", tumour)):
            for f in files:
                if keep(f.name):
                    conv.copy(f, f"{SUBSET}/{part}/{f.name}")
                else:
                    dropped.append(conv.source_name(f))
        ignored = [conv.source_name(f) for f in normal + tumour
                   if not passes_original_filter(f.name)]
        if ignored and not opts["original_filter"]:
            conv.warn(f"{len(ignored)} file(s) would be ignored by the released loader's "
                      f"3-character suffix filter (kept here; --option original_filter=true "
                      f"replicates the original): {', '.join(sorted(ignored)[:5])}"
                      + (" …" if len(ignored) > 5 else ""))
        conv.notes["split"] = split_note(False)
        conv.notes["original_filter_ignores"] = sorted(ignored)
        if dropped:
            conv.notes["dropped_by_original_filter"] = sorted(dropped)
