"""A named grid's runs in the paper's table layout (``bench report --grid NAME``).

Rows as the paper has them: grouped by dataset (MVTec AD categories under "MVTec AD" in the
general setting, one group per subset with a row per known class in the hard setting), a
Mean row per group of several rows; columns: the grid's method configurations per shot
group (the unsupervised baseline first). Cells are mean±std over the seeds with three
decimals; per row and shot group the best value is bold (``--style paper``: red) and the
second best underlined (blue), compared as printed, so ties share the mark. The baseline
(0 shots) is not ranked, as in the paper. A cell without a finished run is a marked gap
whose reason is listed under the table. Everything is a pure function of the records and
the grid's manifest, so a rerun writes identical files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from .paper import paper_row_name
from .tables import _cell, seed_mean_row, split_policy_text, summarize

SHOT_GROUPS = {0: "Baseline", 1: "One training anomaly"}
GAP_MARKS = {"failed": "f", "skipped": "s", "not run": "", "no data": "d"}
_GAP_TEXT = {"f": "failed", "s": "skipped", "d": "data not prepared", "": "not run"}


def shot_group_name(k: int) -> str:
    return SHOT_GROUPS.get(k, f"{_NUMBER.get(k, str(k)).capitalize()} training anomalies")


_NUMBER = {2: "two", 3: "three", 5: "five", 10: "ten"}


def row_names(dataset: str, subset: str, setting: str, known_class: str) -> tuple[str, str]:
    """(group, row) as the paper names them; our own names for data the paper lacks."""
    key = paper_row_name(dataset, subset, setting, known_class or None)
    if key is not None:
        if setting == "general":
            return ("MVTec AD", key[0]) if dataset == "mvtec_ad" else (key[0], "")
        return key
    name = dataset.rstrip("/").rsplit("/", 1)[-1]
    if setting == "general":
        return name, subset
    return f"{name}/{subset}", known_class


@dataclass
class Mark:
    best: bool = False
    second: bool = False


@dataclass
class GridTable:
    """One setting of a grid: cell texts, means, marks and gap reasons."""

    grid: str
    setting: str
    title: str
    caption: str
    rows: list            # [(group, row label, is_mean)]
    columns: list         # [(column label, shots)]
    text: list            # [[str]] per row, column
    means: list           # [[float]]
    marks: list = field(default_factory=list)     # [[Mark]]
    gaps: list = field(default_factory=list)      # ["row / column: reason"]
    group_sizes: dict = field(default_factory=dict)   # group → rows its Mean row averages
    group_titles: dict = field(default_factory=dict)  # shots → header (the grid's own)

    def group_title(self, k: int) -> str:
        return self.group_titles.get(k) or shot_group_name(k)

    @property
    def label(self) -> str:
        return f"tab:{self.grid}-{self.setting}"

    @property
    def shot_groups(self) -> list[tuple[int, int]]:
        """(shots, number of columns) in column order."""
        out: list[list[int]] = []
        for _, k in self.columns:
            if out and out[-1][0] == k:
                out[-1][1] += 1
            else:
                out.append([k, 1])
        return [tuple(x) for x in out]

    # -- Markdown ---------------------------------------------------------------------------
    def markdown(self) -> str:
        head = ["Dataset", "Subset" if self.setting == "general" else "Known class"] + \
            [f"{c} ({k})" if k else c for c, k in self.columns]
        lines = [f"### {self.title}", ""] + \
            [f"Columns ({'no' if k == 0 else k} labelled anomalies): {t}" + "\n"
             for k, t in self.group_titles.items() if k in dict(self.shot_groups)] + \
            ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        prev = None
        for (group, row, is_mean), texts, marks in zip(self.rows, self.text, self.marks):
            cells = [_md_mark(t, m) for t, m in zip(texts, marks)]
            g = group if group != prev else ""
            prev = group
            lines.append("| " + " | ".join([g, "**Mean**" if is_mean else row] + cells)
                         + " |")
        lines += ["", "(k) after a method: k labelled anomalies per run; best per row and "
                      "shot group in bold, second underlined.", "", self.caption]
        if self.gaps:
            lines += ["", "Gaps:"] + [f"- {g}" for g in self.gaps]
        return "\n".join(lines) + "\n"

    # -- LaTeX ------------------------------------------------------------------------------
    def latex(self, style: str = "plain") -> str:
        """booktabs table that fits the text width (shrunk only when wider), a label and
        the caption; needs booktabs, graphicx and (``style="paper"``) xcolor."""
        n = len(self.columns)
        wide = n > 6
        env = "table*" if wide else "table"
        spec = "ll" + "c" * n
        groups = self.shot_groups
        top = [" & "]
        rules, col = [], 3
        for k, width in groups:
            top.append(rf"\multicolumn{{{width}}}{{c}}{{{_tex(self.group_title(k))}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + width - 1}}}")
            col += width
        head2 = ["Dataset", "Subset" if self.setting == "general" else "Known class"] + \
            [_tex(c) for c, _ in self.columns]
        lines = [f"% {self.title}", "% needs \\usepackage{booktabs,graphicx}" +
                 (",xcolor" if style == "paper" else ""),
                 rf"\begin{{{env}}}[t]", r"\centering",
                 r"\caption{" + _tex(f"{self.title}. {self.caption}" + (
                     " --: no finished run; (f) failed, (s) skipped, (d) data not prepared."
                     if any(t.startswith("–") for r in self.text for t in r) else "")) + "}",
                 rf"\label{{{self.label}}}", r"\setlength{\tabcolsep}{3pt}",
                 r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
                 rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                 " & ".join(top) + r" \\", "".join(rules),
                 " & ".join(head2) + r" \\", r"\midrule"]
        prev = None
        for (group, row, is_mean), texts, marks in zip(self.rows, self.text, self.marks):
            if prev is not None and group != prev:
                lines.append(r"\midrule")
            g = _tex(group) if group != prev else ""
            prev = group
            cells = [_tex_mark(t, m, style) for t, m in zip(texts, marks)]
            lines.append(" & ".join([g, r"\textit{Mean}" if is_mean else _tex(row)] + cells)
                         + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}}", rf"\end{{{env}}}"]
        return "\n".join(lines) + "\n"

    def macros(self) -> list[tuple[str, str]]:
        """(macro name, value) per non-empty cell: ``\\<grid><setting><group><row><column>
        <shots>`` in letters only, for papers citing one number."""
        out = []
        for (group, row, is_mean), means, texts in zip(self.rows, self.means, self.text):
            for (c, k), v, t in zip(self.columns, means, texts):
                if pd.isna(v):
                    continue
                name = _macro_name(self.grid, self.setting, group,
                                   "Mean" if is_mean else row, c, f"shots{k}")
                out.append((name, t.split(" ")[0].replace("±", r"$\pm$")))
        return out


def _md_mark(text: str, m: Mark) -> str:
    if m.best:
        return f"**{text}**"
    if m.second:
        return f"<u>{text}</u>"
    return text


_TEX_ESC = {"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "±": r"$\pm$", "–": "--",
            "`": ""}


def _tex(s) -> str:
    s = str(s)
    for a, b in _TEX_ESC.items():
        s = s.replace(a, b)
    return s


def _tex_mark(text: str, m: Mark, style: str) -> str:
    t = _tex(text)
    if m.best:
        return (r"\textcolor{red}{" if style == "paper" else r"\textbf{") + t + "}"
    if m.second:
        return (r"\textcolor{blue}{" if style == "paper" else r"\underline{") + t + "}"
    return t


_DIGITS = "Zero One Two Three Four Five Six Seven Eight Nine".split()


def _number_word(digits: str) -> str:
    """10 → Ten, 5 → Five, 42 → FourTwo (macro names hold letters only)."""
    if digits == "10":
        return "Ten"
    return "".join(_DIGITS[int(d)] for d in digits)


def _macro_name(*parts: str) -> str:
    words = []
    for p in parts:
        p = re.sub(r"\d+", lambda d: " " + _number_word(d.group()) + " ", str(p))
        words += [w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z]+", p) if w]
    return "bench" + "".join(words)


def macro_file(tables: list[GridTable]) -> str:
    """One ``\\newcommand`` per cell of every table (names made unique)."""
    seen: dict[str, int] = {}
    lines = ["% bench report --grid: one macro per table cell (mean±std as printed)"]
    for t in tables:
        for name, value in t.macros():
            if name in seen:  # two cells whose names differ only in punctuation
                seen[name] += 1
                name = f"{name}Dup{_macro_name(_DIGITS[seen[name] % 10])[5:]}" * \
                    (seen[name] // 10 + 1)
            else:
                seen[name] = 0
            lines.append(rf"\newcommand{{\{name}}}{{{value}}}")
    return "\n".join(lines) + "\n"


# -- runs → tables -----------------------------------------------------------------------------
def grid_frame(runs: pd.DataFrame, columns_of: dict[str, list[str]]) -> pd.DataFrame:
    """``runs`` with a ``variant`` = the grid column each run serves (a run serving two
    columns appears once per column); runs outside the grid are dropped."""
    rows = []
    for r in runs.to_dict("records"):
        for label in columns_of.get(r["run_id"], []):
            rows.append({**r, "variant": label})
    return pd.DataFrame(rows, columns=list(runs.columns) + ["variant"])


def rank_marks(values: list[float], shots: list[int]) -> list[Mark]:
    """Best and second-best per shot group, compared at three decimals (ties share a
    mark); 0-shot baselines are ranked only when there is no other group."""
    marks = [Mark() for _ in values]
    groups = sorted({k for k in shots if k > 0}) or [0]
    for g in groups:
        idx = [i for i, k in enumerate(shots) if k == g and not pd.isna(values[i])]
        if len(idx) < 2:
            continue
        shown = {i: round(float(values[i]), 3) for i in idx}
        distinct = sorted(set(shown.values()), reverse=True)
        for i in idx:
            marks[i].best = shown[i] == distinct[0]
            marks[i].second = len(distinct) > 1 and shown[i] == distinct[1]
    return marks


def _caption(runs: pd.DataFrame, seeds: list[int], setting: str, n_per_cell: int) -> str:
    sel = runs[runs["setting"] == setting]
    if n_per_cell <= 1:
        what = f"one run per cell (seed {', '.join(map(str, seeds))}), so no std"
    else:
        what = (f"mean±std over {n_per_cell} seeds ({', '.join(map(str, seeds))}); (n=k): "
                f"only k runs finished")
    presets = sorted({str(p) for p in sel["preset"].dropna() if p})
    weights = sorted({str(w) for w in sel["weights"].dropna()})
    config = ("Configuration: preset " + (", ".join(presets) or "unrecorded") +
              ", weights " + (", ".join(weights) or "unrecorded"))
    devs = dict.fromkeys(x for d in sel.get("_deviations", pd.Series(dtype=object)) if d
                         for x in d)
    if devs:
        shown = "; ".join(list(devs)[:4]) + ("; …" if len(devs) > 4 else "")
        config += f", which differs from the paper's: {shown}"
    mean = ("Mean rows: the mean over the group's rows within each seed, then over the "
            "seeds.")
    return " ".join([f"AUC-ROC, {what}.", mean,
                     split_policy_text(set(sel["split_policy"].astype(str))), config + "."])


def build_grid_tables(runs: pd.DataFrame, manifest: dict, grid, metric: str = "auroc"
                      ) -> list[GridTable]:
    """The tables of one grid from its runs (the records of ``manifest['columns_of']``)."""
    frame = grid_frame(runs, manifest["columns_of"])
    summary = summarize(frame, metric) if len(frame) else None
    seeds = list(manifest.get("seeds") or [])
    cells = [tuple(c) for c in manifest.get("cells", [])]
    missing_data = {c for c in cells}
    if len(frame):
        for r in frame[CELL_COLS].drop_duplicates().itertuples(index=False):
            missing_data.discard((r.dataset, r.subset, r.setting, r.known_class or ""))
    out = []
    for setting, layout in manifest.get("layout", {}).items():
        columns = [(c, int(k)) for c, k in layout]
        rows_here = [c for c in cells if c[2] == setting]
        if not rows_here:
            continue
        mean_only = set()
        for b in grid.blocks:
            if b.setting == setting:
                mean_only.update(b.mean_only)
        blanks = {(b[0], b[1], b[3] or "", b[4], 0): b[5]
                  for b in manifest.get("blanks", []) if b[2] == setting}
        table = _one_table(grid, setting, columns, rows_here, summary, frame, seeds,
                           missing_data, mean_only, blanks)
        table.caption = _caption(frame if len(frame) else runs, seeds, setting,
                                 max([len(seeds)] if seeds else [1]))
        if manifest.get("unavailable"):
            table.gaps += [f"not runnable: {u}" for u in manifest["unavailable"]]
        out.append(table)
    return out


CELL_COLS = ["dataset", "subset", "setting", "known_class"]


def _one_table(grid, setting, columns, cells, summary, frame, seeds, missing_data,
               mean_only, blanks=None) -> GridTable:
    by = {}
    if summary is not None:
        for r in summary[summary["setting"] == setting].itertuples(index=False):
            by[(r.dataset, r.subset, r.known_class or "", r.variant, int(r.shots))] = r
    gap_reason = {}
    if len(frame):
        for r in frame[(frame["setting"] == setting) & (frame["status"] != "done")] \
                .itertuples(index=False):
            key = (r.dataset, r.subset, r.known_class or "", r.variant, int(r.shots))
            gap_reason.setdefault(key, (r.status, str(r.reason or "no reason recorded")
                                        .splitlines()[0][:160]))
    # group rows in the order of the grid's cells
    groups: dict[str, list[tuple]] = {}
    for c in cells:
        g, row = row_names(c[0], c[1], setting, c[3])
        groups.setdefault(g, []).append((row, c))
    rows, text, means, gaps = [], [], [], []
    blank_why: dict = {}
    planned = len(seeds) or 1
    for g, members in groups.items():
        seed_rows = []
        for row, c in members:
            t_row, m_row, s_row = [], [], []
            for label, k in columns:
                key = (c[0], c[1], c[3], label, k)
                r = by.get(key)
                if r is not None and r.n > 0:
                    t_row.append(_cell(r.mean, r.std, r.n, r.planned))
                    m_row.append(r.mean)
                    s_row.append(r.seed_values)
                    continue
                if key in (blanks or {}):  # left blank on purpose (Table 9's diagonal)
                    t_row.append("–")
                    m_row.append(np.nan)
                    s_row.append(None)
                    blank_why.setdefault(blanks[key], None)
                    continue
                if c in missing_data:
                    mark, why = "d", "data not prepared"
                elif key in gap_reason:
                    status, why = gap_reason[key]
                    mark = GAP_MARKS.get(status, "")
                else:
                    mark, why = "", "not run yet"
                t_row.append("–" + (f" ({mark})" if mark else ""))
                m_row.append(np.nan)
                s_row.append(None)
                if mark != "d":
                    gaps.append(" ".join(x for x in (g, row) if x) + f" / {label}" +
                                (f" ({k})" if k else "") + f": {why}")
            seed_rows.append(s_row)
            if c[0] not in mean_only:
                rows.append((g, row, False))
                text.append(t_row)
                means.append(m_row)
        if len(members) > 1:
            t_row, m_row = [], []
            for j in range(len(columns)):
                t, v = seed_mean_row([s[j] for s in seed_rows], planned)
                t_row.append(t)
                m_row.append(v)
            rows.append((g, "Mean", True))
            text.append(t_row)
            means.append(m_row)
    if any(c in missing_data for c in cells):
        gaps.insert(0, "(d): the dataset is not prepared; `bench run --grid` prints the "
                       "command that prepares it")
    marks = [rank_marks(m, [k for _, k in columns]) for m in means]
    if any(t.startswith("–") for row in text for t in row):
        gaps.insert(0, "legend: – no finished run; (f) failed, (s) skipped, (d) data not "
                       "prepared" + "".join(f"; – on purpose: {w}" for w in blank_why))
    title = f"{grid.title} ({setting} setting)" if len(grid.settings) > 1 else grid.title
    return GridTable(grid.name, setting, title, "", rows, columns, text, means, marks, gaps,
                     {g: len(m) for g, m in groups.items()}, dict(grid.group_titles))


# -- the report folder --------------------------------------------------------------------------
def load_grid_tables(results, sweep: str, grid_name: str, metric: str = "auroc"):
    """(grid, manifest, runs, tables) of one grid's runs in one sweep."""
    from ..grids import get_grid
    from ..store import Store
    from .tables import ReportError, frame_from_entries

    store = Store(results, sweep)
    manifest = store.grid_manifest(grid_name)
    if manifest is None:
        raise ReportError(f"no runs of grid {grid_name!r} in {store.dir}: run `bench run "
                          f"--grid {grid_name} --results {results} --name {sweep}` first")
    grid = get_grid(grid_name)
    runs = frame_from_entries(store.entries(list(manifest["columns_of"])))
    tables = build_grid_tables(runs, manifest, grid, metric)
    if not tables:
        raise ReportError(f"grid {grid_name!r} has no table cell in {store.dir}")
    return grid, manifest, runs, tables


