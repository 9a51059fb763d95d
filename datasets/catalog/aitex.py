"""AITEX fabric defects (datasets.md §1.2).

Source: AITEX Fabric Image Database (Silvestre-Blanes et al., AUTEX Research Journal 2019),
www.aitex.es/afid/. Licence: not verified (the notes found no licence statement); check the
AITEX terms before redistributing.

Conversion (the released ``convert_AITEX.py``, with explicit checks instead of crashes):

* raw strips are 4096×256 grayscale PNGs; the tile side is the strip height, which must be
  256 (anything else is an error naming the strip);
* every defect-free strip ``NODefect_images/<fabric>/<strip>.png`` is cut into
  ceil(width/256) tiles (16 for the 4096-px strips) named ``<fabric>_<strip>_<k>.png``; all
  normal tiles are pooled and split 75/25 (sorted, ``train_test_split``, seed 42 — the
  released script's split follows ``os.listdir`` order and is not reproduced byte for byte);
* every defect strip ``Defect_images/<strip>.png`` is cut the same way with its mask
  ``Mask_images/<strip>_mask.png``; a tile is kept only if its mask tile has a non-zero pixel
  and goes to ``test/<class>/<strip>_<k>.png`` (k = position in the strip), its mask to
  ``ground_truth/<class>/<strip>_<k>_mask.png``; defect-strip tiles with an empty mask are
  discarded, as in the released script;
* the class is the second ``_`` token of the strip name (002 → Broken_end, …);
* tiles are written as 3-channel PNGs (grey replicated), as the released script's OpenCV
  colour-mode read/write does; masks as 1-channel PNGs;
* both archive variants are accepted: ``Defect_images/*.png`` or
  ``Defect_images/Defect_images/*.png`` (same for ``Mask_images``).

Archive irregularities (§1.2): two strips come with partial masks ``…_mask1/_mask2`` and
``0100_025_08`` with none; the released script stops at the first missing mask. Here a
missing mask is an error naming the strip unless ``--option aitex_merge_partial_masks=true``
(union of the partial masks) or ``--option aitex_drop_unmasked=true`` (drop strips without any
mask) is given; both are recorded in ``.prepared``. How the authors resolved this is [open].
Subset name: ``AITEX`` (the released classname).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, Option, images_in,
                       read_gray, read_rgb, require_dir, split_normals, split_note)

SUBSET = "AITEX"
TILE = 256
STRIP_WIDTH = 4096
DEFECT_CODES = {"002": "Broken_end", "006": "Broken_yarn", "010": "Broken_pick",
                "016": "Weft_curling", "019": "Fuzzyball", "022": "Cut_selvage",
                "023": "Crease", "025": "Warp_ball", "027": "Knots", "029": "Contamination",
                "030": "Nep", "036": "Weft_crack"}
_MASK_RE = re.compile(r"^(?P<strip>.+)_mask(?P<part>\d*)$")


def _flat_or_nested(raw: Path, name: str) -> Path:
    """``raw/name/name`` if that nested variant holds files, else ``raw/name``."""
    flat = require_dir(raw / name, f"AITEX {name}")
    nested = flat / name
    if nested.is_dir():
        if images_in(flat):
            raise ConversionError(f"both {flat} and {nested} hold images; keep one variant of "
                                  f"the AITEX archive")
        return nested
    return flat


@register_dataset("aitex")
class AITEX(ConvertedDataset):
    title = "AITEX fabric defects, 12 anomaly classes (256×256 tiles of 4096×256 strips)"
    source = ("AITEX Fabric Image Database (Silvestre-Blanes et al., 2019), "
              "https://www.aitex.es/afid/ (paper link tinyurl.com/ai-tex-defect)")
    license = "not verified (no licence statement found); check the AITEX terms of use"
    subsets = [SUBSET]
    anomaly_classes = {SUBSET: sorted(DEFECT_CODES.values())}
    hard_known_classes = {SUBSET: ["Broken_end", "Broken_pick", "Cut_selvage", "Fuzzyball",
                                   "Nep", "Weft_crack"]}
    paper_img_size = 224
    exposure_outliers = "mvtec_ad"  # SAOE: the other MVTec AD categories
    img_size_note = ("unverified: 224 for the 256 px tiles is a reasoned reading of 'resized "
                     "according to the original resolution', datasets.md §0")
    expected_counts = {SUBSET: {"train_good": 1692, "test_good": 564, "anomalies": 183,
                                "classes": 12}}
    count_notes = {SUBSET: {
        "anomalies": "the anomaly count depends on how the three irregular strips "
                     "(0044_019_04, 0097_030_03 partial masks; 0100_025_08 no mask) are "
                     "handled, which the paper does not say [open]",
        "classes": "classes with no kept tile get no folder; per-class counts unknown [open]"}}
    options = {
        "aitex_merge_partial_masks": Option(False, "use the union of <strip>_mask1.png, "
                                                   "_mask2.png … when <strip>_mask.png is missing"),
        "aitex_drop_unmasked": Option(False, "drop defect strips that have no mask at all "
                                             "(e.g. 0100_025_08) instead of failing"),
    }
    raw_layout = """\
