"""CLI options that need no training: --dry-run, --config, --set, errors, report formats."""
import pytest

from bench.cli import main
from bench.plan import ConfigError, SweepConfig, expand


def test_dry_run_counts_and_plan(toy_root, capsys):
    rc = main(["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--setting", "both",
               "--seeds", "2", "--dry-run", "--results", "unused"])
    out = capsys.readouterr().out
    # pixelknn uses no labelled anomalies: one run per (subset, setting, class, seed), shots 0
    # 2 subsets × (1 general + 4 hard) × 2 seeds = 20
    assert rc == 0 and "20 runs (20 to run)" in out and "shots=0" in out and "shots=10" not in out


def test_config_file_and_cli_precedence(toy_root, tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"methods: pixelknn\ndatasets: [{toy_root}]\nsetting: hard\n"
                   f"known-classes: bar\nseeds: 3\nset:\n  pixelknn.k: 2\n")
    assert main(["run", "--config", str(cfg), "--dry-run", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 runs (2 to run)" in out  # 2 subsets × 1 known class × 1 seed (CLI beats file)
    bad = tmp_path / "bad.yaml"
    bad.write_text("methodz: dra\n")
    assert main(["run", "--config", str(bad), "--dry-run"]) == 2
    assert "unknown option 'methodz'" in capsys.readouterr().err


def test_set_overrides_and_errors(toy_root):
    base = dict(methods=["pixelknn"], datasets=[str(toy_root)], setting="general", seeds=1)
    plan = expand(SweepConfig(**base, set=["pixelknn.k=3", "*.img_size=48"]))
    assert {s.params["k"] for s in plan.specs} == {3}
    assert {s.img_size for s in plan.specs} == {48}
    ids = {s.run_id for s in plan.specs}
    assert ids.isdisjoint({s.run_id for s in expand(SweepConfig(**base)).specs})
    with pytest.raises(ConfigError, match="has a parameter 'nope'"):
        expand(SweepConfig(**base, set=["pixelknn.nope=1"]))
    with pytest.raises(ConfigError, match="METHOD.PARAM=VALUE"):
        expand(SweepConfig(**base, set=["k=1"]))


def test_unknown_known_class_is_an_error_not_a_fallback(toy_root, capsys):
    rc = main(["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--setting",
               "hard", "--known-classes", "Metal", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown known class 'Metal'" in err and "Valid classes" in err


def test_bad_dataset_and_subset(toy_root, tmp_path, capsys):
    assert main(["run", "--methods", "pixelknn", "--datasets", str(tmp_path / "nope"),
                 "--dry-run"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--subsets",
                 "gamma", "--dry-run"]) == 2
    assert "its subsets: alpha, beta" in capsys.readouterr().err


def test_seed_and_split_seed(toy_root):
    base = dict(methods=["pixelknn"], datasets=[str(toy_root)], subsets=["alpha"],
                setting="general")
    plan = expand(SweepConfig(**base, seed_list=[4, 7], split_seed=0))
    assert [s.seed for s in plan.specs] == [4, 7] and {s.split_seed for s in plan.specs} == {0}
    assert len({s.split_hash for s in plan.specs}) == 1
    plan = expand(SweepConfig(**base, seeds=2))
    assert len({s.split_hash for s in plan.specs}) == 2  # one seed drives split and training


def test_single_class_dataset_has_no_hard_runs(tmp_path, capsys):
    from bench.testing import write_toy_layout
    root = write_toy_layout(tmp_path / "one", subsets=("s",), classes=("bar",))
    assert main(["run", "--methods", "pixelknn", "--datasets", str(root), "--setting", "both",
                 "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "no hard-setting runs" in captured.err


def test_demo_preset_is_default_for_synthetic_and_paper_for_real(toy_root):
    from bench.plan import effective_preset
    assert effective_preset(SweepConfig()) == "demo"
    assert effective_preset(SweepConfig(datasets=[str(toy_root)])) == "paper"
    plan = expand(SweepConfig(methods=["pixelknn"], datasets=[str(toy_root)], preset="quick"))
    assert {s.img_size for s in plan.specs} == {64} and \
        {s.weights for s in plan.specs} == {"none"}


def test_report_formats(toy_root, tmp_path, capsys):
    res = tmp_path / "res"
    assert main(["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--setting",
                 "both", "--seeds", "2", "--results", str(res), "--no-table"]) == 0
    out = tmp_path / "rep"
    assert main(["report", "--results", str(res), "--out", str(out), "--format",
                 "markdown,csv,latex"]) == 0
    printed = capsys.readouterr().out
    assert "pixelknn" in printed and "±" in printed
    import pandas as pd
    runs = pd.read_csv(out / "runs.csv")
    for col in ("method", "dataset", "subset", "setting", "known_class", "shots", "seed",
                "status", "auroc", "auprc", "fit_s", "score_s"):
        assert col in runs.columns
    assert len(runs) == 20
    # mean and sample std recomputed from runs.csv
    g = runs[(runs.setting == "general") & (runs.subset == "alpha")]["auroc"]
    summary = pd.read_csv(out / "summary.csv")
    row = summary[(summary.setting == "general") & (summary.subset == "alpha")].iloc[0]
    assert abs(row["mean"] - g.mean()) < 1e-12 and abs(row["std"] - g.std(ddof=1)) < 1e-12
    tex = (out / "table_hard.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "Mean" in tex


def test_latex_bolds_best_mean_per_row_and_shot_group():
    import pandas as pd
    from bench.report.tables import to_latex, wide_table
    rows = []
    for method, shots, mean in (("devnet", 10, 0.80), ("dra", 10, 0.90), ("devnet", 1, 0.70),
                                ("dra", 1, 0.60), ("kdad", 0, 0.75)):
        rows.append(dict(dataset="d", subset="s", setting="general", known_class="",
                         method=method, shots=shots, mean=mean, std=0.01, n=3, planned=3))
    text, means = wide_table(pd.DataFrame(rows), "general")
    assert list(text.columns) == ["KDAD", "DevNet (1)", "DRA (1)", "DevNet (10)", "DRA (10)"]
    tex = to_latex(text, means)
    assert "\\textbf{0.900$\\pm$0.010}" in tex      # best of the 10-shot group
    assert "\\textbf{0.750$\\pm$0.010}" in tex      # KDAD beats both 1-shot methods
    assert "\\textbf{0.700" not in tex and "\\textbf{0.800" not in tex


def test_list_commands(capsys):
    assert main(["list", "methods", "--long"]) == 0
    out = capsys.readouterr().out
    for name in ("dra", "devnet", "flos", "saoe", "mlep", "deepsad", "minns", "kdad"):
        assert f"\n{name} " in "\n" + out
    assert "upstream:" in out and "licence:" in out and "variant of dra" in out
    assert main(["list", "methods", "dra*"]) == 0
    assert set(line.split()[0] for line in capsys.readouterr().out.splitlines()) == \
        {"dra", "dra1a", "dra2a", "dra3ar", "dra3an"}
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("mvtec_ad", "aitex", "sdd", "elpv", "optical", "mastcam", "brainmri", "headct",
                 "hyper_kvasir", "lag", "synthetic"):
        assert f"\n{name} " in "\n" + out
