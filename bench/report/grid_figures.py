"""Figures, statistics and the HTML page of a grid report (``bench report --grid NAME``).

Every figure is drawn from the grid's tables (one value per table cell = the mean over the
seeds), except the score distributions, which read the stored per-image scores of one cell:

* ``fig3``: the paper's Fig. 3 (left: the grid's ``left`` panel columns per application
  domain; right: DRA against the reference-set size N_r of the ``right`` panel columns);
* ``fig5``: the paper's Fig. 5 (one bar per loss column, per dataset, hard setting);
* sample efficiency (1 vs 10 shots per method) where a table has several shot groups;
* a heatmap of the hard-setting rows × columns;
* the critical-difference diagram of each shot group with the Friedman test, average
  ranks and Wilcoxon signed-rank tests with Holm's correction (``stats``), blocks = rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from . import figures, html, stats

# The paper's application domains (Fig. 3 left); other data is its own domain.
DOMAINS = {"mvtec_ad": "industrial", "aitex": "industrial", "sdd": "industrial",
           "elpv": "industrial", "optical": "industrial", "mastcam": "planetary",
           "brainmri": "medical", "headct": "medical", "hyper_kvasir": "medical"}


def cell_frame(tables) -> pd.DataFrame:
    """One row per (table row, column, shots) with its mean: columns setting, group, row,
    block (group/row), column, shots, label (column with shots), auroc. Mean rows left out."""
    rows = []
    for t in tables:
        many_shots = len({k for _, k in t.columns if k}) > 1
        for (group, row, is_mean), means in zip(t.rows, t.means):
            if is_mean:
                continue
            for (c, k), v in zip(t.columns, means):
                rows.append({"setting": t.setting, "group": group, "row": row,
                             "block": f"{group} / {row}" if row else group, "column": c,
                             "shots": k, "label": f"{c} ({k})" if k and many_shots else c,
                             "auroc": v})
    return pd.DataFrame(rows, columns=["setting", "group", "row", "block", "column", "shots",
                                       "label", "auroc"])


def _dataset_of_group(runs: pd.DataFrame, tables) -> dict[str, str]:
    """Table group → our dataset name (for the domains)."""
    from .grid_tables import row_names

    out = {}
    for r in runs[["dataset", "subset", "setting", "known_class"]].drop_duplicates() \
            .itertuples(index=False):
        out[row_names(r.dataset, r.subset, r.setting, r.known_class or "")[0]] = r.dataset
    return out


def _n_ref_of(col) -> Optional[int]:
    return dict(col.set).get("n_ref")


def grid_figures(grid, tables, runs: pd.DataFrame, out: Path, store=None,
                 formats=figures.FORMATS) -> list[tuple[str, Path, str]]:
    """Draw the grid's figures into ``out``; returns (title, png path, caption) each. A
    figure that cannot be drawn (too few values) is left out with its reason as caption of
    a None path."""
    cells = cell_frame(tables)
    done = cells[cells["auroc"].notna()]
    made: list[tuple[str, Optional[Path], str]] = []

    def attempt(title, fn, caption):
        try:
            paths = fn()
        except (ValueError, stats.NotTestable) as exc:
            made.append((title, None, f"not drawn: {exc}"))
            return
        made.append((title, next(p for p in paths if p.suffix == ".png"), caption))

    ds_of = _dataset_of_group(runs, tables) if len(runs) else {}
    if grid.name == "fig3" and len(done):
        left_cols = [c.label for c in grid.runnable_columns if "left" in c.panels]
        right = {c.label: _n_ref_of(c) for c in grid.runnable_columns if "right" in c.panels}
        per_ds = (done.assign(dataset=done["group"].map(lambda g: ds_of.get(g, g)))
                  .groupby(["dataset", "column"], sort=False)["auroc"].mean().reset_index())
        left = per_ds[per_ds["column"].isin(left_cols)].assign(
            domain=lambda d: d["dataset"].map(lambda x: DOMAINS.get(x, x)),
            variant=lambda d: d["column"])
        rs = done[done["column"].isin(list(right))].assign(
            dataset=lambda d: d["group"].map(lambda g: ds_of.get(g, g)),
            n_ref=lambda d: d["column"].map(right))
        missing = [c.label for c in grid.columns if c.unavailable]
        attempt("Figure 3", lambda: figures.fig3(left, rs, out / "fig3", formats=formats),
                "Left: AUC-ROC per application domain (mean over its datasets) of "
                + ", ".join(left_cols) + (f" ({', '.join(missing)}: not runnable)" if missing
                                          else "")
                + ". Right: DRA against the reference-set size N_r (mean over each dataset's "
                  "subsets).")
    if grid.name == "fig1" and store is not None and len(runs):
        order = [c.label for c in grid.runnable_columns]
        attempt("Figure 1", lambda: _tsne_figure(runs, store, out, formats, order),
                "t-SNE of each method's learned features (embed()) of the test images of "
                "one seed: normal, seen (the known class's images kept out of training) and "
                "unseen (the test anomalies of the other classes). Methods without learned "
                "features are left out.")
    if grid.name == "fig5" and len(done):
        f5 = done.assign(dataset=done["group"], loss=done["column"])
        attempt("Figure 5", lambda: figures.fig5_losses(f5, out / "fig5", formats=formats),
                "AUC-ROC of DRA per loss, hard setting, mean over the known classes of each "
                "dataset.")
    for t in tables:
        sel = done[done["setting"] == t.setting]
        if len({k for _, k in t.columns if k}) > 1:
            attempt(f"Sample efficiency ({t.setting})",
                    lambda sel=sel: figures.sample_efficiency(
                        sel.assign(method=sel["column"]), out / f"shots_{t.setting}",
                        formats=formats),
                    "Mean AUC-ROC over the table's rows against the number of labelled "
                    "anomalies.")
        if t.setting == "hard":
            allc = cells[cells["setting"] == "hard"]
            attempt("Hard-setting heatmap",
                    lambda allc=allc: figures.hard_heatmap(
                        allc.assign(method=allc["label"]), out / "heatmap_hard", row="block",
                        formats=formats),
                    "AUC-ROC per known-class subset and column; n/a: no finished run.")
    if store is not None and len(runs):
        order = [c.label for c in grid.columns]
        attempt("Score distributions",
                lambda: _score_figure(runs, store, out, formats, order),
                "Anomaly scores of the normal, seen and unseen test images of one cell (the "
                "first row of the first table, seed 0), per column.")
    return made


def embedding_panels(runs: pd.DataFrame, store, order: list[str]) -> dict:
    """Fig. 1's panels: per table row (cell) and grid column, the features its first-seed
    finished run kept (``embeddings.npz``): title → (features, normal/seen/unseen groups)."""
    from ..api import EMBEDDINGS_ARTEFACT

    panels = {}
    done = runs[runs["status"] == "done"].sort_values("seed", kind="stable")
    cells = done[["dataset", "subset", "known_class"]].drop_duplicates()
    for cell in cells.itertuples(index=False):
        here = done[(done["dataset"] == cell.dataset) & (done["subset"] == cell.subset) &
                    (done["known_class"] == cell.known_class)]
        for label in order:
            for r in here[here["variant"] == label].itertuples(index=False):
                path = store.run_dir(r.run_id) / EMBEDDINGS_ARTEFACT
                if not path.is_file():
                    continue
                with np.load(path) as z:
                    feats = [z["test"]] + ([z["seen_check"]] if "seen_check" in z else [])
                    groups = list(figures.image_groups(z["test_labels"], z["test_seen"]))
                    groups += ["seen"] * (len(feats[1]) if len(feats) > 1 else 0)
                where = cell.subset + (f" ({cell.known_class} seen)" if cell.known_class
                                       else "")
                panels[f"{label}, {where}"] = (np.concatenate(feats), np.array(groups))
                break
    return panels


def _tsne_figure(runs: pd.DataFrame, store, out: Path, formats, order: list[str]):
    panels = embedding_panels(runs, store, order)
    if not panels:
        raise ValueError("no finished run kept its features (embeddings.npz)")
    ncols = len({t.split(",")[0] for t in panels})
    return figures.tsne(panels, out / "fig1", ncols=ncols, formats=formats)


def read_scores(runs: pd.DataFrame, store) -> pd.DataFrame:
    """The per-image scores (``scores.csv``) of the finished runs, with the run's cell keys,
    grid column (``variant``) and run id added; runs without the file are left out."""
    frames = []
    for r in runs[runs["status"] == "done"].itertuples(index=False):
        path = store.run_dir(r.run_id) / "scores.csv"
        if path.is_file():
            frames.append(pd.read_csv(path).assign(
                run_id=r.run_id, dataset=r.dataset, subset=r.subset, setting=r.setting,
                known_class=r.known_class or "", variant=r.variant, shots=int(r.shots)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def grid_bootstrap(scores: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Bootstrap 95 % intervals of every cell's mean AUC-ROC from the per-image scores
    (``stats.bootstrap_cells``, base seed 0 mixed with each cell's key)."""
    if scores.empty:
        return pd.DataFrame()
    keys = ["dataset", "subset", "setting", "known_class", "variant", "shots"]
    return stats.bootstrap_cells(scores, keys, n_boot=n_boot, seed=0)


