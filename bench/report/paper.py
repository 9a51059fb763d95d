"""The paper's published AUC-ROC (Tables 1, 2 and 7 of the DRA paper, shipped as
``bench/data/paper_auc.csv``) beside our own numbers: ``bench report --compare-paper``.

Rows are matched by the paper's names: the general setting by dataset (MVTec AD categories
by category), the hard setting by dataset/category and the Table 2 name of the known class
(datasets.md §3). Each row says how its configuration differs from the paper preset (preset,
image size, weights, training budget, outlier source), as recorded at planning, so a delta
of a quick run is never read as a reproduction.
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


CROSS_DOMAIN_CSV = PAPER_CSV.parent / "paper_cross_domain.csv"


@lru_cache(maxsize=1)
def paper_table() -> pd.DataFrame:
    """The published numbers: table, setting, dataset, subset, method, shots, mean, std.
    Table 9 (cross-domain, one number per cell, no std) is added from
    ``paper_cross_domain.csv``: its rows are the target textures, its methods the source
    textures (the ``table9`` grid's column labels) and KDAD, all without labelled anomalies
    of the target (shots 0)."""
    df = pd.read_csv(PAPER_CSV)
    df["subset"] = df["subset"].fillna("")
    cross = pd.read_csv(CROSS_DOMAIN_CSV)
    t9 = pd.DataFrame({"table": 9, "setting": "general",
                       "dataset": cross["target"].str.capitalize(), "subset": "",
                       "method": cross["source"], "shots": 0, "mean": cross["auc"],
                       "std": float("nan")})
    return pd.concat([df, t9], ignore_index=True)


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
                     "variant": getattr(r, "variant", "") or "",
                     "ours_mean": r.mean, "ours_std": r.std, "n": r.n,
                     "paper_mean": float(p["mean"]), "paper_std": float(p["std"]),
                     "delta": (r.mean - float(p["mean"])) if pd.notna(r.mean) else None,
                     "paper_table": int(p["table"]),
                     "differs_from_paper": getattr(r, "paper_deviations", None) or ""})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


COMPARISON_COLUMNS = ["dataset", "subset", "setting", "known_class", "method", "shots",
                      "variant", "ours_mean", "ours_std", "n", "paper_mean", "paper_std",
                      "delta", "paper_table", "differs_from_paper"]


def paper_report(summary: pd.DataFrame) -> tuple[str, Optional[str]]:
    """(Markdown for the console and paper_comparison.md, CSV text or None). With no row of
    ``summary`` on the paper's data the text says so and there is no CSV. Configurations
    that differ from the paper preset are listed above the table."""
    from .tables import _cell

    comp = compare_with_paper(summary)
    ours = sorted(set(summary["dataset"]))
    if comp.empty:
        return (f"no row of these results is in the paper's tables: they hold "
                f"{', '.join(ours)}, the paper reports {', '.join(_PAPER_DATASETS)}; "
                f"nothing to compare (no paper_comparison file written)\n"), None
    lines = ["### Ours vs the paper (AUC-ROC)", ""]
    missing = [d for d in ours if d not in _PAPER_DATASETS]
    if missing:
        lines += [f"Not in the paper (left out): {', '.join(missing)}.", ""]
    differing = comp[comp["differs_from_paper"] != ""]
    if not differing.empty:
        lines.append(f"**Warning: {len(differing)} of {len(comp)} rows come from a "
                     f"configuration that differs from the paper's; their deltas do not "
                     f"measure a reproduction:**")
        for devs, grp in differing.groupby("differs_from_paper", sort=True):
            who = ", ".join(sorted(set(grp["method"])))
            lines.append(f"- {who} ({len(grp)} rows): {devs}")
        lines.append("")
    shown = comp.assign(ours=[_cell(m, s, n, n) for m, s, n in
                              zip(comp.ours_mean, comp.ours_std, comp.n)],
                        paper=[f"{m:.3f}±{s:.3f}" for m, s in
                               zip(comp.paper_mean, comp.paper_std)],
                        delta=comp.delta.map(lambda d: "" if pd.isna(d) else f"{d:+.3f}"),
                        config=comp.differs_from_paper.map(
                            lambda d: "differs" if d else "paper preset"))
    cols = ["dataset", "subset", "setting", "known_class", "method", "shots"] + \
        (["variant"] if (comp["variant"] != "").any() else []) + \
        ["ours", "paper", "delta", "config"]
    lines.append(shown[cols].to_markdown(index=False, disable_numparse=True))
    return "\n".join(lines) + "\n", comp.to_csv(index=False)


_PAPER_DATASETS = ["mvtec_ad"] + list(_DATASET_NAMES)
