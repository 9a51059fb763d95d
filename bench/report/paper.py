"""The paper's published AUC-ROC (Tables 1, 2 and 7 of the DRA paper, shipped as
``bench/data/paper_auc.csv``) beside our own numbers: ``bench report --compare-paper``.

Rows are matched by the paper's names: the general setting by dataset (MVTec AD categories
by category), the hard setting by dataset/category and the Table 2 name of the known class
(datasets.md §3).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

import pandas as pd

from .tables import DISPLAY

PAPER_CSV = Path(__file__).resolve().parent.parent / "data" / "paper_auc.csv"

# Our dataset names → the paper's row names (MVTec AD rows are named by category).
_DATASET_NAMES = {"aitex": "AITEX", "sdd": "SDD", "elpv": "ELPV", "optical": "Optical",
                  "mastcam": "Mastcam", "brainmri": "BrainMRI", "headct": "HeadCT",
                  "hyper_kvasir": "Hyper-Kvasir"}
# Known-class folders whose Table 2 name is not simply the capitalised folder name.
_KNOWN_CLASS_NAMES = {"metal_contamination": "Metal",
                      "barretts-short-segment": "Barretts-short-seg"}


@lru_cache(maxsize=1)
def paper_table() -> pd.DataFrame:
    """The published numbers: table, setting, dataset, subset, method, shots, mean, std."""
    df = pd.read_csv(PAPER_CSV)
    df["subset"] = df["subset"].fillna("")
    return df


def paper_row_name(dataset: str, subset: str, setting: str,
                   known_class: Optional[str]) -> Optional[tuple[str, str]]:
    """(paper dataset, paper subset) of one of our table rows, or None if the paper has none."""
    if dataset == "mvtec_ad":
        name = subset.capitalize()          # carpet → Carpet, metal_nut → Metal_nut
    elif dataset in _DATASET_NAMES:
        name = _DATASET_NAMES[dataset]
    else:
        return None
    if setting == "general":
        return name, ""
    if not known_class:
        return None
    kc = _KNOWN_CLASS_NAMES.get(known_class)
    if kc is None:
        kc = known_class if dataset == "aitex" else known_class[:1].upper() + known_class[1:]
    return name, kc


def compare_with_paper(summary: pd.DataFrame) -> pd.DataFrame:
    """Our mean/std/n next to the paper's mean/std for every cell the paper reports (AUC-ROC);
    ``delta`` = ours − paper."""
    paper = paper_table()
    rows = []
    for r in summary.itertuples(index=False):
        key = paper_row_name(r.dataset, r.subset, r.setting, r.known_class or None)
        if key is None:
            continue
        hit = paper[(paper["setting"] == r.setting) & (paper["dataset"] == key[0]) &
                    (paper["subset"] == key[1]) &
                    (paper["method"] == DISPLAY.get(r.method, r.method)) &
                    (paper["shots"] == int(r.shots))]
        if hit.empty:
            continue
        p = hit.iloc[0]
        rows.append({"dataset": r.dataset, "subset": r.subset, "setting": r.setting,
                     "known_class": r.known_class, "method": r.method, "shots": int(r.shots),
                     "ours_mean": r.mean, "ours_std": r.std, "n": r.n,
                     "paper_mean": float(p["mean"]), "paper_std": float(p["std"]),
                     "delta": (r.mean - float(p["mean"])) if pd.notna(r.mean) else None,
                     "paper_table": int(p["table"])})
    return pd.DataFrame(rows, columns=["dataset", "subset", "setting", "known_class", "method",
                                       "shots", "ours_mean", "ours_std", "n", "paper_mean",
                                       "paper_std", "delta", "paper_table"])
