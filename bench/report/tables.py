"""Run records → one tidy pandas frame → mean±std tables (Markdown, CSV, LaTeX booktabs).

The record folders are the single source of truth: every number here is recomputed from
them. Standard deviations are sample standard deviations (ddof = 1) over seeds; a cell shows
``n`` when fewer runs finished than were planned for it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..store import STATUSES, sweep_stores

DISPLAY = {"kdad": "KDAD", "devnet": "DevNet", "flos": "FLOS", "saoe": "SAOE", "mlep": "MLEP",
           "deepsad": "DeepSAD", "minns": "MINNS", "dra": "DRA", "dra1a": "DRA1A",
           "dra2a": "DRA2A", "dra3ar": "DRA3Ar", "dra3an": "DRA3An"}
ORDER = list(DISPLAY)
RUN_COLUMNS = ["sweep", "run_id", "method", "dataset", "subset", "setting", "known_class",
               "shots", "seed", "split_seed", "status", "auroc", "auprc", "auroc_seen",
               "auroc_unseen", "n_test", "n_test_anomalies", "fit_s", "score_s", "load_s",
               "peak_gpu_mem_mb", "reason"]


def load_runs(results: Path | str, sweeps: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per run record under ``results`` (all sweeps, or the named ones)."""
    rows = []
    for store in sweep_stores(results, sweeps):  # an unknown sweep name lists the present ones
        rows.extend(store.records())
    df = pd.DataFrame(rows)
    for c in RUN_COLUMNS:
        if c not in df.columns:
            df[c] = None
    extra = [c for c in df.columns if c not in RUN_COLUMNS and c not in ("traceback",
                                                                          "method_state")]
    df = df[RUN_COLUMNS + extra]
    if len(df):
        df["known_class"] = df["known_class"].fillna("")
        df = df.sort_values(["dataset", "subset", "setting", "known_class", "method", "shots",
                             "seed"], kind="stable").reset_index(drop=True)
    return df


