"""The whole path of a figure grid: `bench run --grid fig3 --datasets synthetic --preset quick`
then `bench report --grid fig3 --format html,latex`: the figure, a compiling .tex and a page
that Chromium renders with its tables and images."""
import re

from bench.cli import main
from bench.report.render_check import chromium_dom, compile_latex, latex_document


def test_fig3_on_synthetic_data_end_to_end(tmp_path, capsys, pdflatex, chromium):
    res, out = str(tmp_path / "res"), tmp_path / "rep"
    rc = main(["run", "--grid", "fig3", "--datasets", "synthetic", "--preset", "quick",
               "--seed-list", "0", "--subsets", "weave", "--set", "*.epochs=1",
               "--set", "*.steps_per_epoch=2", "--results", res, "--no-table"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "not runnable" not in printed      # 3-class: SAOE without outlier exposure
    assert "6 done, 0 failed, 0 skipped" in printed
    rc = main(["report", "--grid", "fig3", "--results", res, "--format", "html,latex",
               "--out", str(out)])
    assert rc == 0
    assert (out / "fig3.png").stat().st_size > 10_000 and (out / "fig3.pdf").is_file()
    import pandas as pd

    boot = pd.read_csv(out / "bootstrap_fig3.csv")
    assert len(boot) == 6 and (boot["ci_low"] <= boot["auroc"]).all() \
        and (boot["auroc"] <= boot["ci_high"]).all()
    tex = (out / "table_fig3_general.tex").read_text()
    assert r"\label{tab:fig3-general}" in tex and "N\\_r=10" in tex
    doc = latex_document(tex + "\n" + (out / "macros_fig3.tex").read_text(),
                         packages=("booktabs", "graphicx"))
    result = compile_latex(doc)
    assert result.ok, result.errors
    assert not result.overfull_hbox
    dom = chromium_dom(out / "index.html")
    assert len(re.findall(r"<table", dom)) >= 2              # the grid table and the run list
    assert len(re.findall(r"<img", dom)) >= 2                # Fig. 3 and the score densities
    assert 'data-natural-width="0"' not in dom               # every image decoded
    assert "Figure 3" in dom and "DRA2A" in dom
    # a rerun writes identical files
    before = {p.name: p.read_bytes() for p in out.iterdir()
              if p.suffix in (".tex", ".html", ".csv", ".png")}
    assert main(["report", "--grid", "fig3", "--results", res, "--format", "html,latex",
                 "--out", str(out)]) == 0
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.name in before}


def test_data_gallery_draws_every_subset(toy_root, tmp_path, capsys):
    from PIL import Image

    stem = tmp_path / "fig4"
    assert main(["data", "gallery", str(toy_root), "--per-row", "3", "--size", "32",
                 "--out", str(stem)]) == 0
    w, h = Image.open(stem.with_suffix(".png")).size
    assert h > w / 3 and (stem.with_suffix(".pdf")).is_file()   # 4 rows of 3 images
    assert main(["data", "gallery", "mvtec_ad", "--data-root", str(tmp_path / "none")]) == 2
    assert "bench data prepare mvtec_ad" in capsys.readouterr().err
