"""LAG: fundus images used as external pseudo-anomalies for the medical datasets
(datasets.md §1.10).

Source: Li et al., "Attention based glaucoma detection: a large-scale database and CNN
model" (CVPR 2019; extended in IEEE TMI 2020), github.com/smilell/AG-CNN (access on request).
Licence / access terms: not verified; research use as granted by the authors.

LAG is not a benchmark dataset but an **outlier source**: DRA pools every file under
``<outlier_root>/<X>/train/good/`` (skipping an ``<X>`` equal to the target classname), so the
converter lays the images out as ``<data root>/lag/LAG/train/good/`` — pass the ``lag``
folder as the outlier root. Which LAG images the paper used (all, non-glaucoma only, …) is
not recorded [open]: by default both groups (``non_glaucoma``, ``suspicious_glaucoma``) are
pooled; ``--option lag_groups=non_glaucoma`` selects groups (recorded in ``.prepared``).
Attention maps are never copied. Output names are ``<group>_<file>`` so the two groups cannot
collide. The raw layout below is the one of the database as distributed [unverified].
"""
from __future__ import annotations

from pathlib import Path

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, Option, find_root,
                       images_in)
from ..images import is_image_file

SUBSET = "LAG"
GROUPS = ["non_glaucoma", "suspicious_glaucoma"]


def _group_images(group_dir: Path) -> list[Path]:
    """Fundus images of one group: ``<group>/image/`` if present, else ``<group>/`` itself;
    attention maps excluded."""
    img_dir = group_dir / "image"
    folder = img_dir if img_dir.is_dir() else group_dir
    return [p for p in images_in(folder) if "attention" not in p.name.lower()]


@register_dataset("lag")
class LAG(ConvertedDataset):
    title = "LAG glaucoma fundus images (external pseudo-anomaly source)"
    source = ("Li et al., CVPR 2019 / IEEE TMI 2020, 'Attention based glaucoma detection'; "
              "github.com/smilell/AG-CNN (on request)")
    license = "not verified (access granted by the authors on request); research use"
    outlier_source = True
    subsets = [SUBSET]
    options = {"lag_groups": Option(list(GROUPS), "comma-separated LAG groups to pool "
                                                   "(non_glaucoma, suspicious_glaucoma)",
                                    kind="list")}
    notes = ["which LAG images the paper pooled is not recorded [open]; the default pools all",
             "used by the paper preset of brainmri, headct and hyper_kvasir"]
    raw_layout = """\
<raw>/non_glaucoma/[image/]*.jpg          non-glaucoma fundus images
<raw>/suspicious_glaucoma/[image/]*.jpg   suspicious-glaucoma fundus images
(attention_map/ folders are ignored; a wrapping folder such as LAG/ is found automatically)"""

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        root = find_root(raw, lambda p: any((p / g).is_dir() for g in GROUPS),
                         "folders non_glaucoma/ and/or suspicious_glaucoma/",
                         wrappers=("LAG", "LAG_database"))
        groups = opts["lag_groups"]
        bad = sorted(set(groups) - set(GROUPS))
        if bad or not groups:
            raise ConversionError(f"lag_groups {', '.join(bad) or '(empty)'} not valid; choose "
                                  f"from {', '.join(GROUPS)}")
        n = 0
        for g in groups:
            gdir = root / g
            if not gdir.is_dir():
                raise ConversionError(f"missing LAG group folder {gdir}; {root} holds "
                                      f"{', '.join(sorted(p.name for p in root.iterdir()))}. "
                                      f"Select present groups with --option lag_groups=…")
            files = _group_images(gdir)
            if not files:
                raise ConversionError(f"no images in {gdir} (or {gdir / 'image'})")
            for f in files:
                conv.copy(f, f"{SUBSET}/train/good/{g}_{f.name}")
                n += 1
        conv.notes["pooled_groups"] = groups

    def count_output(self, root: Path) -> dict[str, dict]:
        """An outlier source has only ``<X>/train/good``."""
        counts = {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            good = sub / "train" / "good"
            n = sum(1 for p in good.iterdir() if p.is_file() and is_image_file(p)) \
                if good.is_dir() else 0
            if not n:
                raise ConversionError(f"outlier source folder {good} holds no images")
            counts[sub.name] = {"train_good": n}
        return counts
