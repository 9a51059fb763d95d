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
