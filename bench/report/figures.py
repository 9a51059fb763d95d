"""The report's figures (seaborn on matplotlib's Agg canvas), one function per figure.

Each function takes a tidy pandas frame (or arrays) with the documented columns, writes PNG and
PDF files (SVG on request) and returns their paths. Output is deterministic: no pyplot state, fixed seeds, no
timestamps or software versions in the files' metadata, so a rerun writes identical bytes.
Colours come from seaborn's colour-blind-safe ``colorblind`` palette (lines also differ by
marker), the heatmap uses the perceptually uniform ``viridis`` map.

Frames hold one row per table cell unless a function says it averages (the paper's Fig. 3 and
Fig. 5 average over the datasets of a domain or the subsets of a dataset). A cell without a
value (a failed, skipped or missing run: NaN) is drawn as a marked gap ("n/a"), never dropped.

Order of categories: a pandas ``Categorical`` column's categories, otherwise order of first
appearance in the frame.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..util import atomic_write_with

FORMATS = ("png", "pdf")      # written by default
ALL_FORMATS = FORMATS + ("svg",)  # svg keeps text as text (for the web and for tests)
DPI = 150
PALETTE = "colorblind"
# Fixed colours of the three test-image groups, shared by every figure that shows them.
GROUPS = ("normal", "seen", "unseen")
_GROUP_COLOURS = dict(zip(GROUPS, (0, 2, 3)))  # indices into the colorblind palette
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_METADATA = {"png": {"Software": None},
             "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
             "svg": {"Creator": None, "Date": None}}


# -- shared plumbing -----------------------------------------------------------------------

def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    from .stats import require_columns

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what}: expects a pandas DataFrame, got {type(frame).__name__}")
    require_columns(frame, columns, what)
    if frame.empty:
        raise ValueError(f"{what}: the frame has no rows; nothing to plot")


def _order(values: pd.Series, given: Optional[Sequence] = None) -> list:
    if given is not None:
        return list(given)
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna())
        return [c for c in values.cat.categories if c in present]
    return list(pd.unique(values.dropna()))


def _palette(n: int) -> list:
    import seaborn as sns

    return sns.color_palette(PALETTE, max(n, 1))


def group_colour(group: str):
    return _palette(10)[_GROUP_COLOURS[group]]


@contextmanager
def _style():
    """seaborn's whitegrid style and paper context, TrueType fonts in PDFs (editable text),
    without touching pyplot or the caller's global settings."""
    import matplotlib
    import seaborn as sns

    with matplotlib.rc_context({"pdf.fonttype": 42, "svg.fonttype": "none",
                                "svg.hashsalt": "bench", "figure.dpi": DPI}):
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
            yield


def _figure(w: float, h: float, nrows: int = 1, ncols: int = 1, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _stem(out: Path | str) -> Path:
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in tuple(f".{f}" for f in ALL_FORMATS) \
        else out


def _save(fig, out: Path | str, formats: Sequence[str]) -> list[Path]:
    """Write ``fig`` as ``<out>.<fmt>`` for each format, each atomically (temp name, then
    rename), and return the paths."""
    bad = [f for f in formats if f not in ALL_FORMATS]
    if bad or not formats:
        raise ValueError(f"figure formats must be among {ALL_FORMATS}, got {list(formats)}")
    stem = _stem(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI,
                                                        metadata=_METADATA[fmt]))
        paths.append(path)
    return paths


def _mean_cells(frame: pd.DataFrame, keys: Sequence[str], value: str) -> pd.Series:
    """Mean of ``value`` per key over the rows that have one; a key whose rows all lack a
    value stays in the result as NaN (a gap to mark)."""
    v = pd.to_numeric(frame[value], errors="coerce")
    return v.groupby([frame[k] for k in keys], sort=False, dropna=False).mean()


def _auc_axis(ax, lows: np.ndarray, label: str = "AUC-ROC") -> None:
    lows = lows[np.isfinite(lows)]
    bottom = min(0.5, float(np.floor((lows.min() - 0.05) * 10) / 10)) if len(lows) else 0.5
    ax.set_ylim(max(0.0, bottom), 1.0)
    ax.set_ylabel(label)


