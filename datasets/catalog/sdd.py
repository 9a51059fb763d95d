"""SDD: Kolektor Surface-Defect Dataset (KolektorSDD) (datasets.md §1.3).

Source: Tabernik et al., "Segmentation-based deep-learning approach for surface-defect
detection", J. Intell. Manuf. 2020; www.vicos.si/resources/kolektorsdd/.
Licence: **CC BY-NC-SA 4.0 (non-commercial)** (as stated in anomalib's module docstring).

Conversion (the released ``convert_SDD.py``): every ``kosXX/PartN.jpg`` (500×≈1,250) and its
mask ``PartN_label.bmp`` are cut along the height into three stacked segments (rows
[0, h//3), [h//3, 2h//3), [2h//3, h)); a segment whose mask segment has a non-zero pixel goes
to ``test/defect/`` (its mask to ``ground_truth/defect/<name>_mask.png``), the others are
normal and split 75/25 (sorted, ``train_test_split``, seed 42; the released script's
``os.listdir`` order is not reproduced byte for byte). Image and mask must have the same
size (otherwise an error naming both files). Output names ``<kosXX>_<PartN>_<segment>.png``,
written as 3-channel PNGs (grey replicated) as the released script's OpenCV colour read/write.

Known count inconsistency: 399 images × 3 = 1,197 segments − 54 defective = 1,143 normal,
split 857 / 286; the paper's Table 5 says 594 train. ``bench data check`` warns, not fails,
on the train count. Subset name: ``SDD`` (the released classname).
"""
from __future__ import annotations

from pathlib import Path

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, find_root, images_in,
                       read_gray, read_rgb, split_normals, split_note)

SUBSET = "SDD"


def _is_mask(p: Path) -> bool:
    return p.stem.endswith("_label")


@register_dataset("sdd")
class SDD(ConvertedDataset):
    title = "KolektorSDD surface defects, 1 anomaly class (image thirds)"
    source = ("Kolektor Surface-Defect Dataset (Tabernik et al., 2020), "
              "https://www.vicos.si/resources/kolektorsdd/ (go.vicos.si/kolektorsdd)")
    license = "CC BY-NC-SA 4.0 (non-commercial, share-alike)"
    non_commercial = True
    subsets = [SUBSET]
    anomaly_classes = {SUBSET: ["defect"]}
    hard_known_classes = {SUBSET: []}  # one anomaly class: no hard setting
    paper_img_size = 448
    exposure_outliers = "mvtec_ad"  # SAOE: the other MVTec AD categories
    img_size_note = "unverified; a third-party reproduction ran SDD at 448"
    expected_counts = {SUBSET: {"train_good": 594, "test_good": 286, "anomalies": 54,
                                "classes": 1}}
    count_notes = {SUBSET: {"train_good": "known benign mismatch: the conversion gives 857 "
                                          "(1,143 normal segments × 75 %), the paper's Table 5 "
                                          "says 594"}}
    raw_layout = """\
<raw>/kos01 … kos50/PartN.jpg          500×≈1250 grayscale images
<raw>/kos01 … kos50/PartN_label.bmp    their masks (same size)"""

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        def has_kos(p: Path) -> bool:
            return any(c.is_dir() and c.name.lower().startswith("kos") for c in p.iterdir())

        root = find_root(raw, has_kos, "folders kos01 … kos50 with PartN.jpg and "
                                      "PartN_label.bmp", wrappers=("KolektorSDD",))
        normals = []   # (name, image path, segment)
        n_defect = 0
        for kos in sorted(p for p in root.iterdir()
                          if p.is_dir() and p.name.lower().startswith("kos")):
            files = images_in(kos)
            images = {p.stem: p for p in files if not _is_mask(p)}
            masks = {p.stem[:-len("_label")]: p for p in files if _is_mask(p)}
            for stem in sorted(set(masks) - set(images)):
                raise ConversionError(f"mask {masks[stem]} has no image {kos / stem}.jpg; "
                                      f"restore the image or remove the mask")
            for stem in sorted(images):
                if stem not in masks:
                    raise ConversionError(f"image {images[stem]} has no mask "
                                          f"{kos / (stem + '_label.bmp')}")
                img, mask = read_rgb(images[stem]), read_gray(masks[stem])
                if img.shape[:2] != mask.shape:
                    raise ConversionError(
                        f"image {images[stem]} is {img.shape[1]}×{img.shape[0]} but its mask "
                        f"{masks[stem]} is {mask.shape[1]}×{mask.shape[0]}; they must match")
                h = img.shape[0]
                if h < 3:
                    raise ConversionError(f"{images[stem]}: image height {h} px is too small "
                                          f"to cut into three segments")
                bounds = [(0, h // 3), (h // 3, 2 * h // 3), (2 * h // 3, h)]
                for seg, (a, b) in enumerate(bounds):
                    name = f"{kos.name}_{stem}_{seg}"
                    src = f"{conv.source_name(images[stem])}#segment{seg}"
                    if mask[a:b].any():
                        conv.write_png(img[a:b], f"{SUBSET}/test/defect/{name}.png", src)
                        conv.write_png(mask[a:b], f"{SUBSET}/ground_truth/defect/{name}_mask.png",
                                       f"{conv.source_name(masks[stem])}#segment{seg}")
                        n_defect += 1
                    else:
                        normals.append((name, images[stem], a, b))
        if not normals and not n_defect:
            raise ConversionError(f"no PartN.jpg images in the kos folders of {root}")
        if not n_defect:
            raise ConversionError(f"no segment of {root} has a non-empty mask; are the "
                                  f"PartN_label.bmp masks blank?")
        train, test = split_normals(normals, what="normal SDD segments")
        for part, items in (("train", train), ("test", test)):
            for name, path, a, b in items:
                seg = name.rsplit("_", 1)[1]
                conv.write_png(read_rgb(path)[a:b], f"{SUBSET}/{part}/good/{name}.png",
                               f"{conv.source_name(path)}#segment{seg}")
        conv.notes["split"] = split_note(False, "normal segments sorted by output name")