def _score_figure(runs: pd.DataFrame, store, out: Path, formats, order: list[str]):
    done = runs[(runs["status"] == "done")]
    if done.empty:
        raise ValueError("no finished run")
    first = done.iloc[0]
    same = done[(done["dataset"] == first["dataset"]) & (done["subset"] == first["subset"]) &
                (done["setting"] == first["setting"]) &
                (done["known_class"] == first["known_class"]) &
                (done["seed"] == done["seed"].min())]
    frames = []
    for r in same.itertuples(index=False):
        path = store.run_dir(r.run_id) / "scores.csv"
        if path.is_file():
            s = pd.read_csv(path)
            frames.append(s.assign(method=f"{r.variant} ({r.shots})" if r.shots else
                                   r.variant))
    if not frames:
        raise ValueError("the runs hold no per-image scores (scores.csv)")
    data = pd.concat(frames, ignore_index=True).drop_duplicates(["method", "path"])
    labels = sorted(set(data["method"]), key=lambda m: (
        order.index(m.rsplit(" (", 1)[0]) if m.rsplit(" (", 1)[0] in order else len(order), m))
    return figures.score_distributions(data, out / "scores", methods=labels, formats=formats)


def grid_statistics(tables, out: Path, formats=figures.FORMATS) -> list:
    """Per table and shot group: Friedman test, average ranks, Wilcoxon-Holm pairs and the CD
    diagram (blocks = the table's rows). Returns html items."""
    items = []
    cells = cell_frame(tables)
    for t in tables:
        sel = cells[(cells["setting"] == t.setting) & cells["auroc"].notna()]
        if sel.empty:
            continue
        frame = sel.rename(columns={"column": "method"})[["block", "method", "shots", "auroc"]]
        results = stats.friedman_by_shots(frame, block="block")
        items.append(html.Table(stats.friedman_table(results).set_index("shots"),
                                title=f"Friedman test over the rows ({t.setting} setting)",
                                caption="Blocks: the table's rows (Mean rows left out); "
                                        "methods: its columns per shot group."))
        for k, rows in stats.shot_groups(frame).items():
            mat, _ = stats.score_matrix(rows, block="block")
            if mat.shape[1] < 2 or len(mat) < 2:
                continue
            try:
                pw = stats.pairwise_wilcoxon(mat)
            except (ValueError, stats.NotTestable) as exc:
                items.append(html.Text(f"Wilcoxon ({t.setting}, {k} shots): {exc}"))
                continue
            items.append(html.Table(pw.set_index(["a", "b"]),
                                    title=f"Wilcoxon signed-rank, Holm-corrected "
                                          f"({t.setting}, {k} shots)"))
            r = results.get(k)
            if r is not None and np.isfinite(r.cd):
                paths = figures.cd_diagram(r.avg_ranks, r.cd, out / f"cd_{t.setting}_{k}",
                                           n_blocks=r.n_blocks, alpha=r.alpha, formats=formats)
                items.append(html.Image(next(p for p in paths if p.suffix == ".png"),
                                        title=f"Critical difference ({t.setting}, {k} shots)",
                                        caption="Average ranks (1 = best); bars join methods "
                                                "within the Nemenyi CD."))
    return items


