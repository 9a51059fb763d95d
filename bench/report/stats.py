"""Statistics for comparing methods across datasets (scipy), as pure functions of frames.

- Friedman test over the rows of a table (datasets or subsets: the *blocks*) per shot count,
  average ranks and the Nemenyi critical difference (Demšar 2006, JMLR 7:1-30, §3.2.2);
- Wilcoxon signed-rank tests between methods over the same blocks with Holm's step-down
  correction (Demšar §3.1.3 and §3.2.4);
- stratified bootstrap confidence intervals of a cell's AUC-ROC from the stored per-image
  scores (normals and anomalies resampled separately, so every resample keeps the test set's
  class sizes).

Higher values are better (AUC): rank 1 is the best method of a block, ties share the mean rank.
A block that lacks a value for one of the methods cannot enter a rank test; such blocks are
left out and *listed* in the result (``dropped``), never silently ignored.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd

# Rows with this shot count (methods that use no labelled anomaly, e.g. KDAD) compete in every
# shot group, as they do in the paper's tables.
SHARED_SHOTS = 0
_BOOT_CHUNK = 256  # bootstrap resamples drawn per chunk; fixed so a seed always means one result


class NotTestable(ValueError):
    """Too few methods or complete blocks for a test: a gap in a report, not bad input."""


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Refuse a frame that lacks any of ``columns``, naming them and the frame's columns."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: the frame lacks column(s) {missing}; it has "
                         f"{list(frame.columns)}")


def require_one_per_cell(frame: pd.DataFrame, keys: Sequence[str], what: str) -> None:
    """Refuse two rows with the same ``keys``: a cell's number must be chosen by the caller
    (e.g. the mean over seeds), never averaged here without a caption saying so."""
    dup = frame.duplicated(list(keys), keep=False)
    if dup.any():
        first = frame.loc[dup, list(keys)].iloc[0].tolist()
        raise ValueError(f"{what}: {int(dup.sum())} rows share a {tuple(keys)} key, e.g. "
                         f"{first}; pass one row per cell (e.g. the mean over seeds)")


# -- blocks × methods ----------------------------------------------------------------------

def score_matrix(frame: pd.DataFrame, *, block: str | Sequence[str] = "dataset",
                 method: str = "method", value: str = "auroc",
                 methods: Optional[Sequence[str]] = None) -> tuple[pd.DataFrame, list]:
    """(blocks × methods matrix of ``value``, blocks dropped for a missing value).

    ``frame`` holds one row per (block, method); ``block`` names the column(s) that identify a
    block. Two rows for the same (block, method) are an error (pass one value per cell, e.g. the
    mean over seeds). ``methods`` fixes the column order (default: order of appearance)."""
    blocks = [block] if isinstance(block, str) else list(block)
    require_columns(frame, blocks + [method, value], "score_matrix")
    require_one_per_cell(frame, blocks + [method], "score_matrix")
    if methods is not None:
        frame = frame[frame[method].isin(list(methods))]
    order = list(methods) if methods is not None else list(pd.unique(frame[method]))
    mat = frame.set_index(blocks + [method])[value].astype(float).unstack(method)
    mat = mat.reindex(columns=order)
    mat.columns.name = None
    incomplete = mat.isna().any(axis=1)
    dropped = list(mat.index[incomplete])
    return mat[~incomplete], dropped


def average_ranks(matrix: pd.DataFrame) -> pd.Series:
    """Mean rank of each method over the blocks (rows); 1 = highest value, ties averaged."""
    from scipy.stats import rankdata

    if matrix.empty:
        raise NotTestable("no complete block (every row lacks some method)")
    ranks = rankdata(-matrix.to_numpy(dtype=float), axis=1, method="average")
    return pd.Series(ranks.mean(axis=0), index=matrix.columns, name="avg_rank")


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman's χ² (tie-corrected, as scipy computes it) over ``n_blocks`` blocks and ``k``
    methods, with Iman and Davenport's F form (Demšar eq. 2), the average ranks and the
    Nemenyi critical difference at ``alpha``. ``note`` says why a shot group could not be
    tested (its numbers are then NaN)."""
    statistic: float
    pvalue: float
    iman_davenport_f: float
    iman_davenport_p: float
    n_blocks: int
    k: int
    avg_ranks: pd.Series
    alpha: float
    cd: float
    dropped: list = field(default_factory=list)
    note: str = ""


