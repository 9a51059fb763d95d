"""The HTML page: self-contained, deterministic, tables/figures/environment/run links present,
and rendered by headless Chromium with every image decoded."""
import base64
import re
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from bench.report import figures, stats
from bench.report.html import Image, Link, Section, Table, Text, write_page
from bench.report.render_check import chromium_dom, chromium_screenshot


class _Tags(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.tags = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def all(self, tag):
        return [a for t, a in self.tags if t == tag]


@pytest.fixture
def report(tmp_path):
    """A small report folder: results with three runs (one failed), a figure, and the page."""
    results = tmp_path / "results" / "sweep"
    records = {}
    for rid, status in (("aaa", "done"), ("bbb", "failed"), ("ccc", "skipped")):
        (results / rid).mkdir(parents=True)
        records[rid] = results / rid / "record.json"
        records[rid].write_text('{"status": "%s"}' % status)
    out = tmp_path / "reports" / "demo"
    cells = pd.DataFrame({"dataset": ["carpet", "tile"] * 3,
                          "method": ["KDAD"] * 2 + ["DevNet"] * 2 + ["DRA"] * 2,
                          "shots": [0, 0, 10, 10, 10, 10],
                          "auroc": [0.70, 0.80, 0.85, np.nan, 0.95, 0.90]})
    png, pdf = figures.sample_efficiency(cells[cells.shots > 0], out / "fig" / "efficiency")
    idx = pd.MultiIndex.from_tuples([("Carpet", "Color"), ("Carpet", "Cut"), ("Carpet", "Mean"),
                                     ("AITEX", "Nep")], names=["Dataset", "Known class"])
    text = pd.DataFrame({"DevNet (10)": ["0.767±0.017", "0.791±0.029", "0.779", "–"],
                         "DRA (10)": ["0.886±0.042", "0.922±0.038", "0.904", "0.800±0.001"]},
                        index=idx)
    emph = pd.DataFrame({"DevNet (10)": ["second", "second", "second", ""],
                         "DRA (10)": ["best", "best", "best", "best"]}, index=idx)
    mat, dropped = stats.score_matrix(cells.assign(shots=10))
    wil = stats.pairwise_wilcoxon(mat)
    sections = [
        Section("Hard setting <AUC-ROC>", [
            Text("One seed per cell.\n\nSplit seed = seed."),
            Table(text, title="Table 2", caption="mean±std over 3 seeds", emphasis=emph)]),
        Section("Figures", [Image(png, title="Sample efficiency", caption="1 vs 10 shots"),
                            Link(pdf, "PDF")]),
        Section("Statistics", [Table(wil, index=False, title="Wilcoxon + Holm")]),
    ]
    env = {"git_commit": "abc123", "packages": {"torch": "2.3.0", "numpy": "1.26"},
           "git_dirty": None}
    runs = pd.DataFrame({"run": ["dra carpet", "devnet tile", "flos tile"],
                         "status": ["done", "failed", "skipped"],
                         "reason": [None, "RuntimeError: diverged", "needs outliers"],
                         "record": [records["aaa"], records["bbb"], records["ccc"]]})
    page = write_page(out / "index.html", "Demo report", sections, environment=env, runs=runs)
    return page, png, sections, env, runs


def test_page_is_self_contained_and_complete(report):
    page, png, *_ = report
    text = page.read_text()
    tags = _Tags(text)
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing fetched from elsewhere
    assert not tags.all("script") and not tags.all("link")
    (img,) = tags.all("img")
    mime, data = img["src"].split(",", 1)
    assert mime == "data:image/png;base64" and base64.b64decode(data) == png.read_bytes()
    assert abs(int(img["width"]) - PILImage.open(png).size[0] / 150 * 96) <= 1  # its size in
    # inches at the figure's 150 dpi, in CSS pixels
    assert len(tags.all("table")) == 3  # Table 2, Wilcoxon, runs
    assert "<strong>0.886±0.042</strong>" in text and "<u>0.767±0.017</u>" in text
    assert '<th rowspan="3">Carpet</th>' in text  # the dataset named once for its group
    assert '<td class="gap">–</td>' in text
    assert "Hard setting &lt;AUC-ROC&gt;" in text  # titles escaped, never raw HTML
    assert "packages.torch" in text and "2.3.0" in text
    assert "RuntimeError: diverged" in text and 'class="text status-failed"' in text
    assert "1 done, 1 failed, 1 skipped" in text


def test_run_and_file_links_are_relative_and_resolve(report):
    page, *_ = report
    hrefs = [a["href"] for a in _Tags(page.read_text()).all("a") if not a["href"].startswith("#")]
    assert hrefs == ["fig/efficiency.pdf", "../../results/sweep/aaa/record.json",
                     "../../results/sweep/bbb/record.json", "../../results/sweep/ccc/record.json"]
    for h in hrefs:
        assert (page.parent / h).is_file()
    anchors = [a["href"][1:] for a in _Tags(page.read_text()).all("a") if a["href"][0] == "#"]
    ids = [a["id"] for a in _Tags(page.read_text()).all("section")]
    assert anchors == ids == ["hard-setting-auc-roc", "figures", "statistics", "environment",
                              "runs"]


def test_rerun_writes_identical_page(report, tmp_path):
    page, _, sections, env, runs = report
    again = write_page(page.parent / "again.html", "Demo report", sections, environment=env,
                       runs=runs)
    assert again.read_bytes() == page.read_bytes()


def test_bad_items_are_refused(tmp_path):
    with pytest.raises(ValueError, match="only .* can be inlined"):
        write_page(tmp_path / "p.html", "x", [Section("s", [Image(tmp_path / "f.pdf")])])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_page(tmp_path / "p.html", "x", [Section("s", [Image(tmp_path / "missing.png")])])
    df = pd.DataFrame({"a": [1.0]})
    with pytest.raises(ValueError, match="emphasis has shape"):
        write_page(tmp_path / "p.html", "x",
                   [Section("s", [Table(df, emphasis=pd.DataFrame({"a": ["", ""]}))])])
    with pytest.raises(ValueError, match="'record' column"):
        write_page(tmp_path / "p.html", "x", [], runs=pd.DataFrame({"status": ["done"]}))
    assert not list(tmp_path.glob("*.html")) and not list(tmp_path.glob(".*tmp"))


def test_chromium_renders_tables_and_decodes_images(report, chromium, tmp_path):
    page, png, *_ = report
    before = page.read_bytes()
    dom = _Tags(chromium_dom(page))
    assert page.read_bytes() == before  # the probe works on a copy
    assert len(dom.all("table")) == 3
    assert len(dom.all("tr")) == 1 + 4 + 1 + 3 + 1 + 3  # headers + rows of the three tables
    (img,) = dom.all("img")
    width, height = PILImage.open(png).size
    assert (int(img["data-natural-width"]), int(img["data-natural-height"])) == (width, height)
    shot = chromium_screenshot(page, tmp_path / "shot.png", size=(1000, 1400))
    pixels = np.asarray(PILImage.open(shot).convert("L"))
    assert pixels.shape == (1400, 1000) and pixels.std() > 10  # something was drawn


def test_chromium_flags_a_broken_image(tmp_path, chromium):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    page = write_page(tmp_path / "p.html", "broken", [Section("s", [Image(bad)])])
    (img,) = _Tags(chromium_dom(page)).all("img")
    assert img["data-natural-width"] == "0"