def paper_number(grid_name: str) -> Optional[int]:
    """The paper table a grid reproduces (table2 → 2), preferred where numbers repeat."""
    m = re.fullmatch(r"table(\d+)", grid_name)
    return int(m.group(1)) if m else None


def deviations_text(runs: pd.DataFrame) -> str:
    devs = dict.fromkeys(x for d in runs.get("_deviations", []) if d for x in d)
    return "; ".join(devs)


def write_grid_report(results, sweep: str, grid_name: str, out, formats: list[str],
                      style: str = "plain", metric: str = "auroc") -> dict:
    """Write the grid's tables (``table_<grid>_<setting>.md/.tex/.csv``), the macro file,
    the cell-by-cell comparison with the paper and runs.csv into ``out``."""
    from pathlib import Path

    from ..util import atomic_write
    from .tables import public_runs
    from .verify import check, comparison_markdown, grid_comparison

    grid, manifest, runs, tables = load_grid_tables(results, sweep, grid_name, metric)
    files = {"runs.csv": public_runs(runs).to_csv(index=False)}
    for t in tables:
        stem = f"table_{grid_name}_{t.setting}"
        if "markdown" in formats:
            files[stem + ".md"] = t.markdown()
        if "latex" in formats:
            files[stem + ".tex"] = t.latex(style)
        if "csv" in formats:
            files[stem + ".csv"] = pd.DataFrame(
                t.text, columns=[f"{c} ({k})" if k else c for c, k in t.columns],
                index=pd.MultiIndex.from_tuples([(g, "Mean" if m else r) for g, r, m in t.rows],
                                                names=["group", "row"])).to_csv()
    if "latex" in formats:
        files[f"macros_{grid_name}.tex"] = macro_file(tables)
    comp = grid_comparison(tables, paper_number(grid_name), deviations_text(runs))
    printed_paper = None
    if metric == "auroc" and len(comp):
        comp = check(comp, 0.02)
        printed_paper = comparison_markdown(comp)
        files[f"paper_{grid_name}.md"] = "### Ours vs the paper (AUC-ROC)\n\n" + printed_paper
        files[f"paper_{grid_name}.csv"] = comp.to_csv(index=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write(out / name, text)
    from ..store import Store
    from .grid_figures import grid_figures, grid_statistics, write_grid_page

    store = Store(results, sweep)
    figs = grid_figures(grid, tables, grid_frame(runs, manifest["columns_of"]), out, store)
    written = sorted(files) + [p.name for _, p, _ in figs if p is not None]
    from . import html as _html
    from .grid_figures import grid_bootstrap, read_scores

    boot = grid_bootstrap(read_scores(grid_frame(runs, manifest["columns_of"]), store))
    if len(boot):
        atomic_write(out / f"bootstrap_{grid_name}.csv", boot.to_csv(index=False))
        written.append(f"bootstrap_{grid_name}.csv")
    if "html" in formats:
        stat_items = grid_statistics(tables, out)
        if len(boot):
            stat_items.append(_html.Table(
                boot.set_index(["dataset", "subset", "setting", "known_class", "variant",
                                "shots"]), title="Bootstrap 95 % intervals of each cell's "
                                                 "AUC-ROC",
                caption="Test images resampled (stratified, 1000 resamples, seeded per "
                        "cell); this is test-set sampling uncertainty only, the spread over "
                        "training seeds is the table's ± std.", float_format="{:.3f}"))
        write_grid_page(out / "index.html", grid, tables, figs, stat_items, runs, store,
                        printed_paper, manifest)
        written.append("index.html")
    return {"markdown": [t.markdown() for t in tables], "tables": tables, "runs": runs,
            "grid": grid, "manifest": manifest, "files": written, "out": out,
            "figures": figs}