def _grouped_bars(ax, means: pd.Series, groups: list, hues: list, xlabel: str,
                  legend_title: str) -> None:
    """Bars of ``means`` (indexed by (group, hue)), one cluster per group; a missing or NaN
    bar is marked "n/a" at its place."""
    colours = _palette(len(hues))
    width = 0.8 / max(len(hues), 1)
    x = np.arange(len(groups))
    vals = np.array([[means.get((g, h), np.nan) for h in hues] for g in groups], dtype=float)
    _auc_axis(ax, vals.ravel())
    bottom = ax.get_ylim()[0]
    for j, h in enumerate(hues):
        pos = x - 0.4 + width * (j + 0.5)
        col = vals[:, j]
        ok = np.isfinite(col)
        ax.bar(pos[ok], col[ok] - bottom, width=width * 0.95, bottom=bottom,
               color=colours[j], label=str(h), edgecolor="white", linewidth=0.5)
        for p in pos[~ok]:
            ax.text(p, bottom + 0.01, "n/a", rotation=90, ha="center", va="bottom",
                    fontsize=7, color="0.3")
    ax.set_xticks(x, [str(g) for g in groups])
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", visible=False)
    ax.legend(title=legend_title or None, fontsize=8, title_fontsize=8, frameon=False,
              loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=min(len(hues), 4))


# -- figures -------------------------------------------------------------------------------

def sample_efficiency(frame: pd.DataFrame, out: Path | str, *, value: str = "auroc",
                      methods: Optional[Sequence[str]] = None, title: Optional[str] = None,
                      formats: Sequence[str] = FORMATS) -> list[Path]:
    """AUC against the number of labelled anomalies (e.g. 1 vs 10 shots), one line per method.

    ``frame``: columns ``method``, ``shots``, ``value``; one row per table cell (dataset or
    subset). Each point is the mean over that method's rows at that shot count; a method that
    lacks a shot count is marked "(no <k>-shot value)" in the legend. A method trained without
    labelled anomalies (shots 0, e.g. KDAD) is a dashed horizontal line."""
    _require(frame, ["method", "shots", value], "sample_efficiency")
    means = _mean_cells(frame, ["method", "shots"], value)
    shots = sorted({int(k) for k in frame["shots"]} - {0})
    if not shots:
        raise ValueError("sample_efficiency: no row with labelled anomalies (shots > 0)")
    order = _order(frame["method"], methods)
    colours = _palette(len(order))
    with _style():
        fig, axes = _figure(4.8, 3.4)
        ax = axes[0, 0]
        x = np.arange(len(shots))
        lows = []
        for i, m in enumerate(order):
            if (m, 0) in means.index:  # no labelled anomalies: one value for every shot count
                v = float(means[(m, 0)])
                lows.append(v)
                ax.axhline(v, ls="--", lw=1.2, color=colours[i],
                           label=f"{m} (no labelled anomalies)" if np.isfinite(v)
                           else f"{m} (no value)")
                continue
            y = np.array([means.get((m, k), np.nan) for k in shots], dtype=float)
            lows.extend(y)
            gaps = [k for k, v in zip(shots, y) if not np.isfinite(v)]
            label = str(m) + (f" (no {', '.join(map(str, gaps))}-shot value)" if gaps else "")
            ax.plot(x, y, marker=_MARKERS[i % len(_MARKERS)], color=colours[i], label=label)
        _auc_axis(ax, np.array(lows))
        ax.set_xticks(x, [str(k) for k in shots])
        ax.set_xlabel("labelled anomalies (shots)")
        ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
        if title:
            ax.set_title(title)
        return _save(fig, out, formats)


