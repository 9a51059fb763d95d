"""MVTec AD: 15 industrial object and texture categories (datasets.md §1.1).

Source: MVTec Software GmbH, Bergmann et al., CVPR 2019 / IJCV 2021,
www.mvtec.com/company/research/datasets/mvtec-ad (paper link tinyurl.com/mvtecad).
Licence: **CC BY-NC-SA 4.0 (non-commercial)**.

The raw release is already in the target layout; ``prepare`` validates each category
(``train/good``, ``test/good``, ``test/<class>``, ``ground_truth/<class>``) and copies (or with
``--option link=true`` hard-links) the images, so the prepared copy carries the ``.prepared``
marker and a manifest like every other dataset. The official normal train/test split is kept.
Labelled anomalies for training come from ``test/`` (MVTec has none in train); the protocol
removes drawn ones from the test set. Also used whole as an external outlier source (paper
Table 4, SAOE): each category's ``train/good`` is an ``<X>/train/good`` pool.

Anomaly class folder names per category are those of the standard release, written down
from knowledge of its layout [unverified here: no copy was at hand]; their numbers match
Table 5's |C| column. ``bench data check`` warns if a prepared copy's folders differ, and
fails only if a hard-setting known class of carpet or metal_nut is missing.
"""
from __future__ import annotations

from pathlib import Path

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, Option, images_in,
                       present, require_dir)

CLASSES = {
    "bottle": ["broken_large", "broken_small", "contamination"],
    "cable": ["bent_wire", "cable_swap", "combined", "cut_inner_insulation",
              "cut_outer_insulation", "missing_cable", "missing_wire", "poke_insulation"],
    "capsule": ["crack", "faulty_imprint", "poke", "scratch", "squeeze"],
    "carpet": ["color", "cut", "hole", "metal_contamination", "thread"],
    "grid": ["bent", "broken", "glue", "metal_contamination", "thread"],
    "hazelnut": ["crack", "cut", "hole", "print"],
    "leather": ["color", "cut", "fold", "glue", "poke"],
    "metal_nut": ["bent", "color", "flip", "scratch"],
    "pill": ["color", "combined", "contamination", "crack", "faulty_imprint", "pill_type",
             "scratch"],
    "screw": ["manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"],
    "tile": ["crack", "glue_strip", "gray_stroke", "oil", "rough"],
    "toothbrush": ["defective"],
    "transistor": ["bent_lead", "cut_lead", "damaged_case", "misplaced"],
    "wood": ["color", "combined", "hole", "liquid", "scratch"],
    "zipper": ["broken_teeth", "combined", "fabric_border", "fabric_interior", "rough",
               "split_teeth", "squeezed_teeth"],
}
# Paper Table 1 row order: textures first, then objects.
CATEGORIES = ["carpet", "grid", "leather", "tile", "wood", "bottle", "capsule", "pill",
              "transistor", "zipper", "cable", "hazelnut", "metal_nut", "screw", "toothbrush"]
# Table 5: (train normal, test normal, anomalies).
_COUNTS = {"carpet": (280, 28, 89), "grid": (264, 21, 57), "leather": (245, 32, 92),
           "tile": (230, 33, 84), "wood": (247, 19, 60), "bottle": (209, 20, 63),
           "capsule": (219, 23, 109), "pill": (267, 26, 141), "transistor": (213, 60, 40),
           "zipper": (240, 32, 119), "cable": (224, 58, 92), "hazelnut": (391, 40, 70),
           "metal_nut": (220, 22, 93), "screw": (320, 41, 119), "toothbrush": (60, 12, 30)}


def _expected(cat: str) -> dict:
    tr, te, an = _COUNTS[cat]
    exp = {"train_good": tr, "test_good": te, "anomalies": an, "classes": len(CLASSES[cat])}
    if cat == "carpet":
        exp["per_class"] = {"color": 19, "cut": 17, "hole": 17, "metal_contamination": 17,
                            "thread": 19}
    if cat == "metal_nut":
        exp["per_class"] = {"bent": 25, "color": 22, "flip": 23, "scratch": 23}
    return exp


