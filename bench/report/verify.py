"""Our numbers beside the paper's, cell by cell, and ``bench verify``: which cells fall
outside the tolerance.

A cell holds when ``|ours − paper| <= max(tol, paper's std)``: the paper's own spread over
its three runs is the least a reproduction can be asked to match. Grid tables are compared
cell by cell including their Mean rows (the paper reports those too); a column is compared
only when its label is the paper's method name (a loss or pseudo-anomaly variant of DRA is
not the paper's DRA).
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np
import pandas as pd

from .paper import paper_table

COLUMNS = ["table", "dataset", "row", "method", "shots", "ours", "n", "paper", "paper_std",
           "delta", "allowed", "holds", "differs_from_paper"]


def _paper_key(table, group: str, row: str, is_mean: bool) -> tuple[str, str]:
    if table.setting == "general":
        if group == "MVTec AD":
            return ("MVTec AD", "") if is_mean else (row, "")
        return group, ""
    return group, "Mean" if is_mean else row


def _paper_group_size(sel: pd.DataFrame, table, group: str) -> int:
    """How many rows the paper's Mean row of ``group`` averages."""
    from .paper import _DATASET_NAMES

    if table.setting == "general":
        rows = sel[~sel["dataset"].isin(list(_DATASET_NAMES.values()) + ["MVTec AD"])]
        return rows["dataset"].nunique()
    rows = sel[(sel["dataset"] == group) & ~sel["subset"].isin(["Mean", ""])]
    return rows["subset"].nunique()


def _n_of(text: str, planned: int) -> int:
    m = re.search(r"\(n=(\d+)\)", text)
    return int(m.group(1)) if m else planned


def grid_comparison(tables, prefer_table: Optional[int] = None,
                    deviations: str = "") -> pd.DataFrame:
    """One row per cell of the grid tables that the paper reports (Mean rows included)."""
    paper = paper_table()
    rows = []
    for t in tables:
        sel = paper[paper["setting"] == t.setting]
        for (group, row, is_mean), means, texts in zip(t.rows, t.means, t.text):
            ds, sub = _paper_key(t, group, row, is_mean)
            if is_mean and t.group_sizes.get(group) != _paper_group_size(sel, t, group):
                continue  # our Mean averages other rows than the paper's: not comparable
            for (label, k), v, text in zip(t.columns, means, texts):
                hit = sel[(sel["dataset"] == ds) & (sel["subset"] == sub) &
                          (sel["method"] == label) & (sel["shots"] == k)]
                if hit.empty:
                    continue
                if prefer_table is not None and (hit["table"] == prefer_table).any():
                    hit = hit[hit["table"] == prefer_table]
                p = hit.iloc[0]
                rows.append({"table": int(p["table"]), "dataset": ds,
                             "row": "Mean" if is_mean else (row or ds), "method": label,
                             "shots": int(k), "ours": v, "n": _n_of(text, 1),
                             "paper": float(p["mean"]), "paper_std": float(p["std"]),
                             "differs_from_paper": deviations})
    return pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in
                                       ("delta", "allowed", "holds")])


def summary_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """The same rows for an ordinary sweep's summary (no Mean rows)."""
    from .paper import compare_with_paper

    comp = compare_with_paper(summary)
    return pd.DataFrame({
        "table": comp["paper_table"], "dataset": comp["dataset"],
        "row": [f"{s}/{k}" if k else s for s, k in zip(comp["subset"], comp["known_class"])],
        "method": comp["method"], "shots": comp["shots"], "ours": comp["ours_mean"],
        "n": comp["n"], "paper": comp["paper_mean"], "paper_std": comp["paper_std"],
        "differs_from_paper": comp["differs_from_paper"]})


def check(comp: pd.DataFrame, tol: float) -> pd.DataFrame:
    """Add delta, allowed (= max(tol, paper std)) and holds (True/False; None where we
    have no finished run: not a miss, reported apart)."""
    comp = comp.copy()
    comp["delta"] = comp["ours"] - comp["paper"]
    comp["allowed"] = np.maximum(tol, comp["paper_std"].fillna(0))
    holds = comp["delta"].abs() <= comp["allowed"] + 1e-12
    comp["holds"] = [None if pd.isna(d) else bool(h) for d, h in zip(comp["delta"], holds)]
    return comp[COLUMNS]


def paper_text(mean: float, std: float) -> str:
    """The paper's cell as printed there: mean±std, or the mean alone (Table 9 has no std)."""
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f}±{std:.3f}"


def misses(comp: pd.DataFrame) -> pd.DataFrame:
    return comp[comp["holds"].map(lambda h: h is False)]


def comparison_markdown(comp: pd.DataFrame) -> str:
    """Every compared cell: ours, the paper's, the delta and whether it holds."""
    shown = comp.assign(
        ours=comp["ours"].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}"),
        paper=[paper_text(m, s) for m, s in zip(comp["paper"], comp["paper_std"])],
        delta=comp["delta"].map(lambda d: "" if pd.isna(d) else f"{d:+.3f}"),
        allowed=comp["allowed"].map(lambda a: f"±{a:.3f}"),
        holds=comp["holds"].map(lambda h: "not run" if h is None else "yes" if h
                                else "**no**"))
    cols = ["table", "dataset", "row", "method", "shots", "ours", "paper", "delta", "allowed",
            "holds"]
    return shown[cols].to_markdown(index=False, disable_numparse=True) + "\n"


def verify_lines(comp: pd.DataFrame, tol: float) -> list[str]:
    """Console lines: each cell outside the tolerance, then the count."""
    missed = misses(comp)
    lines = []
    for r in missed.itertuples(index=False):
        lines.append(f"miss: Table {r.table} {r.dataset} {r.row} {r.method} shots={r.shots}: "
                     f"ours {r.ours:.3f}, paper {paper_text(r.paper, r.paper_std)} (delta "
                     f"{r.delta:+.3f}), allowed ±{r.allowed:.3f}")
    devs = sorted({d for d in comp["differs_from_paper"] if d})
    for d in devs:
        lines.append(f"note: some cells come from a configuration that differs from the "
                     f"paper's ({d}); a delta there does not test a reproduction")
    compared = int(comp["holds"].map(lambda h: h is not None).sum())
    lines.append(f"{compared - len(missed)} of {compared} cells within max(tol {tol}, the "
                 f"paper's std) of the paper; {len(missed)} outside"
                 + (f"; {len(comp) - compared} cells of the paper without a finished run "
                    f"here (not compared)" if compared < len(comp) else ""))
    return lines