def _emphasis(t) -> pd.DataFrame:
    return pd.DataFrame([["best" if m.best else "second" if m.second else "" for m in row]
                         for row in t.marks], columns=_columns(t), index=_index(t))


def _columns(t) -> list[str]:
    return [f"{c} ({k})" if k else c for c, k in t.columns]


def _index(t) -> pd.MultiIndex:
    return pd.MultiIndex.from_tuples([(g, "Mean" if m else r) for g, r, m in t.rows],
                                     names=["Dataset", "Row"])


def write_grid_page(path: Path, grid, tables, figs, stat_items, runs: pd.DataFrame, store,
                    comparison_md: Optional[str], manifest: dict) -> Path:
    """The self-contained HTML page of a grid report."""
    sections = []
    for t in tables:
        frame = pd.DataFrame(t.text, columns=_columns(t), index=_index(t))
        sections.append(html.Section(t.title, [html.Table(frame, caption=t.caption,
                                                          emphasis=_emphasis(t))] +
                                     [html.Text("\n\n".join(t.gaps))] * bool(t.gaps)))
    sections.append(html.Section("Figures", [html.Image(p, title=title, caption=cap)
                                             if p is not None else html.Text(f"{title}: {cap}")
                                             for title, p, cap in figs]))
    if stat_items:
        sections.append(html.Section("Statistics", stat_items))
    if comparison_md:
        sections.append(html.Section("Ours vs the paper", [html.Text(comparison_md)]))
    if manifest.get("missing"):
        sections.append(html.Section("Missing data", [html.Text("\n\n".join(
            manifest["missing"]))]))
    env = {}
    if len(runs):
        rid = runs["run_id"].iloc[0]
        env_path = store.run_dir(rid) / "env.json"
        if env_path.is_file():
            import json

            env = json.loads(env_path.read_text())
    cols = ["run_id", "variant", "method", "dataset", "subset", "setting", "known_class",
            "shots", "seed", "status", "auroc", "reason"]
    from .grid_tables import grid_frame

    listed = grid_frame(runs, manifest["columns_of"]) if len(runs) else runs
    run_list = listed[[c for c in cols if c in listed.columns]].copy()
    run_list["record"] = [str(store.run_dir(r) / "record.json") for r in listed["run_id"]]
    return html.write_page(path, grid.title, sections, environment=env, runs=run_list)