def friedman(matrix: pd.DataFrame, *, alpha: float = 0.05, dropped: Sequence = ()) \
        -> FriedmanResult:
    """Friedman test on a complete blocks × methods matrix (``score_matrix``'s output)."""
    from scipy.stats import f as f_dist
    from scipy.stats import friedmanchisquare

    n, k = matrix.shape
    if k < 3:
        raise NotTestable(f"the Friedman test needs at least 3 methods, got {k} "
                          f"({list(matrix.columns)}); compare two with pairwise_wilcoxon")
    if n < 2:
        raise NotTestable(f"the Friedman test needs at least 2 complete blocks, got {n}"
                          f"{f' ({len(dropped)} dropped for a missing method)' if dropped else ''}")
    x = matrix.to_numpy(dtype=float)
    if np.all(x == x[:, :1]):  # every block ties all methods: no evidence of any difference
        stat, p = 0.0, 1.0
    else:
        stat, p = (float(v) for v in friedmanchisquare(*x.T))
    if n * (k - 1) - stat > 0:
        ff = (n - 1) * stat / (n * (k - 1) - stat)
        pf = float(f_dist.sf(ff, k - 1, (k - 1) * (n - 1)))
    else:  # the ranks agree perfectly in every block
        ff, pf = float("inf"), 0.0
    return FriedmanResult(statistic=stat, pvalue=p, iman_davenport_f=float(ff),
                          iman_davenport_p=pf, n_blocks=n, k=k,
                          avg_ranks=average_ranks(matrix), alpha=alpha,
                          cd=critical_difference(k, n, alpha), dropped=list(dropped))


def shot_groups(frame: pd.DataFrame, shots: str = "shots") -> dict[int, pd.DataFrame]:
    """Rows per positive shot count; rows with ``SHARED_SHOTS`` shots join every group."""
    require_columns(frame, [shots], "shot_groups")
    k = frame[shots].astype(int)
    counts = sorted(set(k) - {SHARED_SHOTS}) or [SHARED_SHOTS]
    return {c: frame[(k == c) | (k == SHARED_SHOTS)] for c in counts}


def friedman_by_shots(frame: pd.DataFrame, *, block: str | Sequence[str] = "dataset",
                      method: str = "method", value: str = "auroc", shots: str = "shots",
                      alpha: float = 0.05) -> dict[int, FriedmanResult]:
    """One Friedman test per shot count over the blocks of a tidy frame (one row per block,
    method and shot count). A group with too few methods or complete blocks gets a result
    with NaN numbers and a ``note`` saying why; the other groups are still tested."""
    out = {}
    for k, rows in shot_groups(frame, shots).items():
        mat, dropped = score_matrix(rows, block=block, method=method, value=value)
        try:
            out[k] = friedman(mat, alpha=alpha, dropped=dropped)
        except NotTestable as exc:
            nan = float("nan")
            out[k] = FriedmanResult(statistic=nan, pvalue=nan, iman_davenport_f=nan,
                                    iman_davenport_p=nan, n_blocks=len(mat), k=mat.shape[1],
                                    avg_ranks=(average_ranks(mat) if len(mat) else
                                               pd.Series(nan, index=mat.columns, name="avg_rank")),
                                    alpha=alpha, cd=nan, dropped=list(dropped), note=str(exc))
    return out


def friedman_table(results: dict[int, FriedmanResult]) -> pd.DataFrame:
    """The results of ``friedman_by_shots`` as one row per shot count (for a report)."""
    rows = []
    for k, r in results.items():
        rows.append({"shots": k, "blocks": r.n_blocks, "methods": r.k,
                     "chi2": r.statistic, "p": r.pvalue, "F (Iman-Davenport)": r.iman_davenport_f,
                     "p (F)": r.iman_davenport_p, f"CD (alpha={r.alpha:g})": r.cd,
                     "dropped blocks": len(r.dropped), "note": r.note})
    return pd.DataFrame(rows)


# -- Nemenyi critical difference -----------------------------------------------------------

def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """q_alpha of the Nemenyi test for ``k`` methods: the studentized range quantile with
    infinite degrees of freedom divided by sqrt(2) (the values tabulated in Demšar's Table 5)."""
    from scipy.stats import studentized_range

    if k < 2:
        raise ValueError(f"nemenyi_q: needs at least 2 methods, got k={k}")
    if not 0 < alpha < 1:
        raise ValueError(f"nemenyi_q: alpha must be in (0, 1), got {alpha}")
    return float(studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2))


def critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Two methods' average ranks over ``n_blocks`` blocks differ significantly (Nemenyi) when
    they differ by at least CD = q_alpha sqrt(k (k + 1) / (6 N)) (Demšar eq. after Table 5)."""
    if n_blocks < 1:
        raise ValueError(f"critical_difference: needs at least one block, got {n_blocks}")
    return nemenyi_q(k, alpha) * float(np.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def cd_cliques(avg_ranks: pd.Series, cd: float) -> list[tuple[str, ...]]:
    """Maximal groups of methods whose average ranks lie within ``cd`` of each other (the bars
    of a critical-difference diagram), best-ranked first; single methods are not listed."""
    r = avg_ranks.sort_values(kind="stable")
    names, vals = list(r.index), r.to_numpy(dtype=float)
    spans = []
    for i in range(len(vals)):
        j = i
        while j + 1 < len(vals) and vals[j + 1] - vals[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return [tuple(names[a:b + 1]) for a, b in spans]


# -- Wilcoxon signed-rank with Holm --------------------------------------------------------

def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: sort ascending, p_(i) × (m - i + 1) for the i-th
    smallest, made non-decreasing and capped at 1; returned in the input order."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.isnan(p).any():
        raise ValueError(f"holm: expects a 1-D sequence of p-values without NaN, got {pvalues}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def pairwise_wilcoxon(matrix: pd.DataFrame, *, alpha: float = 0.05,
                      control: Optional[str] = None) -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank tests over the blocks (scipy's ``wilcoxon``, zero
    differences dropped as Wilcoxon proposed) for every pair of methods, or for ``control``
    against each other method, with Holm's correction over that family.

    Columns: a, b, n (blocks), mean_diff (a − b), statistic, p, p_holm, significant
    (p_holm < alpha). A pair whose values are equal in every block has p = 1."""
    from scipy.stats import wilcoxon

    cols = list(matrix.columns)
    if control is not None and control not in cols:
        raise ValueError(f"pairwise_wilcoxon: control {control!r} is not one of {cols}")
    if len(matrix) < 1:
        raise NotTestable("pairwise_wilcoxon: no complete block")
    pairs = ([(control, c) for c in cols if c != control] if control is not None else
             [(a, b) for i, a in enumerate(cols) for b in cols[i + 1:]])
    rows = []
    for a, b in pairs:
        d = matrix[a].to_numpy(float) - matrix[b].to_numpy(float)
        if np.all(d == 0):
            stat, p = 0.0, 1.0
        else:
            with warnings.catch_warnings():  # scipy warns when it falls back to the normal
                warnings.simplefilter("ignore")  # approximation for ties; the result is used
                res = wilcoxon(matrix[a].to_numpy(float), matrix[b].to_numpy(float))
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append({"a": a, "b": b, "n": len(d), "mean_diff": float(d.mean()),
                     "statistic": stat, "p": p})
    out = pd.DataFrame(rows, columns=["a", "b", "n", "mean_diff", "statistic", "p"])
    out["p_holm"] = holm(out["p"].to_numpy()) if len(out) else []
    out["significant"] = out["p_holm"] < alpha
    return out


# -- bootstrap confidence intervals of AUC-ROC ---------------------------------------------

def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """(b, n) counts of each item in b resamples of n items drawn with replacement."""
    idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)


def _auc_weighted(neg_sorted: np.ndarray, pos: np.ndarray, c_neg: np.ndarray,
                  c_pos: np.ndarray) -> np.ndarray:
    """AUC-ROC of each of the (b,) weighted samples: P(pos > neg) + ½ P(pos = neg), with
    ``c_neg`` (b, n_neg) weights over the sorted negatives and ``c_pos`` (b, n_pos) over the
    positives. O(b (n_neg + n_pos)) through cumulative weights, no n_neg × n_pos matrix."""
    cum = np.zeros((c_neg.shape[0], c_neg.shape[1] + 1))
    np.cumsum(c_neg, axis=1, out=cum[:, 1:])
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    below = cum[:, lo]
    ties = cum[:, hi] - below
    total = c_neg.sum(axis=1) * c_pos.sum(axis=1)
    return ((below + 0.5 * ties) * c_pos).sum(axis=1) / total