def hard_heatmap(frame: pd.DataFrame, out: Path | str, *, row: str = "subset",
                 value: str = "auroc", methods: Optional[Sequence[str]] = None,
                 title: Optional[str] = None, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Heatmap of hard-setting subsets (rows, e.g. "carpet / color") × methods, cells
    annotated with three decimals; a cell without a value is grey and reads "n/a".

    ``frame``: columns ``row``, ``method``, ``value``; exactly one row per (row, method)."""
    import seaborn as sns

    from .stats import require_one_per_cell

    _require(frame, [row, "method", value], "hard_heatmap")
    require_one_per_cell(frame, [row, "method"], "hard_heatmap")
    rows, cols = _order(frame[row]), _order(frame["method"], methods)
    mat = (frame.assign(_v=pd.to_numeric(frame[value], errors="coerce"))
           .set_index([row, "method"])["_v"].unstack("method").reindex(index=rows, columns=cols))
    annot = np.array([["" if pd.isna(v) else f"{v:.3f}" for v in r]
                      for r in mat.to_numpy(dtype=float)], dtype=object)
    with _style():
        fig, axes = _figure(1.2 + 0.85 * len(cols), 1.0 + 0.32 * len(rows))
        ax = axes[0, 0]
        ax.set_facecolor("0.85")  # NaN cells are left unpainted: this grey shows through
        finite = mat.to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        vmin = min(0.5, float(finite.min())) if len(finite) else 0.5
        sns.heatmap(mat, ax=ax, annot=annot, fmt="", cmap="viridis", vmin=vmin,
                    vmax=1.0, linewidths=0.5, linecolor="white", annot_kws={"fontsize": 7},
                    cbar_kws={"label": "AUC-ROC" if value == "auroc" else value})
        for (i, j), v in np.ndenumerate(mat.to_numpy(dtype=float)):
            if not np.isfinite(v):  # seaborn masks NaN cells and leaves them unlabelled
                ax.text(j + 0.5, i + 0.5, "n/a", ha="center", va="center", fontsize=7,
                        color="0.25")
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=30)
        if title:
            ax.set_title(title)
        return _save(fig, out, formats)


def image_groups(labels, seen) -> np.ndarray:
    """"normal" / "seen" / "unseen" for each test image from the ``label`` (0/1) and ``seen``
    (0/1) columns of a run's ``scores.csv``."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(seen).astype(int).astype(bool)
    return np.where(y == 0, "normal", np.where(s, "seen", "unseen"))


def score_distributions(frame: pd.DataFrame, out: Path | str, *,
                        methods: Optional[Sequence[str]] = None, col_wrap: int = 4,
                        title: Optional[str] = None,
                        formats: Sequence[str] = FORMATS) -> list[Path]:
    """Densities of the anomaly scores of normal, seen and unseen test images, one panel per
    method (each method's scores keep their own scale).

    ``frame``: the rows of runs' ``scores.csv`` (columns ``label``, ``seen``, ``score``) with a
    ``method`` column added; the rows of several runs of a method are pooled."""
    import seaborn as sns

    _require(frame, ["method", "label", "seen", "score"], "score_distributions")
    data = frame.assign(group=image_groups(frame["label"], frame["seen"]),
                        score=pd.to_numeric(frame["score"], errors="coerce"))
    bad = ~np.isfinite(data["score"].to_numpy(dtype=float))
    if bad.any():
        raise ValueError(f"score_distributions: {int(bad.sum())} scores are not finite")
    order = _order(frame["method"], methods)
    ncols = min(col_wrap, len(order))
    nrows = -(-len(order) // ncols)
    palette = {g: group_colour(g) for g in GROUPS}
    with _style():
        fig, axes = _figure(2.6 * ncols, 2.1 * nrows + 0.4, nrows, ncols)
        for i, m in enumerate(order):
            ax = axes[i // ncols, i % ncols]
            d = data[data["method"] == m]
            present = [g for g in GROUPS if (d["group"] == g).any()]
            bins = np.histogram_bin_edges(d["score"], bins=min(30, max(5, len(d) // 4)))
            sns.histplot(d, x="score", hue="group", hue_order=present, palette=palette,
                         bins=bins, stat="density", common_norm=False, element="step",
                         fill=True, alpha=0.25, ax=ax, legend=False)
            ax.set_title(f"{m} ({', '.join(f'{g} {int((d.group == g).sum())}' for g in present)})",
                         fontsize=8)
            ax.set_xlabel("anomaly score")
            ax.set_ylabel("density" if i % ncols == 0 else "")
        for j in range(len(order), nrows * ncols):
            axes[j // ncols, j % ncols].set_visible(False)
        _group_legend(fig, [g for g in GROUPS if (data["group"] == g).any()])
        if title:
            fig.suptitle(title)
        return _save(fig, out, formats)


def _group_legend(fig, groups: Sequence[str]) -> None:
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=group_colour(g), label=g) for g in groups],
               loc="outside lower center", ncols=len(groups), frameon=False, fontsize=8)


def cd_diagram(avg_ranks: pd.Series | Mapping[str, float], cd: float, out: Path | str, *,
               n_blocks: Optional[int] = None, alpha: float = 0.05,
               cliques: Optional[Sequence[Sequence[str]]] = None, title: Optional[str] = None,
               formats: Sequence[str] = FORMATS) -> list[Path]:
    """Critical-difference diagram (Demšar 2006, Fig. 1): methods placed at their average rank
    (1 = best, left), the CD interval drawn above the axis, thick bars joining methods whose
    ranks differ by less than CD (``stats.cd_cliques`` unless ``cliques`` is given)."""
    from .stats import cd_cliques

    ranks = pd.Series(avg_ranks, dtype=float).sort_values(kind="stable")
    if len(ranks) < 2:
        raise ValueError(f"cd_diagram: needs at least 2 methods, got {list(ranks.index)}")
    if not np.isfinite(cd) or cd <= 0:
        raise ValueError(f"cd_diagram: the critical difference must be positive, got {cd}")
    k = len(ranks)
    groups = list(cliques) if cliques is not None else cd_cliques(ranks, cd)
    half = (k + 1) // 2
    left, right = ranks.iloc[:half], ranks.iloc[half:]
    n_lines = max(len(left), len(right))
    with _style():
        fig, axes = _figure(6.0, 1.3 + 0.28 * n_lines + 0.15 * len(groups))
        ax = axes[0, 0]
        ax.set_axis_off()
        lo, hi = 1, max(k, int(np.ceil(ranks.max())))
        y_axis = 0.0
        ax.plot([lo, hi], [y_axis, y_axis], color="black", lw=1)
        for t in range(lo, hi + 1):
            ax.plot([t, t], [y_axis, y_axis + 0.08], color="black", lw=1)
            ax.text(t, y_axis + 0.12, str(t), ha="center", va="bottom", fontsize=8)
        ax.plot([lo, lo + cd], [y_axis + 0.55, y_axis + 0.55], color="black", lw=1.2)
        for e in (lo, lo + cd):
            ax.plot([e, e], [y_axis + 0.5, y_axis + 0.6], color="black", lw=1.2)
        label = f"CD = {cd:.3f}" + (f" (α = {alpha:g}, N = {n_blocks})" if n_blocks else "")
        ax.text(lo + cd / 2, y_axis + 0.62, label, ha="center", va="bottom", fontsize=8)
        # cliques: thick bars just below the axis
        for i, g in enumerate(groups):
            r = ranks.loc[list(g)]
            y = y_axis - 0.12 - 0.1 * i
            ax.plot([r.min() - 0.03, r.max() + 0.03], [y, y], color="black", lw=3,
                    solid_capstyle="round")
        y0 = y_axis - 0.25 - 0.1 * len(groups)
        for side, part in (("left", left), ("right", right)):
            for i, (name, r) in enumerate(part.items()):
                yy = y0 - 0.28 * (i if side == "left" else len(part) - 1 - i)
                xe = lo - 0.3 if side == "left" else hi + 0.3
                ax.plot([r, r, xe], [y_axis, yy, yy], color="0.3", lw=0.8)
                ax.text(xe + (-0.05 if side == "left" else 0.05), yy, f"{name} ({r:.2f})",
                        ha="right" if side == "left" else "left", va="center", fontsize=8)
        ax.set_xlim(lo - 2.2, hi + 2.2)
        ax.set_ylim(y0 - 0.28 * n_lines, y_axis + 0.95)
        if title:
            ax.set_title(title)
        return _save(fig, out, formats)


def fig3(disentangle: pd.DataFrame, reference_size: pd.DataFrame, out: Path | str, *,
         value: str = "auroc", variants: Optional[Sequence[str]] = None,
         formats: Sequence[str] = FORMATS) -> list[Path]:
    """The paper's Fig. 3. Left: AUC of the non-disentangled, seen+pseudo and full DRA
    variants per application domain, averaged over the datasets of each domain. Right: AUC of
    DRA against the reference-set size N_r, averaged over the subsets of each dataset.

    ``disentangle``: columns ``domain``, ``variant``, ``value`` (one row per dataset and
    variant). ``reference_size``: columns ``dataset``, ``n_ref``, ``value`` (one row per
    subset and N_r)."""
    _require(disentangle, ["domain", "variant", value], "fig3 (left)")
    _require(reference_size, ["dataset", "n_ref", value], "fig3 (right)")
    left = _mean_cells(disentangle, ["domain", "variant"], value)
    right = _mean_cells(reference_size, ["dataset", "n_ref"], value)
    domains, hues = _order(disentangle["domain"]), _order(disentangle["variant"], variants)
    datasets = _order(reference_size["dataset"])
    sizes = sorted({int(n) for n in reference_size["n_ref"]})
    with _style():
        fig, axes = _figure(9.0, 3.4, 1, 2, width_ratios=[1.2, 1])
        _grouped_bars(axes[0, 0], left, domains, hues, "domain", "")
        axes[0, 0].set_title("disentangled vs non-disentangled", fontsize=9)
        ax = axes[0, 1]
        colours = _palette(len(datasets))
        vals = []
        for i, d in enumerate(datasets):
            y = np.array([right.get((d, n), np.nan) for n in sizes], dtype=float)
            vals.extend(y)
            gaps = [n for n, v in zip(sizes, y) if not np.isfinite(v)]
            ax.plot(sizes, y, marker=_MARKERS[i % len(_MARKERS)], color=colours[i],
                    label=str(d) + (f" (no N_r={', '.join(map(str, gaps))})" if gaps else ""))
        _auc_axis(ax, np.array(vals))
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("reference set size $N_r$")
        ax.set_title("DRA, reference set size", fontsize=9)
        ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  ncols=min(len(datasets), 4))
        return _save(fig, out, formats)


def fig5_losses(frame: pd.DataFrame, out: Path | str, *, value: str = "auroc",
                losses: Optional[Sequence[str]] = None,
                formats: Sequence[str] = FORMATS) -> list[Path]:
    """The paper's Fig. 5: AUC of DRA trained with the deviation, BCE and focal loss in the
    hard setting, averaged over the subsets (known classes) of each dataset.

    ``frame``: columns ``dataset``, ``loss``, ``value`` (one row per subset and loss)."""
    _require(frame, ["dataset", "loss", value], "fig5_losses")
    means = _mean_cells(frame, ["dataset", "loss"], value)
    with _style():
        fig, axes = _figure(6.4, 3.2)
        _grouped_bars(axes[0, 0], means, _order(frame["dataset"]),
                      _order(frame["loss"], losses), "dataset", "loss")
        return _save(fig, out, formats)


def tsne_embedding(features: np.ndarray, *, seed: int = 0, perplexity: float = 30.0,
                   max_iter: int = 1000) -> np.ndarray:
    """(N, 2) t-SNE of (N, d) features (scikit-learn's Barnes-Hut t-SNE with PCA initialisation,
    so a rerun gives the same embedding; ``seed`` is its random state); perplexity capped at
    (N − 1) / 3; ``max_iter`` optimisation steps (scikit-learn requires at least 250)."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 4:
        raise ValueError(f"t-SNE needs an (N, d) array with N >= 4, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{int((~np.isfinite(x)).sum())} feature values are not finite")
    perp = min(perplexity, (len(x) - 1) / 3)
    return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed,
                max_iter=max_iter).fit_transform(x)


def tsne(panels: Mapping[str, tuple], out: Path | str, *, seed: int = 0,
         perplexity: float = 30.0, max_iter: int = 1000, ncols: Optional[int] = None,
         formats: Sequence[str] = FORMATS) -> list[Path]:
    """The paper's Fig. 1: t-SNE of learned features of normal, seen and unseen test images,
    one panel per title (e.g. "DRA, leather"), in rows of ``ncols`` (None: one row).

    ``panels``: title → (features (N, d), groups (N,) of "normal" / "seen" / "unseen", see
    ``image_groups``)."""
    if not panels:
        raise ValueError("tsne: no panel to draw")
    coords = {}
    for name, (feat, groups) in panels.items():
        g = np.asarray(groups).astype(str)
        if len(g) != len(feat):
            raise ValueError(f"tsne panel {name!r}: {len(feat)} feature rows but {len(g)} groups")
        unknown = sorted(set(g) - set(GROUPS))
        if unknown:
            raise ValueError(f"tsne panel {name!r}: groups must be among {GROUPS}, got {unknown}")
        coords[name] = (tsne_embedding(feat, seed=seed, perplexity=perplexity,
                                       max_iter=max_iter), g)
    n = len(coords)
    ncols = min(ncols or n, n)
    nrows = -(-n // ncols)
    with _style():
        fig, axes = _figure(2.8 * ncols, 2.8 * nrows + 0.3, nrows, ncols)
        flat = [axes[i // ncols, i % ncols] for i in range(nrows * ncols)]
        for ax in flat[n:]:
            ax.set_visible(False)
        for ax, (name, (xy, g)) in zip(flat, coords.items()):
            for grp in GROUPS:
                sel = g == grp
                if sel.any():
                    ax.scatter(xy[sel, 0], xy[sel, 1], s=9, color=group_colour(grp),
                               marker=_MARKERS[GROUPS.index(grp)], linewidths=0, alpha=0.8)
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        _group_legend(fig, [g for g in GROUPS if any((c[1] == g).any()
                                                     for c in coords.values())])
        return _save(fig, out, formats)


def _as_rgb(img: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise ValueError(f"{where}: images must be H×W or H×W×3, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8 (0-255), got {a.dtype}")
    return np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a


def gallery(examples: Mapping[str, Sequence[tuple[np.ndarray, str]]], out: Path | str, *,
            normal_class: str = "good", per_row: Optional[int] = None,
            formats: Sequence[str] = FORMATS) -> list[Path]:
    """The paper's Fig. 4: normal (top row) and anomalous (bottom row, titled by class)
    example images of each dataset.

    ``examples``: dataset → [(image uint8 H×W[×3], class name), ...]; images of
    ``normal_class`` are normal. ``per_row`` caps the images per row (default: all)."""
    if not examples:
        raise ValueError("gallery: no dataset to show")
    rows = []
    for name, items in examples.items():
        normal = [_as_rgb(im, f"gallery {name!r}") for im, c in items if c == normal_class]
        anom = [(_as_rgb(im, f"gallery {name!r}"), c) for im, c in items if c != normal_class]
        if not normal or not anom:
            raise ValueError(f"gallery {name!r}: needs normal ({normal_class!r}) and anomalous "
                             f"images, got {len(normal)} normal and {len(anom)} anomalous")
        if per_row:
            normal, anom = normal[:per_row], anom[:per_row]
        rows.append((name, [(im, "") for im in normal]))
        rows.append(("", anom))
    ncols = max(len(r[1]) for r in rows)
    with _style():
        fig, axes = _figure(1.25 * ncols + 0.6, 1.35 * len(rows), len(rows), ncols)
        for i, (name, items) in enumerate(rows):
            for j in range(ncols):
                ax = axes[i, j]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if j >= len(items):
                    ax.set_axis_off()
                    continue
                im, cls = items[j]
                ax.imshow(im, interpolation="nearest")
                if cls:
                    ax.set_title(cls, fontsize=6, pad=2)
                if j == 0:
                    ax.set_ylabel(f"{name}\nnormal" if name else "anomalous", fontsize=7)
        return _save(fig, out, formats)
