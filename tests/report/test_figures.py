"""Every figure at toy size: files written, byte-identical on a rerun, gaps marked, bad input
refused with a message that names the problem."""
import re

import numpy as np
import pandas as pd
import pytest

from bench.report import figures as F
from bench.report import stats

METHODS = ["KDAD", "DevNet", "DRA"]


def _svg_text(path) -> str:
    """The text of an SVG written with svg.fonttype = none (text stays <text>)."""
    return " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text()))


def _cells():
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"dataset": d, "method": m, "shots": k, "auroc": rng.uniform(0.6, 1)}
                         for d in ("carpet", "tile", "aitex") for m in METHODS for k in (1, 10)])


def _scores():
    rng = np.random.default_rng(1)
    rows = []
    for m in METHODS:
        for i in range(30):
            label, seen = int(i >= 18), int(24 > i >= 18)
            rows.append({"method": m, "label": label, "seen": seen,
                         "score": rng.normal() + 2 * label, "path": f"img{i}.png"})
    return pd.DataFrame(rows)


def _fig3_frames():
    rng = np.random.default_rng(2)
    left = pd.DataFrame([{"domain": dom, "dataset": f"{dom}{j}", "variant": v,
                          "auroc": rng.uniform(0.6, 1)}
                         for dom in ("industrial", "medical") for j in range(2)
                         for v in ("Non-disentangled", "Seen+pseudo", "DRA")])
    left = left[~((left.domain == "medical") & (left.variant == "Seen+pseudo"))]
    right = pd.DataFrame([{"dataset": d, "subset": s, "n_ref": n, "auroc": rng.uniform(0.7, 1)}
                          for d in ("MVTec AD", "ELPV") for s in range(2) for n in (1, 5, 10)])
    return left, right


def _tsne_panels():
    rng = np.random.default_rng(3)
    feats = np.r_[rng.normal(size=(16, 8)), rng.normal(size=(8, 8)) + 3]
    groups = ["normal"] * 16 + ["seen"] * 4 + ["unseen"] * 4
    return {"DevNet": (feats, groups), "DRA": (feats * 2, groups)}


def _gallery():
    rng = np.random.default_rng(4)
    img = lambda shape: (rng.random(shape) * 255).astype(np.uint8)
    return {"carpet": [(img((16, 16, 3)), "good"), (img((16, 16, 3)), "good"),
                       (img((16, 16, 3)), "color"), (img((16, 16, 3)), "cut")],
            "headct": [(img((16, 16)), "good"), (img((16, 16, 1)), "hemorrhage")]}


def _hard():
    rng = np.random.default_rng(5)
    df = pd.DataFrame([{"subset": f"carpet / {c}", "method": m, "auroc": rng.uniform(0.5, 1)}
                       for c in ("color", "cut", "hole") for m in METHODS])
    df.loc[(df.subset == "carpet / cut") & (df.method == "DRA"), "auroc"] = np.nan
    return df


def _ranks():
    mat, _ = stats.score_matrix(_cells()[lambda d: d.shots == 10])
    r = stats.friedman(mat)
    return r.avg_ranks, r.cd, r.n_blocks


FIGURES = {
    "sample_efficiency": lambda out, **kw: F.sample_efficiency(_cells(), out, **kw),
    "hard_heatmap": lambda out, **kw: F.hard_heatmap(_hard(), out, **kw),
    "score_distributions": lambda out, **kw: F.score_distributions(_scores(), out, **kw),
    "cd_diagram": lambda out, **kw: F.cd_diagram(*_ranks()[:2], out, n_blocks=3, **kw),
    "fig3": lambda out, **kw: F.fig3(*_fig3_frames(), out, **kw),
    "fig5_losses": lambda out, **kw: F.fig5_losses(pd.DataFrame(
        [{"dataset": d, "loss": l, "auroc": 0.7 + 0.1 * i}
         for d in ("Carpet", "AITEX") for i, l in enumerate(("deviation", "BCE", "focal"))]),
        out, **kw),
    "tsne": lambda out, **kw: F.tsne(_tsne_panels(), out, max_iter=250, **kw),
    "gallery": lambda out, **kw: F.gallery(_gallery(), out, **kw),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_writes_png_and_pdf_identically_on_rerun(name, tmp_path):
    first = FIGURES[name](tmp_path / "a" / name)
    again = FIGURES[name](tmp_path / "b" / f"{name}.png")  # a suffix is replaced, not doubled
    assert [p.name for p in first] == [f"{name}.png", f"{name}.pdf"]
    assert [p.name for p in again] == [p.name for p in first]
    for p, q in zip(first, again):
        assert p.read_bytes() == q.read_bytes(), f"{p.name} differs between two runs"
    png, pdf = (p.read_bytes() for p in first)
    assert png.startswith(b"\x89PNG") and pdf.startswith(b"%PDF")
    assert b"CreationDate" not in pdf and b"matplotlib" not in pdf.lower()
    assert b"Software" not in png[:4096]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"{name}.pdf", f"{name}.png"]


