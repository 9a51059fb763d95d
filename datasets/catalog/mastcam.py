"""Mastcam: multispectral Mars rover tiles for novelty detection (datasets.md §1.6).

Source: Kerner et al., "Comparison of novelty detection methods for multispectral images in
rover-based planetary exploration missions", Data Mining and Knowledge Discovery 2020
(paper link tinyurl.com/mastcam). Cited by third parties as Zenodo record 3732485 under
CC BY 4.0 — a single third-party source, **licence not verified** at Zenodo.

Conversion (the released ``convert_MastCam.py``, dataset's own split, no random split):
``train_typical/`` → ``train/good``; ``test_typical/`` → ``test/good``; each class folder of
``test_novel/`` → ``test/<same name>``. ``test_novel/all/`` (430 byte-identical copies of
class-folder files) is **skipped, never copied** — copying it (as the released script does
on an untouched archive) would add a 12th class of duplicates. ``validation_typical/`` is
unused. Samples are 64×64×6 ``.npy`` tiles (float64, 0–255 scale), copied byte for byte;
decoding (bands 0–2, truncation to uint8) happens in ``datasets.images``. Five frames sit in
two class folders each; ``bench data check`` lists them as duplicate anomalies (warning).
Subset name: ``mastcam`` (the released classname).
"""
from __future__ import annotations

from pathlib import Path

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, find_root, images_in,
                       require_dir)

SUBSET = "mastcam"
CLASSES = ["bedrock", "broken-rock", "drill-hole", "drt", "dump-pile", "edge_cases", "float",
           "meteorite", "other", "scuff", "veins"]


def _check_npy(path: Path) -> None:
    """Fail early (naming the file) on a .npy that is not an H×W×C array with C >= 3."""
    import numpy as np

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ConversionError(f"{path}: cannot read .npy array ({exc})") from exc
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ConversionError(f"{path}: Mastcam tiles must be H×W×C arrays with C >= 3, got "
                              f"shape {arr.shape}")


@register_dataset("mastcam")
class Mastcam(ConvertedDataset):
    title = "Mastcam multispectral rover images, 11 novelty classes (64×64×6 .npy tiles)"
    source = ("Kerner et al., DMKD 2020 (tinyurl.com/mastcam); archive cited as Zenodo "
              "record 3732485")
    license = ("CC BY 4.0 according to a single third-party source; not verified at Zenodo")
    subsets = [SUBSET]
    anomaly_classes = {SUBSET: CLASSES}
    hard_known_classes = {SUBSET: ["bedrock", "broken-rock", "drill-hole", "drt", "dump-pile",
                                   "float", "meteorite", "scuff", "veins"]}
    paper_img_size = 224
    exposure_outliers = "mvtec_ad"  # SAOE: the other MVTec AD categories
    img_size_note = ("unverified: 224 for the 64 px tiles is a reasoned reading, "
                     "datasets.md §0")
    expected_counts = {SUBSET: {
        "train_good": 9302, "test_good": 426, "anomalies": 451, "classes": 11,
        "per_class": {"bedrock": 11, "broken-rock": 76, "drill-hole": 62, "drt": 111,
                      "dump-pile": 93, "float": 18, "meteorite": 34, "scuff": 12,
                      "veins": 30}}}
    count_notes = {SUBSET: {"per_class": "per-class counts come from one third-party README "
                                         "[third-party]; edge_cases + other hold 4 files "
                                         "together"}}
    notes = ["5 frames sit in two class folders each (451 files, 446 distinct frames); check "
             "warns about them and the protocol must keep copies out of train and test at once"]
    raw_layout = """\
<raw>/train_typical/*.npy         9,302 typical tiles (64×64×6)
<raw>/test_typical/*.npy          426 typical test tiles
<raw>/test_novel/<class>/*.npy    11 novelty classes (bedrock, broken-rock, …)
<raw>/test_novel/all/             skipped (duplicates of the class folders)
<raw>/validation_typical/         unused"""

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        root = find_root(raw, lambda p: (p / "train_typical").is_dir(),
                         "train_typical/, test_typical/ and test_novel/<class>/")
        novel = require_dir(root / "test_novel", "Mastcam novelty classes")
        for src_dir, dst in ((require_dir(root / "train_typical", "typical training tiles"),
                              "train/good"),
                             (require_dir(root / "test_typical", "typical test tiles"),
                              "test/good")):
            files = images_in(src_dir)
            if not files:
                raise ConversionError(f"no .npy/image files in {src_dir}")
            for f in files:
                self._copy(f, f"{SUBSET}/{dst}/{f.name}", conv)
        class_dirs = sorted(p for p in novel.iterdir()
                            if p.is_dir() and not p.name.startswith(".") and p.name != "all")
        if (novel / "all").is_dir():
            conv.notes["skipped"] = "test_novel/all (duplicates of the class folders)"
        if not class_dirs:
            raise ConversionError(f"no class folders in {novel} (expected "
                                  f"{', '.join(CLASSES)})")
        unknown = sorted(p.name for p in class_dirs if p.name not in CLASSES)
        missing = sorted(set(CLASSES) - {p.name for p in class_dirs})
        if unknown or missing:
            conv.warn(f"test_novel class folders differ from the 11 expected: "
                      f"unexpected {', '.join(unknown) or 'none'}; missing "
                      f"{', '.join(missing) or 'none'}")
        for cdir in class_dirs:
            for f in images_in(cdir):
                self._copy(f, f"{SUBSET}/test/{cdir.name}/{f.name}", conv)

    @staticmethod
    def _copy(src: Path, rel: str, conv: Conversion) -> None:
        if src.suffix.lower() == ".npy":
            _check_npy(src)
        conv.copy(src, rel)