@register_dataset("mvtec_ad")
class MVTecAD(ConvertedDataset):
    title = "MVTec AD, 15 categories (5 textures, 10 objects)"
    source = ("MVTec Software GmbH (Bergmann et al., CVPR 2019 / IJCV 2021), "
              "https://www.mvtec.com/company/research/datasets/mvtec-ad")
    license = "CC BY-NC-SA 4.0 (non-commercial, share-alike)"
    non_commercial = True
    subsets = list(CATEGORIES)
    anomaly_classes = {c: CLASSES[c] for c in CATEGORIES}
    # The paper runs the hard setting only on carpet and metal_nut (Table 2); [] = none.
    hard_known_classes = {c: [] for c in CATEGORIES}
    hard_known_classes.update({"carpet": ["color", "cut", "hole", "metal_contamination",
                                          "thread"],
                               "metal_nut": ["bent", "color", "flip", "scratch"]})
    paper_img_size = 448
    exposure_outliers = "mvtec_ad"  # SAOE: the other MVTec AD categories
    expected_counts = {c: _expected(c) for c in CATEGORIES}
    count_notes = {c: {"per_class": "hard-setting class sizes quoted from memory of the "
                                    "standard release [unverified]"}
                   for c in ("carpet", "metal_nut")}
    options = {"categories": Option([], "comma-separated categories to prepare (default: all "
                                        "15; a missing one is then an error)", kind="list")}
    raw_layout = """\
<raw>/<category>/train/good/*.png            (15 categories: bottle, cable, capsule, …)
<raw>/<category>/test/good/*.png
<raw>/<category>/test/<anomaly class>/*.png
<raw>/<category>/ground_truth/<anomaly class>/*_mask.png
(the extracted mvtec_anomaly_detection/ folder; licence/readme files are ignored)"""

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        wanted = opts["categories"] or list(CATEGORIES)
        unknown = sorted(set(wanted) - set(CATEGORIES))
        if unknown:
            raise ConversionError(f"unknown MVTec AD categor{'y' if len(unknown) == 1 else 'ies'}"
                                  f" {', '.join(unknown)}; valid: {', '.join(sorted(CATEGORIES))}")
        root = raw
        if not any((raw / c).is_dir() for c in CATEGORIES):
            inner = raw / "mvtec_anomaly_detection"
            if inner.is_dir():
                root = inner
        missing = [c for c in wanted if not (root / c).is_dir()]
        if missing:
            raise ConversionError(
                f"MVTec AD categor{'y' if len(missing) == 1 else 'ies'} "
                f"{', '.join(missing)} missing under {root} (it contains: {present(root)}); "
                f"restore them or prepare a selection with --option categories=a,b")
        for cat in sorted(wanted):
            self._copy_category(root / cat, cat, conv)
        if opts["categories"]:
            conv.warn(f"prepared a selection of categories: {', '.join(sorted(wanted))}")

    @staticmethod
    def _copy_category(src: Path, cat: str, conv: Conversion) -> None:
        train = require_dir(src / "train", f"{cat} training images")
        extra = sorted(p.name for p in train.iterdir() if p.is_dir() and p.name != "good"
                       and not p.name.startswith("."))
        if extra:
            raise ConversionError(f"{train} holds folders other than good/: {', '.join(extra)}")
        test = require_dir(src / "test", f"{cat} test images")
        for d in (require_dir(train / "good", f"{cat} normal training images"),
                  require_dir(test / "good", f"{cat} normal test images")):
            files = images_in(d)
            if not files:
                raise ConversionError(f"no images in {d}")
            for f in files:
                conv.copy(f, f"{cat}/{d.parent.name}/good/{f.name}")
        classes = sorted(p for p in test.iterdir()
                         if p.is_dir() and p.name != "good" and not p.name.startswith("."))
        if not classes:
            raise ConversionError(f"no anomaly class folders in {test}")
        gt = src / "ground_truth"
        for cdir in classes:
            images = images_in(cdir)
            for f in images:
                conv.copy(f, f"{cat}/test/{cdir.name}/{f.name}")
            mdir = gt / cdir.name
            if not mdir.is_dir():
                conv.warn(f"{cat}: no ground_truth/{cdir.name}/ masks (not needed for "
                          f"image-level scores)")
                continue
            stems = {f.stem for f in images}
            for m in images_in(mdir):
                base = m.stem[:-len("_mask")] if m.stem.endswith("_mask") else m.stem
                if base not in stems:
                    raise ConversionError(f"mask {m} has no image {cdir / base}.png; restore "
                                          f"the image or remove the mask")
                conv.copy(m, f"{cat}/ground_truth/{cdir.name}/{m.name}")
        if gt.is_dir():
            for mdir in sorted(p for p in gt.iterdir() if p.is_dir()):
                if not (test / mdir.name).is_dir():
                    raise ConversionError(f"masks folder {mdir} has no images folder "
                                          f"{test / mdir.name}")