def test_heatmap_marks_missing_cells_and_labels_values(tmp_path):
    (svg,) = F.hard_heatmap(_hard(), tmp_path / "h", formats=("svg",))
    text = _svg_text(svg)
    assert text.count("n/a") == 1
    assert len(re.findall(r"\b0\.\d{3}\b", text)) == 8  # the other 8 cells, three decimals
    assert "carpet / cut" in text and "DevNet" in text


def test_heatmap_refuses_two_values_for_one_cell(tmp_path):
    df = pd.concat([_hard(), _hard().iloc[:1]])
    with pytest.raises(ValueError, match=r"one row per cell"):
        F.hard_heatmap(df, tmp_path / "h")


def test_bars_mark_missing_bars(tmp_path):
    (svg,) = F.fig3(*_fig3_frames(), tmp_path / "f", formats=("svg",))
    text = _svg_text(svg)
    assert text.count("n/a") == 1  # medical × Seen+pseudo has no run
    for label in ("industrial", "medical", "Non-disentangled", "Seen+pseudo", "MVTec AD",
                  "ELPV"):
        assert label in text


def test_fig3_averages_datasets_per_domain(tmp_path):
    left = pd.DataFrame({"domain": ["ind", "ind", "med"], "variant": ["DRA"] * 3,
                         "auroc": [0.6, 0.8, 0.9]})
    right = pd.DataFrame({"dataset": ["a"], "n_ref": [5], "auroc": [0.9]})
    assert F._mean_cells(left, ["domain", "variant"], "auroc").to_dict() == {
        ("ind", "DRA"): pytest.approx(0.7), ("med", "DRA"): 0.9}
    assert len(F.fig3(left, right, tmp_path / "f")) == 2


def test_sample_efficiency_names_missing_shot_counts(tmp_path):
    df = _cells()
    df = df[~((df.method == "DRA") & (df.shots == 1))]
    df = pd.concat([df[df.method != "KDAD"], df[df.method == "KDAD"].assign(shots=0)])
    (svg,) = F.sample_efficiency(df, tmp_path / "s", formats=("svg",))
    text = _svg_text(svg)
    assert "DRA (no 1-shot value)" in text and "KDAD (no labelled anomalies)" in text


def test_score_distributions_groups_and_counts(tmp_path):
    assert F.image_groups([0, 1, 1, 0], [0, 1, 0, 1]).tolist() == [
        "normal", "seen", "unseen", "normal"]
    (svg,) = F.score_distributions(_scores(), tmp_path / "d", formats=("svg",))
    text = _svg_text(svg)
    assert "DRA (normal 18, seen 6, unseen 6)" in text
    bad = _scores().assign(score=np.nan)
    with pytest.raises(ValueError, match="not finite"):
        F.score_distributions(bad, tmp_path / "d")


def test_cd_diagram_shows_ranks_and_cd(tmp_path):
    ranks = pd.Series({"A": 1.2, "B": 1.9, "C": 3.4, "D": 3.5})
    (svg,) = F.cd_diagram(ranks, 1.0, tmp_path / "cd", n_blocks=12, formats=("svg",))
    text = _svg_text(svg)
    for label in ("A (1.20)", "B (1.90)", "C (3.40)", "D (3.50)", "CD = 1.000", "N = 12"):
        assert label in text
    with pytest.raises(ValueError, match="positive"):
        F.cd_diagram(ranks, 0.0, tmp_path / "cd")


def test_tsne_embedding_repeats():
    feats, _ = _tsne_panels()["DRA"]
    a = F.tsne_embedding(feats, seed=1, max_iter=250)
    assert a.shape == (24, 2)
    assert np.array_equal(a, F.tsne_embedding(feats, seed=1, max_iter=250))
    with pytest.raises(ValueError, match="N >= 4"):
        F.tsne_embedding(np.zeros((3, 2)))


def test_input_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['shots'\]"):
        F.sample_efficiency(_cells().drop(columns="shots"), tmp_path / "x")
    with pytest.raises(ValueError, match="no rows"):
        F.fig5_losses(pd.DataFrame(columns=["dataset", "loss", "auroc"]), tmp_path / "x")
    with pytest.raises(ValueError, match="formats must be among"):
        F.sample_efficiency(_cells(), tmp_path / "x", formats=("jpg",))
    panels = {"DRA": (np.zeros((5, 2)), ["normal"] * 4)}
    with pytest.raises(ValueError, match="5 feature rows but 4 groups"):
        F.tsne(panels, tmp_path / "x")
    with pytest.raises(ValueError, match="uint8"):
        F.gallery({"c": [(np.zeros((4, 4)), "good"), (np.zeros((4, 4)), "cut")]}, tmp_path / "x")
    with pytest.raises(ValueError, match="needs normal"):
        F.gallery({"c": [(np.zeros((4, 4), np.uint8), "cut")]}, tmp_path / "x")
