"""Run records → one tidy pandas frame → mean±std tables (Markdown, CSV, LaTeX booktabs).

The record folders are the single source of truth: every number here is recomputed from
them. What a table cell holds:

* the runs of **one configuration** (everything in the run id except the seeds and the
  split, plus the split policy: ``bench.plan.config_id_of``), never a pool of several. When
  one results folder holds several configurations of one method for the same cell (another
  ``--set``, preset, weights, outlier source, data fingerprint, method version …), each gets
  its own column, named by what differs (``DRA (10) [epochs=10]``); ``--where``/``--preset``
  select one instead;
* mean and sample standard deviation (ddof = 1) over that configuration's seeds, with ``n``
  when fewer runs finished than were planned;
* a Mean row (the MVTec AD categories in the general setting, the known classes of a subset
  in the hard setting) is computed the paper's way: the mean over the group's rows within
  each seed, then mean ± std over the seeds.

Every caption says this, with the seeds and the split policy of the runs it shows.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from ..store import STATUSES, sweep_stores
from ..util import atomic_write

DISPLAY = {"kdad": "KDAD", "devnet": "DevNet", "flos": "FLOS", "saoe": "SAOE", "mlep": "MLEP",
           "deepsad": "DeepSAD", "minns": "MINNS", "dra": "DRA", "dra1a": "DRA1A",
           "dra2a": "DRA2A", "dra3ar": "DRA3Ar", "dra3an": "DRA3An"}
ORDER = list(DISPLAY)
RUN_COLUMNS = ["sweep", "run_id", "config_id", "method", "dataset", "subset", "setting",
               "known_class", "shots", "seed", "split_seed", "split_policy", "preset",
               "status", "auroc", "auprc", "auroc_seen", "auroc_unseen", "n_test",
               "n_test_anomalies", "fit_s", "score_s", "load_s", "peak_gpu_mem_mb", "reason",
               "method_version", "weights", "outliers", "params"]
CELL = ["dataset", "subset", "setting", "known_class", "method", "shots"]
# Keys of a configuration as shown in a column label (config_identity names → short names).
_LABEL_NAMES = {"method_version": "version", "subset_fingerprint": "data",
                "outliers_fingerprint": "outlier pool", "decoder_version": "decoder",
                "split_policy": "split", "train_cap": "train_cap", "weights": "weights",
                "outliers": "outliers", "preset": "preset", "keep": "keeps",
                "needs": "needs"}
# Files a report writes; a rewrite removes those of them it no longer produces.
_REPORT_FILES = ("runs.csv", "summary.csv", "table_*.md", "table_*.csv", "table_*.tex",
                 "paper_comparison.md", "paper_comparison.csv")
_HIDDEN = ("_label_config", "_deviations", "_stage")


class ReportError(ValueError):
    """The report cannot be made as asked (no records, a filter that matches nothing); the
    message says what is there and what to pass."""


# -- records → frame ------------------------------------------------------------------------
def _flat_config(spec: dict, preset: str) -> dict:
    """The configuration of a run as label keys: parameters by name, the other fields of
    its run id by short names (cell keys, seeds and split left out)."""
    from ..plan import config_identity

    ident = config_identity(spec)
    out = {"preset": preset or None}
    for k, v in ident.items():
        if k == "params":
            for p, pv in sorted((v or {}).items()):
                out[p] = pv
        elif k in _LABEL_NAMES:
            out[_LABEL_NAMES[k]] = v
    return out


def frame_from_entries(entries: Iterable[tuple[dict, dict]]) -> pd.DataFrame:
    """One row per (record, spec) pair (see ``Store.entries``), with the configuration of
    each run (``config_id``) computed from its spec, so records of any age are grouped by
    what they really ran."""
    from ..plan import config_id_of, split_policy_of

    rows = []
    for record, spec in entries:
        row = {k: v for k, v in record.items() if k not in ("traceback", "method_state")}
        merged = {**record, **spec}
        preset = spec.get("preset") or record.get("preset") or ""
        row["config_id"] = config_id_of(spec) if spec else (record.get("config_id") or
                                                             "unknown")
        row["split_policy"] = split_policy_of(merged)
        row["preset"] = preset
        row["method_version"] = spec.get("method_version")
        row["weights"] = spec.get("weights")
        row["outliers"] = spec.get("outliers")
        row["params"] = json.dumps(spec.get("params") or {}, sort_keys=True, default=str)
        row["_label_config"] = _flat_config(spec, preset) if spec else {}
        devs = spec.get("paper_deviations")
        row["_deviations"] = tuple(devs) if devs is not None else None
        row["_stage"] = spec.get("stage") or ""
        rows.append(row)
    df = pd.DataFrame(rows)
    for c in RUN_COLUMNS + list(_HIDDEN):
        if c not in df.columns:
            df[c] = None
    extra = [c for c in df.columns if c not in RUN_COLUMNS and c not in _HIDDEN]
    df = df[RUN_COLUMNS + extra + list(_HIDDEN)]
    if len(df):
        df["known_class"] = df["known_class"].fillna("")
        df = df.sort_values(["dataset", "subset", "setting", "known_class", "method", "shots",
                             "seed"], kind="stable").reset_index(drop=True)
    return df


def load_runs(results: Path | str, sweeps: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per run record under ``results`` (all sweeps, or the named ones)."""
    entries = []
    for store in sweep_stores(results, sweeps):  # an unknown sweep name lists the present ones
        entries.extend(store.entries())
    return frame_from_entries(entries)


