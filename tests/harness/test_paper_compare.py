"""Our results beside the paper's published numbers (bench/data/paper_auc.csv)."""
import pandas as pd

from bench.report.paper import compare_with_paper, paper_row_name, paper_table


def test_row_names_follow_the_paper():
    assert paper_row_name("mvtec_ad", "metal_nut", "general", None) == ("Metal_nut", "")
    assert paper_row_name("mvtec_ad", "carpet", "hard", "metal_contamination") == ("Carpet", "Metal")
    assert paper_row_name("hyper_kvasir", "hyperkvasir", "hard", "barretts-short-segment") == \
        ("Hyper-Kvasir", "Barretts-short-seg")
    assert paper_row_name("aitex", "AITEX", "hard", "Broken_end") == ("AITEX", "Broken_end")
    assert paper_row_name("mastcam", "mastcam", "hard", "drill-hole") == ("Mastcam", "Drill-hole")
    assert paper_row_name("synthetic", "weave", "general", None) is None
    # every hard-setting known class the dataset plugins run has a row in Table 2
    from bench.registry import get_dataset
    names = set(zip(paper_table().dataset, paper_table().subset))
    for ds in ("mvtec_ad", "aitex", "elpv", "mastcam", "hyper_kvasir"):
        for subset, classes in get_dataset(ds).hard_known_classes.items():
            for k in classes:
                assert paper_row_name(ds, subset, "hard", k) in names, (ds, subset, k)


def test_compare_puts_the_published_value_beside_ours():
    summary = pd.DataFrame([
        dict(dataset="mvtec_ad", subset="carpet", setting="general", known_class="",
             method="devnet", shots=10, mean=0.900, std=0.01, n=3, planned=3),
        dict(dataset="elpv", subset="elpv", setting="hard", known_class="mono",
             method="dra", shots=1, mean=0.700, std=0.02, n=3, planned=3),
        dict(dataset="synthetic", subset="weave", setting="general", known_class="",
             method="dra", shots=10, mean=0.6, std=0.1, n=1, planned=1)])
    comp = compare_with_paper(summary)
    assert len(comp) == 2
    carpet = comp[comp.subset == "carpet"].iloc[0]
    assert carpet.paper_mean == 0.867 and abs(carpet.delta - (0.900 - 0.867)) < 1e-12
    p = paper_table()
    mono = p[(p.dataset == "ELPV") & (p.subset == "Mono") & (p.method == "DRA") & (p.shots == 1)]
    assert comp[comp.subset == "elpv"].iloc[0].paper_mean == mono.iloc[0]["mean"]


def test_planner_records_how_a_run_differs_from_the_paper_preset():
    from bench.plan import SweepConfig, expand
    from .conftest import prepared_toy
    prepared_toy("mvtec_ad", subsets=("carpet",), n_train=4, n_per_class=4)
    base = dict(methods=["devnet"], datasets=["mvtec_ad"], setting="general", seeds=1,
                shots=[1])
    (paper,) = expand(SweepConfig(**base, preset="paper")).specs
    assert paper.paper_deviations == ()
    (quick,) = expand(SweepConfig(**base, preset="quick")).specs
    devs = quick.paper_deviations
    assert "preset quick" in devs and "img_size=64 (paper preset: 448)" in devs
    assert "weights none (paper preset: imagenet)" in devs
    assert any(d.startswith("epochs=") for d in devs)  # the test-sized budget


def test_compare_paper_warns_about_a_differing_configuration(tmp_path, capsys):
    from bench.cli import main
    from bench.plan import SweepConfig, expand
    from bench.store import Store
    from .conftest import execute_plan, prepared_toy
    import torch
    prepared_toy("mvtec_ad", subsets=("carpet",), n_train=4, n_per_class=4)
    plan = expand(SweepConfig(methods=["devnet"], datasets=["mvtec_ad"], setting="general",
                              seeds=1, shots=[1], preset="quick",
                              set=["devnet.img_size=32", "devnet.epochs=1",
                                   "devnet.steps_per_epoch=1", "devnet.batch_size=4"]))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert set(execute_plan(plan, Store(tmp_path / "res", "main")).values()) == {"done"}
    finally:
        torch.set_num_threads(before)
    out = tmp_path / "rep"
    assert main(["report", "--results", str(tmp_path / "res"), "--out", str(out),
                 "--compare-paper"]) == 0
    printed = capsys.readouterr().out
    assert "Warning: 1 of 1 rows come from a configuration that differs" in printed
    assert "preset quick" in printed and "weights none (paper preset: imagenet)" in printed
    md = (out / "paper_comparison.md").read_text()
    assert "differs from the paper's" in md and "img_size=32 (paper preset: 448)" in md
    comp = pd.read_csv(out / "paper_comparison.csv")
    assert comp.loc[0, "paper_mean"] == 0.746
    assert "preset quick" in comp.loc[0, "differs_from_paper"]


def test_compare_paper_on_data_the_paper_lacks_says_so(toy_root, tmp_path, capsys):
    from bench.cli import main
    from bench.plan import SweepConfig, expand
    from bench.store import Store
    from .conftest import execute_plan
    plan = expand(SweepConfig(methods=["pixelknn"], datasets=[str(toy_root)], seeds=1,
                              setting="general"))
    execute_plan(plan, Store(tmp_path / "res", "main"))
    out = tmp_path / "rep"
    assert main(["report", "--results", str(tmp_path / "res"), "--out", str(out),
                 "--compare-paper"]) == 0
    assert "no row of these results is in the paper's tables" in capsys.readouterr().out
    assert not list(out.glob("paper_comparison.*"))


def test_hard_runs_store_unseen_auc_and_report_it(toy_root, tmp_path, capsys):
    from bench.cli import main
    from bench.plan import SweepConfig, expand
    from bench.metrics import run_metrics
    from bench.store import Store
    from .conftest import execute_plan
    m = run_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], [False] * 4, "hard")
    assert m["auroc_unseen"] == m["auroc"] == 0.75 and m["auroc_seen"] is None
    plan = expand(SweepConfig(methods=["pixelknn"], datasets=[str(toy_root)], seeds=1,
                              setting="hard", known_classes=["bar"]))
    store = Store(tmp_path / "res", "main")
    execute_plan(plan, store)
    recs = list(store.records())
    assert recs and all(r["auroc_unseen"] == r["auroc"] for r in recs)
    assert main(["report", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "rep"),
                 "--metric", "auroc_unseen"]) == 0
    printed = capsys.readouterr().out
    assert "unseen anomaly classes, hard setting" in printed
    assert f"{recs[0]['auroc']:.3f}" in printed and "this is the AUC-ROC" in printed