<raw>/NODefect_images/<fabric folder>/<strip>.png   defect-free 4096×256 strips
<raw>/Defect_images[/Defect_images]/<strip>.png     defective strips, <strip> = NNNN_CCC_NN
<raw>/Mask_images[/Mask_images]/<strip>_mask.png    their masks (same size as the strip)"""

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        nodefect = require_dir(raw / "NODefect_images", "AITEX defect-free strips")
        defect_dir = _flat_or_nested(raw, "Defect_images")
        mask_dir = _flat_or_nested(raw, "Mask_images")

        loose = images_in(nodefect)
        if loose:
            raise ConversionError(f"{loose[0]}: defect-free strips must sit in fabric folders "
                                  f"NODefect_images/<fabric>/, found loose files in {nodefect}")
        normal_tiles = []  # (name, strip path, k)
        for fabric in sorted(p for p in nodefect.iterdir()
                             if p.is_dir() and not p.name.startswith(".")):
            for strip in images_in(fabric):
                img = self._strip(strip, conv)
                for k in range(math.ceil(img.shape[1] / TILE)):
                    normal_tiles.append((f"{fabric.name}_{strip.stem}_{k}.png", strip, k))
        if not normal_tiles:
            raise ConversionError(f"no defect-free strips under {nodefect}/<fabric>/")

        masks: dict[str, dict[str, Path]] = {}  # strip -> {"": full mask, "1": part 1, …}
        for m in images_in(mask_dir):
            hit = _MASK_RE.match(m.stem)
            if not hit:
                raise ConversionError(f"{m}: mask names must be <strip>_mask.png (or "
                                      f"<strip>_maskN.png for partial masks)")
            masks.setdefault(hit["strip"], {})[hit["part"]] = m
        strips = images_in(defect_dir)
        if not strips:
            raise ConversionError(f"no defect strips in {defect_dir}")
        names = {s.stem for s in strips}
        orphans = sorted(set(masks) - names)
        if orphans:
            m = masks[orphans[0]]
            raise ConversionError(f"mask {next(iter(m.values()))} has no defect image "
                                  f"{defect_dir / (orphans[0] + '.png')} ({len(orphans)} "
                                  f"orphan mask(s): {', '.join(orphans[:5])}); restore the "
                                  f"image or remove the mask")
        dropped = []
        n_anom = 0
        for strip in strips:
            parts = strip.stem.split("_")
            code = parts[1] if len(parts) >= 2 else ""
            if code not in DEFECT_CODES:
                raise ConversionError(f"{strip}: defect code {code!r} (second '_' token of the "
                                      f"name) is not one of the 12 AITEX codes "
                                      f"{', '.join(sorted(DEFECT_CODES))}")
            cls = DEFECT_CODES[code]
            mask = self._mask_for(strip, masks.get(strip.stem, {}), opts, mask_dir, conv)
            if mask is None:
                dropped.append(strip.stem)
                continue
            img = self._strip(strip, conv)
            found = masks.get(strip.stem, {})
            mask_path = found.get("") or found[min(found, key=int)]
            if mask.shape != img.shape[:2]:
                raise ConversionError(f"mask {mask_path} is {mask.shape[1]}×{mask.shape[0]} but "
                                      f"its strip {strip} is {img.shape[1]}×{img.shape[0]}; "
                                      f"they must have the same size")
            for k in range(math.ceil(img.shape[1] / TILE)):
                mtile = mask[:, k * TILE:(k + 1) * TILE]
                if not mtile.any():
                    continue  # empty mask tile: discarded, as in the released script
                src = f"{conv.source_name(strip)}#tile{k}"
                conv.write_png(img[:, k * TILE:(k + 1) * TILE],
                               f"{SUBSET}/test/{cls}/{strip.stem}_{k}.png", src)
                conv.write_png(mtile, f"{SUBSET}/ground_truth/{cls}/{strip.stem}_{k}_mask.png",
                               f"{conv.source_name(mask_path)}#tile{k}")
                n_anom += 1
        if n_anom == 0:
            raise ConversionError(f"no defect tile with a non-empty mask under {defect_dir}; "
                                  f"are the masks blank?")

        train, test = split_normals(normal_tiles, what="defect-free AITEX tiles")
        cache: dict[Path, np.ndarray] = {}
        for part, items in (("train", train), ("test", test)):
            for name, strip, k in sorted(items):
                if strip not in cache:
                    cache.clear()  # tiles of one strip are consecutive once sorted by name
                    cache[strip] = self._strip(strip, conv)
                conv.write_png(cache[strip][:, k * TILE:(k + 1) * TILE],
                               f"{SUBSET}/{part}/good/{name}",
                               f"{conv.source_name(strip)}#tile{k}")
        conv.notes["split"] = split_note(False, "normal tiles sorted by output name")
        if dropped:
            conv.notes["dropped_strips"] = dropped

    @staticmethod
    def _strip(path: Path, conv: Conversion) -> np.ndarray:
        img = read_rgb(path)
        h, w = img.shape[:2]
        if h != TILE:
            raise ConversionError(f"{path}: strip height is {h} px, expected {TILE} (AITEX strips "
                                  f"are {STRIP_WIDTH}×{TILE}); is this the right file?")
        if w % TILE:
            conv.warn(f"{path.name}: width {w} is not a multiple of {TILE}; its last tile is "
                      f"{w % TILE} px wide (as in the released script)")
        elif w != STRIP_WIDTH:
            conv.warn(f"{path.name}: width {w}, expected {STRIP_WIDTH}; cut into {w // TILE} tiles")
        return img

    @staticmethod
    def _mask_for(strip: Path, found: dict[str, Path], opts: dict, mask_dir: Path,
                  conv: Conversion):
        if "" in found:
            return read_gray(found[""])
        partial = [found[k] for k in sorted(found, key=int)] if found else []
        if partial and opts["aitex_merge_partial_masks"]:
            merged = None
            for p in partial:
                m = read_gray(p)
                if merged is not None and m.shape != merged.shape:
                    raise ConversionError(f"partial masks {partial[0]} and {p} differ in size")
                merged = m if merged is None else np.maximum(merged, m)
            conv.warn(f"{strip.stem}: merged partial masks "
                      f"{', '.join(p.name for p in partial)} (aitex_merge_partial_masks)")
            return merged
        if not partial and opts["aitex_drop_unmasked"]:
            conv.warn(f"{strip.stem}: no mask, strip dropped (aitex_drop_unmasked)")
            return None
        if partial:
            raise ConversionError(
                f"defect strip {strip} has no mask {mask_dir / (strip.stem + '_mask.png')}, only "
                f"partial masks {', '.join(p.name for p in partial)}; pass --option "
                f"aitex_merge_partial_masks=true to use their union (recorded)")
        raise ConversionError(
            f"defect strip {strip} has no mask {mask_dir / (strip.stem + '_mask.png')}; add the "
            f"mask, remove the strip, or pass --option aitex_drop_unmasked=true (recorded)")