def public_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` without the helper columns (what runs.csv holds)."""
    return runs.drop(columns=[c for c in _HIDDEN if c in runs.columns])


# -- filters --------------------------------------------------------------------------------
def _matches(value, text: str) -> bool:
    from ..plan import coerce_value

    if value is None:
        return text.strip().lower() in ("none", "null", "~")
    try:
        return coerce_value(text, type(value)) == value
    except ValueError:
        return False


def filter_runs(runs: pd.DataFrame, where: Optional[list[str]] = None,
                preset: Optional[str] = None) -> pd.DataFrame:
    """Keep the runs of one configuration family: ``preset`` (as recorded at planning) and
    ``where`` items ``METHOD.PARAM=VALUE`` (the runs of the matching methods whose parameter
    has that value; other methods' runs are kept; wildcards as in ``--set``) or
    ``FIELD=VALUE`` for ``weights``, ``outliers``, ``preset``, ``split_policy``,
    ``method_version``."""
    if preset:
        have = sorted(set(runs["preset"].dropna()) - {""})
        if preset not in have:
            raise ReportError(f"--preset {preset}: no run of these results was planned with "
                              f"it; presets present: {', '.join(have) or 'none recorded'}")
        runs = runs[runs["preset"] == preset]
    fields = ("weights", "outliers", "preset", "split_policy", "method_version")
    for item in where or []:
        lhs, sep, text = item.partition("=")
        if not sep or not lhs.strip():
            raise ReportError(f"--where {item!r}: expected METHOD.PARAM=VALUE (e.g. "
                              f"dra.epochs=30) or FIELD=VALUE with FIELD one of "
                              f"{', '.join(fields)}")
        lhs = lhs.strip()
        if "." not in lhs:
            if lhs not in fields:
                raise ReportError(f"--where {item!r}: {lhs!r} is not one of "
                                  f"{', '.join(fields)} (a method parameter is METHOD.PARAM)")
            runs = runs[[_matches(None if _missing(v) else v, text) for v in runs[lhs]]]
            continue
        pattern, param = lhs.rsplit(".", 1)
        hit = runs["method"].map(lambda m: fnmatch.fnmatchcase(str(m), pattern))
        if not hit.any():
            raise ReportError(f"--where {item!r}: no run of a method matching {pattern!r}; "
                              f"methods present: {', '.join(sorted(set(runs['method'])))}")
        params = runs["params"].map(lambda s: json.loads(s) if isinstance(s, str) else {})
        has = hit & params.map(lambda p: param in p)
        if not has.any():
            valid = sorted({k for p, h in zip(params, hit) if h for k in p})
            raise ReportError(f"--where {item!r}: the runs of {pattern!r} have no parameter "
                              f"{param!r}; their parameters: {', '.join(valid)}")
        keep = [not h or _matches(p[param], text) for h, p in zip(has, params)]
        runs = runs[keep]
    if runs.empty:
        asked = [f"--where {w}" for w in where or []] + ([f"--preset {preset}"] if preset
                                                          else [])
        raise ReportError(f"no run matches {' '.join(asked)}")
    return runs


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


# -- configurations → column variants --------------------------------------------------------
def _fmt(key: str, v) -> str:
    if v is None and key in ("preset", "decoder", "split"):
        return f"{key} unrecorded"  # a record of an older harness
    if key == "split" and isinstance(v, str) and v.startswith("fixed:"):
        v = v.split(":", 1)[1]
    if key in ("data", "outlier pool") and isinstance(v, str) and "-" in v:
        v = v.split("-", 1)[1][:8]
    return f"{key}={v}"


def assign_variants(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``variant`` (the column label suffix, "" for the only configuration of a cell)
    and drop, in cells where some configuration has finished runs, the configurations that
    have none (their cells would only show "–" beside the real ones)."""
    runs = runs.copy()
    runs["variant"] = ""
    if runs.empty:
        return runs
    done = runs["status"] == "done"
    key = runs[CELL].astype(str).agg("\x1f".join, axis=1)
    live = set(zip(key[done], runs["config_id"][done]))
    cells_with_done = set(key[done])
    keep = [(k not in cells_with_done) or ((k, c) in live)
            for k, c in zip(key, runs["config_id"])]
    runs, key = runs[keep], key[keep]
    config_of = dict(zip(runs["config_id"], runs["_label_config"]))
    configs_in_cell: dict[str, list[str]] = {}
    for k, c in zip(key, runs["config_id"]):
        configs_in_cell.setdefault(k, [])
        if c not in configs_in_cell[k]:
            configs_in_cell[k].append(c)
    method_of_cell = dict(zip(key, runs["method"]))
    varying: dict[str, set[str]] = {}
    multi: dict[str, list[list[str]]] = {}
    for k, cfgs in configs_in_cell.items():
        if len(cfgs) < 2:
            continue
        m = method_of_cell[k]
        multi.setdefault(m, []).append(cfgs)
        dicts = [config_of[c] or {} for c in cfgs]
        names = set().union(*dicts)
        varying.setdefault(m, set()).update(
            n for n in names if len({json.dumps(d.get(n), default=str) for d in dicts}) > 1)
    configs_of_method: dict[str, set[str]] = {}
    for k, cfgs in configs_in_cell.items():
        configs_of_method.setdefault(method_of_cell[k], set()).update(cfgs)
    labels: dict[str, str] = {}
    shown_of: dict[str, list[str]] = {}
    for m, keys in varying.items():
        # the preset alone names the columns when it tells every cell's configurations apart
        by_preset = all(len({(config_of[c] or {}).get("preset") for c in cfgs}) == len(cfgs)
                        and all((config_of[c] or {}).get("preset") for c in cfgs)
                        for cfgs in multi[m])
        shown = ["preset"] if "preset" in keys and by_preset else \
            sorted(keys, key=lambda n: (n != "preset", n in _LABEL_NAMES.values(), n))
        shown_of[m] = shown
        for c in configs_of_method[m]:
            d = config_of.get(c) or {}
            labels[c] = ", ".join(_fmt(n, d.get(n)) for n in shown)
    # unique labels per cell (two configurations can only share a label if a record's spec
    # was unreadable): disambiguate by the configuration id
    for k, cfgs in configs_in_cell.items():
        names = [labels.get(c, "") for c in cfgs]
        if len(set(names)) < len(names):
            for c in cfgs:
                labels[c] = (labels.get(c, "") + f" config {c[:6]}").strip()
    runs["variant"] = runs["config_id"].map(lambda c: labels.get(c, ""))
    # A staged run always says where it started from: its column is not the method's own.
    staged = runs["_stage"].fillna("") != "" if "_stage" in runs.columns else None
    if staged is not None and staged.any():
        runs.loc[staged, "variant"] = [", ".join(x for x in (st, v) if x) for st, v in
                                      zip(runs.loc[staged, "_stage"],
                                          runs.loc[staged, "variant"])]
    runs.attrs["variant_keys"] = shown_of
    return runs


_FILTER_OF = {"preset": "--preset NAME", "weights": "--where weights=VALUE",
              "outliers": "--where outliers=VALUE", "split": "--where split_policy=VALUE",
              "version": "--where method_version=VALUE"}


def variant_notes(variant_keys: dict[str, list[str]]) -> list[str]:
    """One line per method shown in several configurations: what tells them apart and the
    filter that selects one."""
    out = []
    for m, keys in sorted(variant_keys.items()):
        how = sorted({_FILTER_OF.get(k, f"--where {m}.{k}=VALUE" if k not in
                                     _LABEL_NAMES.values() else "--name SWEEP (or remove "
                                     "the stale runs)") for k in keys})
        out.append(f"{m}: several configurations share table cells; they are separate "
                   f"columns named by {', '.join(keys)}; select one with {' or '.join(how)}")
    return out


# -- summary --------------------------------------------------------------------------------
def summarize(runs: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """mean, sample std and n of ``metric`` per table cell and configuration variant, with
    ``planned`` = the number of seeds recorded for it and ``seed_values`` = {seed: value} of
    the finished runs (for the Mean rows)."""
    keys = CELL + ["variant"]
    cols = keys + ["mean", "std", "n", "planned", "config_id", "split_policy",
                   "paper_deviations", "seed_values"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    if "variant" not in runs.columns:
        runs = assign_variants(runs)
    rows = []
    for key, grp in runs.groupby(keys, dropna=False, sort=True):
        done = grp[(grp["status"] == "done") & grp[metric].notna()]
        vals = done[metric].astype(float)
        by_seed = dict(zip(done["seed"].astype(int), vals))
        recorded = [d for d in grp["_deviations"] if d is not None]
        devs = list(dict.fromkeys(x for d in recorded for x in d))  # planner's order
        if len(recorded) < len(grp):
            devs.append("not recorded (records of an older harness)")
        rows.append(dict(zip(keys, key), mean=float(vals.mean()) if len(vals) else np.nan,
                         std=float(vals.std(ddof=1)) if len(vals) > 1 else np.nan,
                         n=int(len(vals)), planned=int(grp["seed"].nunique()),
                         config_id=",".join(sorted(set(grp["config_id"].astype(str)))),
                         split_policy=",".join(sorted(set(grp["split_policy"].astype(str)))),
                         paper_deviations="; ".join(devs),
                         seed_values=by_seed))
    return pd.DataFrame(rows, columns=cols)


def _cell(mean, std, n, planned, digits=3) -> str:
    if n == 0 or pd.isna(mean):
        return "–"
    s = f"{mean:.{digits}f}" + (f"±{std:.{digits}f}" if not pd.isna(std) else "")
    return s + (f" (n={n})" if n < planned else "")


def _col_name(method: str, shots: int, variant: str = "") -> str:
    name = DISPLAY.get(method, method)
    name = name if shots == 0 else f"{name} ({shots})"
    return f"{name} [{variant}]" if variant else name


_SHOTS_RE = re.compile(r"\((\d+)\)(?: \[[^\]]*\])?$")


def _shots_of(col: str) -> int:
    m = _SHOTS_RE.search(col)
    return int(m.group(1)) if m else 0


def seed_mean_row(cells: list[Optional[dict]], planned: int) -> tuple[str, float]:
    """The paper's Mean row cell: ``cells`` = {seed: value} of each row of the group; the
    mean over the rows within each seed they all have, then mean ± std over those seeds.
    Returns (text, mean)."""
    if not cells or any(not c for c in cells):
        return "–", np.nan
    seeds = sorted(set.intersection(*(set(c) for c in cells)))
    if not seeds:
        return "–", np.nan
    per_seed = np.array([np.mean([c[s] for c in cells]) for s in seeds])
    mean = float(per_seed.mean())
    std = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else np.nan
    return _cell(mean, std, len(seeds), planned), mean


def wide_table(summary: pd.DataFrame, setting: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells as text, means as floats): one row per dataset/subset (hard: per known class,
    with a Mean row per dataset/subset group), one column per method, shot count and
    configuration variant."""
    s = summary[summary["setting"] == setting].copy()
    if s.empty:
        return pd.DataFrame(), pd.DataFrame()
    if "variant" not in s.columns:
        s["variant"] = ""
    s["variant"] = s["variant"].fillna("")
    row_keys = ["dataset", "subset"] + (["known_class"] if setting == "hard" else [])
    s["_order"] = s["method"].map(lambda m: ORDER.index(m) if m in ORDER else len(ORDER))
    cols = (s[["shots", "_order", "method", "variant"]].drop_duplicates()
            .sort_values(["shots", "_order", "method", "variant"]))
    col_list = [(m, int(k), v) for k, _, m, v in cols.itertuples(index=False)]
    names = [_col_name(m, k, v) for m, k, v in col_list]
    text_rows, mean_rows, seed_rows, planned_rows, index = [], [], [], [], []
    for key, grp in s.groupby(row_keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        by = {(r.method, int(r.shots), r.variant): r for r in grp.itertuples()}
        text_rows.append([_cell(by[c].mean, by[c].std, by[c].n, by[c].planned) if c in by
                          else "" for c in col_list])
        mean_rows.append([by[c].mean if c in by else np.nan for c in col_list])
        seed_rows.append([(getattr(by[c], "seed_values", None) if c in by else None)
                          for c in col_list])
        planned_rows.append([by[c].planned if c in by else 0 for c in col_list])
        index.append(key)
    text = pd.DataFrame(text_rows, index=pd.MultiIndex.from_tuples(index, names=row_keys),
                        columns=names)
    means = pd.DataFrame(mean_rows, index=text.index, columns=names)
    # A Mean row per group with several rows (paper: "MVTec AD" mean row, hard-setting Mean).
    group_keys = row_keys[:-1]
    if group_keys:
        out_t, out_m = [], []
        positions = {k: i for i, k in enumerate(index)}
        for g, gm in means.groupby(level=group_keys, sort=False):
            gt = text.loc[gm.index]
            out_t.append(gt)
            out_m.append(gm)
            if len(gm) > 1:
                if "seed_values" not in s.columns:
                    raise ValueError("the summary has no per-seed values (seed_values) for the "
                                     "Mean rows; build it with summarize()")
                g = g if isinstance(g, tuple) else (g,)
                idx = pd.MultiIndex.from_tuples([g + ("Mean",)], names=row_keys)
                rows = [positions[k] for k in gm.index]
                texts, vals = [], []
                for j in range(len(col_list)):
                    t, v = seed_mean_row([seed_rows[r][j] for r in rows],
                                         max(planned_rows[r][j] for r in rows))
                    texts.append(t)
                    vals.append(v)
                out_t.append(pd.DataFrame([texts], index=idx, columns=names))
                out_m.append(pd.DataFrame([vals], index=idx, columns=names))
        text, means = pd.concat(out_t), pd.concat(out_m)
    return text, means


def _best_mask(means: pd.DataFrame) -> pd.DataFrame:
    """True where a cell holds the best mean of its row within its shot group (0-shot
    columns compete in every group)."""
    mask = pd.DataFrame(False, index=means.index, columns=means.columns)
    shots_of = {c: _shots_of(c) for c in means.columns}
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


# -- tables with their captions ---------------------------------------------------------------
@dataclass
class Table:
    setting: str
    title: str
    caption: str
    text: pd.DataFrame
    means: pd.DataFrame

    def markdown(self) -> str:
        return f"### {self.title}\n\n{to_markdown(self.text)}\n\n{self.caption}\n"

    def latex(self) -> str:
        return to_latex(self.text, self.means, f"{self.title}. {self.caption}")


_METRIC_TITLES = {"auroc": "AUC-ROC", "auprc": "AUC-PR", "auroc_seen": "AUC-ROC on seen "
                  "anomaly classes", "auroc_unseen": "AUC-ROC on unseen anomaly classes"}


def split_policy_text(policies: set[str]) -> str:
    """One sentence on how the runs of a table drew their splits."""
    fixed = sorted(p.split(":", 1)[1] for p in policies if p.startswith("fixed:"))
    if policies == {"seed"}:
        return ("Split policy: the split seed is each run's seed, so the seeds also draw "
                "different labelled anomalies (and, in the general setting, test sets); "
                "`--split-seed 42` keeps one split as the released code does.")
    if policies and all(p.startswith("fixed:") for p in policies):
        return (f"Split policy: one split for every seed (split seed {', '.join(fixed)}); "
                f"only training varies with the seed.")
    return ("Split policies differ between columns (seed-dependent and fixed split seed "
            f"{', '.join(fixed)}); the [split=…] labels name each column's.")


def caption_for(runs: pd.DataFrame, setting: str, metric: str, has_variants: bool) -> str:
    sel = runs[runs["setting"] == setting]
    seeds = sorted({int(s) for s in sel["seed"].dropna()})
    parts = [f"Each cell: mean±std over the seeds ({', '.join(map(str, seeds))}) of one "
             f"configuration; (n=k): only k of its runs finished."]
    parts.append("Mean rows (" + ("the subsets of a dataset, e.g. the MVTec AD categories"
                                  if setting == "general" else "the known classes of a subset")
                 + "): the mean over the rows within each seed, then mean±std over the seeds, "
                   "as in the paper's Tables 1-2.")
    if setting == "hard" and metric == "auroc_unseen":
        parts.append("In the hard setting every test anomaly is unseen: this is the AUC-ROC.")
    if setting == "hard" and metric == "auroc_seen":
        parts.append(SEEN_CHECK_TEXT)
    if has_variants:
        parts.append("Columns marked [..] are separate configurations of one method that "
                     "differ as named; they are never pooled.")
    parts.append(split_policy_text(set(sel["split_policy"].astype(str))))
    return " ".join(parts)


SEEN_CHECK_TEXT = ("Seen (hard setting): the known class's anomalies not drawn as labelled "
                   "(the seen-class check set, never in the hard test set) against the same "
                   "test normals.")


def seen_unseen_table(runs: pd.DataFrame) -> Optional[Table]:
    """The hard setting's gray and black swans side by side: per known class and method,
    ``seen / unseen`` AUC-ROC (the seen-class check set; the hard-setting AUC-ROC), one
    configuration per cell as in :func:`build_tables`. None when no hard run has a check
    set."""
    hard = runs[runs["setting"] == "hard"]
    if hard.empty or not hard["auroc_seen"].notna().any():
        return None
    hard = assign_variants(hard)
    seen_t, _ = wide_table(summarize(hard, "auroc_seen"), "hard")
    unseen_t, unseen_m = wide_table(summarize(hard, "auroc"), "hard")
    text = unseen_t.copy()
    for c in text.columns:
        text[c] = [f"{a} / {b}" if a or b else "" for a, b in zip(seen_t[c], unseen_t[c])]
    seeds = sorted({int(x) for x in hard["seed"].dropna()})
    caption = (f"Each cell: seen / unseen AUC-ROC, mean±std over the seeds "
               f"({', '.join(map(str, seeds))}) of one configuration. {SEEN_CHECK_TEXT} "
               f"Unseen: the hard-setting AUC-ROC (every other anomaly class). A method "
               f"without (N) was shown no anomaly of either. "
               + split_policy_text(set(hard["split_policy"].astype(str))))
    return Table("hard", "AUC-ROC on the seen class / on the unseen classes, hard setting",
                 caption, text, unseen_m)


def build_tables(runs: pd.DataFrame, metric: str = "auroc"
                 ) -> tuple[list[Table], pd.DataFrame, list[str]]:
    """The general and hard tables of ``runs`` (one configuration per cell), the summary
    behind them and notes on the configurations shown side by side."""
    runs = assign_variants(runs)
    notes = variant_notes(runs.attrs.get("variant_keys", {}))
    summary = summarize(runs, metric)
    name = _METRIC_TITLES.get(metric, metric)
    tables = []
    for setting in ("general", "hard"):
        text, means = wide_table(summary, setting)
        if text.empty:
            continue
        has_variants = bool((summary.loc[summary["setting"] == setting, "variant"] != "").any())
        tables.append(Table(setting, f"{name}, {setting} setting (mean±std over seeds)",
                            caption_for(runs, setting, metric, has_variants), text, means))
    return tables, summary, notes


# -- the report folder ------------------------------------------------------------------------
def default_report_dir(results: Path | str, sweeps: Optional[list[str]] = None) -> Path:
    """``reports/<results folder name>/<sweep>/`` (``+``-joined for several sweeps, ``all``
    for every sweep of a results folder holding more than one)."""
    present = [s.sweep for s in sweep_stores(results)]
    chosen = sorted(sweeps) if sweeps else present
    name = "+".join(chosen) if chosen and (sweeps or len(chosen) == 1) else "all"
    return Path("reports") / Path(results).expanduser().resolve().name / name


def write_report(results: Path | str, out: Path | str, formats: list[str],
                 sweeps: Optional[list[str]] = None, metric: str = "auroc",
                 compare_paper: bool = False, where: Optional[list[str]] = None,
                 preset: Optional[str] = None) -> dict:
    """Write runs.csv, summary.csv and the tables into ``out``; returns {"markdown": [str],
    "paper": str, "counts": {...}, "notes": [str]} for printing. Everything is built before
    the folder is touched: a failing report creates nothing, and a rewrite removes the
    report files it no longer produces (e.g. a hard table whose runs were filtered out)."""
    runs = load_runs(results, sweeps)
    if runs.empty:
        present = [s.sweep for s in sweep_stores(results)]
        raise ReportError(f"no run records under {results}"
                          + (f" for sweep(s) {', '.join(sweeps)}; sweeps present: "
                             f"{', '.join(present) or 'none'}" if sweeps else "")
                          + "; run `bench run` first")
    if metric not in ("auroc",) and compare_paper:
        raise ReportError("the paper reports AUC-ROC only; use --metric auroc with "
                          "--compare-paper")
    runs = filter_runs(runs, where, preset)
    tables, summary, notes = build_tables(runs, metric)
    files: dict[str, str] = {"runs.csv": public_runs(runs).to_csv(index=False),
                             "summary.csv": summary.drop(columns=["seed_values"])
                             .to_csv(index=False)}
    printed: dict = {"notes": notes}
    named = [(f"table_{t.setting}", t) for t in tables]
    seen = seen_unseen_table(runs) if metric == "auroc" else None
    if seen is not None:
        named.append(("table_hard_seen_unseen", seen))
    for stem, t in named:
        if "markdown" in formats:
            files[f"{stem}.md"] = t.markdown()
            printed.setdefault("markdown", []).append(t.markdown())
        if "csv" in formats:
            files[f"{stem}.csv"] = t.text.reset_index().to_csv(index=False)
        if "latex" in formats:
            files[f"{stem}.tex"] = t.latex()
    if compare_paper:
        from .paper import paper_report

        text, csv_text = paper_report(summary)
        printed["paper"] = text
        if csv_text is not None:
            files["paper_comparison.md"] = text
            files["paper_comparison.csv"] = csv_text
    _write_folder(Path(out), files)
    counts = runs["status"].value_counts().to_dict()
    printed["counts"] = {s: int(counts.get(s, 0)) for s in STATUSES}
    return printed


def _write_folder(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for pattern in _REPORT_FILES:
        for old in out.glob(pattern):
            if old.name not in files:
                old.unlink()
    for name, text in files.items():
        atomic_write(out / name, text)