def summarize(runs: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """mean, sample std and n of ``metric`` per (dataset, subset, setting, known class,
    method, shots), with ``planned`` = the number of seeds recorded for that cell."""
    keys = ["dataset", "subset", "setting", "known_class", "method", "shots"]
    if runs.empty:
        return pd.DataFrame(columns=keys + ["mean", "std", "n", "planned"])
    planned = runs.groupby(keys, dropna=False)["seed"].nunique().rename("planned")
    done = runs[(runs["status"] == "done") & runs[metric].notna()].copy()
    done[metric] = done[metric].astype(float)
    agg = done.groupby(keys, dropna=False)[metric].agg(
        mean="mean", std=lambda s: float(s.std(ddof=1)) if len(s) > 1 else np.nan, n="count")
    out = planned.to_frame().join(agg, how="left").reset_index()
    out["n"] = out["n"].fillna(0).astype(int)
    return out


def _cell(mean, std, n, planned, digits=3) -> str:
    if n == 0 or pd.isna(mean):
        return "–"
    s = f"{mean:.{digits}f}" + (f"±{std:.{digits}f}" if not pd.isna(std) else "")
    return s + (f" (n={n})" if n < planned else "")


def _col_name(method: str, shots: int) -> str:
    name = DISPLAY.get(method, method)
    return name if shots == 0 else f"{name} ({shots})"


def wide_table(summary: pd.DataFrame, setting: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells as text, means as floats): one row per dataset/subset (hard: per known class,
    with a Mean row per dataset/subset group), one column per method and shot count."""
    s = summary[summary["setting"] == setting].copy()
    if s.empty:
        return pd.DataFrame(), pd.DataFrame()
    row_keys = ["dataset", "subset"] + (["known_class"] if setting == "hard" else [])
    s["_order"] = s["method"].map(lambda m: ORDER.index(m) if m in ORDER else len(ORDER))
    cols = (s[["shots", "_order", "method"]].drop_duplicates()
            .sort_values(["shots", "_order", "method"]))
    col_list = [(m, int(k)) for k, _, m in cols.itertuples(index=False)]
    text_rows, mean_rows, index = [], [], []
    for key, grp in s.groupby(row_keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        by = {(r.method, int(r.shots)): r for r in grp.itertuples()}
        text_rows.append([_cell(by[c].mean, by[c].std, by[c].n, by[c].planned) if c in by
                          else "" for c in col_list])
        mean_rows.append([by[c].mean if c in by else np.nan for c in col_list])
        index.append(key)
    text = pd.DataFrame(text_rows, index=pd.MultiIndex.from_tuples(index, names=row_keys),
                        columns=[_col_name(m, k) for m, k in col_list])
    means = pd.DataFrame(mean_rows, index=text.index, columns=text.columns)
    # A Mean row per group with several rows (paper: "MVTec AD" mean row, hard-setting Mean).
    group_keys = row_keys[:-1]
    if group_keys:
        out_t, out_m = [], []
        for g, gm in means.groupby(level=group_keys, sort=False):
            gt = text.loc[gm.index]
            out_t.append(gt)
            out_m.append(gm)
            if len(gm) > 1:
                g = g if isinstance(g, tuple) else (g,)
                idx = pd.MultiIndex.from_tuples([g + ("Mean",)], names=row_keys)
                mrow = gm.mean(axis=0, skipna=False).to_frame().T.set_index(idx)
                out_m.append(mrow)
                out_t.append(mrow.map(lambda v: "–" if pd.isna(v) else f"{v:.3f}"))
        text, means = pd.concat(out_t), pd.concat(out_m)
    return text, means


def _best_mask(means: pd.DataFrame) -> pd.DataFrame:
    """True where a cell holds the best mean of its row within its shot group (0-shot
    columns compete in every group)."""
    mask = pd.DataFrame(False, index=means.index, columns=means.columns)
    shots_of = {c: (int(c.rsplit("(", 1)[1].rstrip(")")) if c.endswith(")") else 0)
                for c in means.columns}
    groups = sorted({k for k in shots_of.values() if k > 0}) or [0]
    for k in groups:
        cols = [c for c in means.columns if shots_of[c] in (0, k)]
        if len(cols) < 2:
            continue
        sub = means[cols]
        best = sub.max(axis=1)
        for c in cols:
            mask.loc[:, c] |= (sub[c] == best) & sub[c].notna()
    return mask


def shots_legend(columns) -> str:
    """What the ``(N)`` in a column name means, for tables that have such a column."""
    if not any(re.search(r"\(\d+\)", str(c)) for c in columns):
        return ""
    return ("(N) after a method: N labelled anomalies per run (shots); no (N): the method "
            "uses none")


def to_markdown(text: pd.DataFrame) -> str:
    flat = text.reset_index()
    legend = shots_legend(text.columns)
    return (legend + "\n\n" if legend else "") + flat.to_markdown(index=False,
                                                                   disable_numparse=True)


def to_latex(text: pd.DataFrame, means: pd.DataFrame, caption: str = "") -> str:
    """booktabs table, best mean per row (and shot group) in bold."""
    best = _best_mask(means)
    idx_names = list(text.index.names)
    cols = list(text.columns)
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * len(idx_names) + "c" * len(cols) + "}", r"\toprule",
             " & ".join([esc(n.replace("_", " ").capitalize()) for n in idx_names] +
                        [esc(c) for c in cols]) + r" \\", r"\midrule"]
    prev = None
    for key, row in text.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        if prev is not None and key[0] != prev:
            lines.append(r"\midrule")
        prev = key[0]
        cells = []
        for c in cols:
            v = esc(row[c])
            cells.append(r"\textbf{" + v + "}" if best.loc[key, c] is True or
                         bool(best.loc[key, c]) else v)
        lines.append(" & ".join([esc(k) for k in key] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = "; ".join(x for x in (caption, shots_legend(cols)) if x)
    if caption:
        lines.append(r"\caption{" + esc(caption) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_report(results: Path | str, out: Path | str, formats: list[str],
                 sweeps: Optional[list[str]] = None, metric: str = "auroc",
                 compare_paper: bool = False) -> dict:
    """Write runs.csv and the summary tables; returns {"markdown": str, ...} for printing."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(results, sweeps)
    if runs.empty:
        raise FileNotFoundError(f"no run records under {results}; run `bench run` first")
    _atomic_text(out / "runs.csv", runs.to_csv(index=False))
    summary = summarize(runs, metric)
    _atomic_text(out / "summary.csv", summary.to_csv(index=False))
    printed = {}
    for setting in ("general", "hard"):
        text, means = wide_table(summary, setting)
        if text.empty:
            continue
        title = f"AUC-ROC, {setting} setting (mean±std over seeds)" if metric == "auroc" \
            else f"{metric}, {setting} setting"
        if "markdown" in formats:
            md = f"### {title}\n\n" + to_markdown(text) + "\n"
            _atomic_text(out / f"table_{setting}.md", md)
            printed.setdefault("markdown", []).append(md)
        if "csv" in formats:
            _atomic_text(out / f"table_{setting}.csv", text.reset_index().to_csv(index=False))
        if "latex" in formats:
            _atomic_text(out / f"table_{setting}.tex", to_latex(text, means, title))
    if compare_paper:
        if metric != "auroc":
            raise ValueError("the paper reports AUC-ROC only; use --metric auroc with "
                             "--compare-paper")
        from .paper import compare_with_paper

        comp = compare_with_paper(summary)
        _atomic_text(out / "paper_comparison.csv", comp.to_csv(index=False))
        if comp.empty:
            printed["paper"] = ("no row of these results is in the paper's tables "
                                "(they cover mvtec_ad, aitex, sdd, elpv, optical, mastcam, "
                                "brainmri, headct, hyper_kvasir)\n")
        else:
            shown = comp.assign(ours=[_cell(m, s, n, n) for m, s, n in
                                      zip(comp.ours_mean, comp.ours_std, comp.n)],
                                paper=[f"{m:.3f}±{s:.3f}" for m, s in
                                       zip(comp.paper_mean, comp.paper_std)],
                                delta=comp.delta.map(lambda d: "" if pd.isna(d)
                                                     else f"{d:+.3f}"))
            md = ("### Ours vs the paper (AUC-ROC)\n\n" + shown[
                ["dataset", "subset", "setting", "known_class", "method", "shots", "ours",
                 "paper", "delta"]].to_markdown(index=False, disable_numparse=True) + "\n")
            _atomic_text(out / "paper_comparison.md", md)
            printed["paper"] = md
    counts = runs["status"].value_counts().to_dict()
    printed["counts"] = {s: int(counts.get(s, 0)) for s in STATUSES}
    return printed


def _atomic_text(path: Path, text: str) -> None:
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