def _check_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1-D of one length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (anomaly), got {sorted(set(y))[:5]}")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are not finite")
    # Both classes sorted: the resamples then depend on the scores, not on the row order.
    neg, pos = np.sort(s[y == 0]), np.sort(s[y == 1])
    if not len(neg) or not len(pos):
        raise ValueError(f"AUC needs both classes; got {len(neg)} normal and {len(pos)} "
                         f"anomalous images")
    return neg, pos


def auroc(labels, scores) -> float:
    """AUC-ROC with ties counted ½ (equal to scikit-learn's ``roc_auc_score``)."""
    neg, pos = _check_scores(labels, scores)
    return float(_auc_weighted(neg, pos, np.ones((1, len(neg))), np.ones((1, len(pos))))[0])


def bootstrap_auroc(labels, scores, *, n_boot: int = 1000,
                    seed: int | np.random.SeedSequence = 0) -> np.ndarray:
    """(n_boot,) AUC-ROC of stratified bootstrap resamples of one run's test set: normals and
    anomalies are each drawn with replacement to their own count. The same seed gives the same
    resamples."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    neg, pos = _check_scores(labels, scores)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, n_boot - start)
        c_neg = _counts(rng, b, len(neg))
        c_pos = _counts(rng, b, len(pos))
        out[start:start + b] = _auc_weighted(neg, pos, c_neg, c_pos)
    return out


@dataclass(frozen=True)
class BootstrapCI:
    """Point estimate (mean AUC-ROC over the cell's runs), percentile interval, resamples."""
    auroc: float
    low: float
    high: float
    level: float
    n_boot: int
    n_runs: int


def cell_bootstrap(runs: Sequence[tuple], *, n_boot: int = 1000, level: float = 0.95,
                   seed: int | np.random.SeedSequence = 0) -> BootstrapCI:
    """Percentile CI of a cell's mean AUC-ROC over its runs (``runs`` = (labels, scores) per
    seed): every run's test set is resampled independently (stratified), the b-th resample of
    the cell is the mean of the runs' b-th resamples. It measures test-set sampling
    uncertainty only; the spread over training seeds is the cell's ± std."""
    if not runs:
        raise ValueError("cell_bootstrap: the cell has no run with scores")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    children = ss.spawn(len(runs))
    boots = np.stack([bootstrap_auroc(y, s, n_boot=n_boot, seed=c)
                      for (y, s), c in zip(runs, children)]).mean(axis=0)
    point = float(np.mean([auroc(y, s) for y, s in runs]))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(boots, [tail, 100 - tail])
    return BootstrapCI(auroc=point, low=float(low), high=float(high), level=level,
                       n_boot=n_boot, n_runs=len(runs))


def _key_seed(seed: int, key: tuple) -> np.random.SeedSequence:
    """A seed sequence for one cell from the base seed and the cell's key, so a cell's interval
    does not depend on which other cells are in the frame or their order."""
    digest = hashlib.sha256(repr(tuple(str(k) for k in key)).encode()).digest()
    return np.random.SeedSequence([int(seed), int.from_bytes(digest[:8], "little")])


def bootstrap_cells(scores: pd.DataFrame, keys: Sequence[str], *, run: str = "run_id",
                    label: str = "label", score: str = "score", n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Bootstrap CIs for every cell of a tidy per-image frame (the rows of the runs'
    ``scores.csv`` with the cell's key columns and the run id added).

    Returns one row per cell: the key columns, auroc (mean over runs), ci_low, ci_high, level,
    n_boot, n_runs. Runs are taken in run-id order within a cell."""
    keys = list(keys)
    require_columns(scores, keys + [run, label, score], "bootstrap_cells")
    rows = []
    for key, cell in scores.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        runs = [(g[label].to_numpy(), g[score].to_numpy(float))
                for _, g in cell.groupby(run, sort=True)]
        ci = cell_bootstrap(runs, n_boot=n_boot, level=level, seed=_key_seed(seed, key))
        rows.append(dict(zip(keys, key), auroc=ci.auroc, ci_low=ci.low, ci_high=ci.high,
                         level=level, n_boot=n_boot, n_runs=ci.n_runs))
    return pd.DataFrame(rows, columns=keys + ["auroc", "ci_low", "ci_high", "level", "n_boot",
                                              "n_runs"])
