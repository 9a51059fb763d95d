"""The command line as a careful user meets it (issue 15): no run planned twice, one-line
errors before any worker starts, nothing silently ignored, a clean Ctrl-C, messages that
point the right way, dry runs that never download, and help that answers."""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import build_parser, main, options_markdown, subcommands

from .conftest import run_bench

README = Path(__file__).resolve().parents[2] / "README.md"


def _one_error(capsys) -> str:
    """The captured stderr must be exactly one ``error:`` line, with no traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _dry(toy_root, *extra):
    return ["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--subsets", "alpha",
            "--dry-run", *extra]


# -- item 1: a run is never planned twice ----------------------------------------------------
def test_repeated_seeds_shots_and_datasets_plan_each_run_once(toy_root, tmp_path, capsys):
    assert main(_dry(toy_root, "--setting", "general", "--seed-list", "3,3",
                     "--results", str(tmp_path / "r"))) == 0
    out, err = capsys.readouterr()
    assert "--seed-list 3,3: duplicates dropped" in err
    assert "1 runs (1 to run)" in out
    ids = re.findall(r"^  ([0-9a-f]{16}) ", out, re.M)
    assert len(ids) == len(set(ids)) == 1
    assert main(["run", "--methods", "dra", "--datasets", str(toy_root),
                 "--subsets", "alpha", "--setting", "general", "--shots", "1,1,2",
                 "--weights", "none", "--dry-run", "--results", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    assert "--shots 1,1,2: duplicates dropped" in err and "(--shots 1,2)" in err
    assert out.count("shots=1 ") == 3 and out.count("shots=2 ") == 3  # 3 paper-preset seeds
    # one dataset named by two paths: the same run ids, each planned once
    assert main(["run", "--methods", "pixelknn", "--datasets", f"{toy_root},{toy_root}/.",
                 "--setting", "general", "--seeds", "1", "--dry-run",
                 "--results", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    assert "2 runs (2 to run)" in out and "duplicate run(s) dropped" in err


# -- item 2: one-line errors, before any worker starts ---------------------------------------
def test_results_that_is_a_file_is_refused_even_in_a_dry_run(toy_root, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    for results in (f, f / "below"):
        for dry in (True, False):
            args = _dry(toy_root, "--results", str(results))
            assert main(args if dry else [a for a in args if a != "--dry-run"]) == 2
            line = _one_error(capsys)
            assert str(f) in line and "is a file, not a folder" in line


def test_sweep_name_that_escapes_is_refused(toy_root, tmp_path, capsys):
    for name in ("../escape", ".hidden", "a/b"):
        assert main(_dry(toy_root, "--results", str(tmp_path / "r"), "--name", name)) == 2
        assert "must be a plain folder name" in _one_error(capsys)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "r").exists()


def test_gpu_index_that_does_not_exist_is_refused_before_any_worker(toy_root, tmp_path,
                                                                     capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # this machine shows no GPU
    res = tmp_path / "r"
    args = ["run", "--methods", "pixelknn", "--datasets", str(toy_root), "--subsets", "alpha",
            "--setting", "general", "--results", str(res), "--gpus", "0"]
    assert main(args) == 2
    line = _one_error(capsys)
    assert "--gpus 0: no GPU 0 on this machine (visible: none)" in line and "--gpus none" in line
    assert not res.exists()  # nothing ran, nothing was recorded as failed
    assert main(args[:-1] + ["x"]) == 2
    assert "is not an index" in _one_error(capsys)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert main(args[:-1] + ["1", "--dry-run"]) == 0
    assert "would run on 1 worker(s): gpu 1" in capsys.readouterr().out


def test_perf_argument_errors(capsys, monkeypatch, tmp_path):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["perf", "--device", "cuda", "--steps", "1"]) == 2
    assert "--device cuda: torch sees no CUDA GPU" in _one_error(capsys)
    assert main(["perf", "--device", "tpu"]) == 2
    assert "use cpu, cuda or cuda:N" in _one_error(capsys)
    for opt in ("--steps", "--img-size", "--batch-size"):
        assert main(["perf", opt, "0"]) == 2
        assert f"{opt} 0: use a positive number" in _one_error(capsys)
    assert main(["perf", "--csv", str(tmp_path / "no" / "x.csv")]) == 2
    assert "does not exist" in _one_error(capsys)
    # --out is the deprecated spelling of --csv
    assert build_parser().parse_args(["perf", "--out", "f.csv"]).csv == "f.csv"


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--seed-list", "a,b"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected comma-separated integers" in err[0] and \
        "bench run --help" in err[0]


# -- item 3: nothing silently ignored or overridden ------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--setting", "general", "--known-classes", "bar"],
     "--known-classes bar applies to the hard setting only"),
    (["--seeds", "2", "--seed-list", "0,1"], "--seeds 2 and --seed-list 0,1 both given"),
    (["--workers", "0"], "--workers 0: use at least 1"),
    (["--workers", "-2"], "--workers -2: use at least 1"),
    (["--jobs-per-gpu", "0"], "--jobs-per-gpu 0: use at least 1"),
    (["--shots", "11"], "--shots 11: in the general setting the protocol takes the first 10"),
    (["--seed-list", "-1"], "--seed-list -1: a seed must be between 0 and 2**32-1"),
    (["--train-cap", "0"], "--train-cap 0: use at least 1"),
])
def test_contradictory_or_out_of_range_options_are_refused(toy_root, tmp_path, capsys, extra,
                                                           message):
    assert main(_dry(toy_root, "--results", str(tmp_path / "r"), *extra)) == 2
    assert message in _one_error(capsys)


def test_shots_above_ten_in_the_hard_setting_are_done(toy_root, tmp_path, capsys):
    """The hard setting's test set does not depend on the shots: more than 10 is planned
    (and here skipped with its reason: a known class of 5 images)."""
    assert main(["run", "--methods", "dra", "--datasets", str(toy_root), "--subsets", "alpha",
                 "--setting", "hard", "--shots", "12", "--seeds", "1", "--weights", "none",
                 "--dry-run", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "fewer than the 12 shots asked" in out


def test_command_line_replacing_config_values_says_so(toy_root, tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"methods: pixelknn\ndatasets: [{toy_root}]\nsubsets: alpha\n"
                   f"setting: general\nseeds: 3\n")
    assert main(["run", "--config", str(cfg), "--seed-list", "4", "--dry-run",
                 "--results", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    assert f"--seed-list on the command line replaces seeds: 3 of {cfg}" in err
    assert "1 runs (1 to run)" in out and "seed=4" in out


def test_options_that_do_not_apply_are_named(toy_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert main(_dry(toy_root, "--results", str(tmp_path / "r"), "--gpus", "all",
                     "--jobs-per-gpu", "3")) == 0
    err = capsys.readouterr().err
    assert "--gpus all: no GPU is visible on this machine; running on the CPU" in err
    assert "--jobs-per-gpu 3 applies to GPU runs" in err


# -- item 4: Ctrl-C ends cleanly -------------------------------------------------------------
def _records(results: Path):
    return {p.parent.name: p.stat().st_mtime_ns for p in results.glob("*/*/record.json")}


@pytest.mark.parametrize("moment", ["while workers boot", "while runs run"])
def test_ctrl_c_ends_cleanly_and_a_rerun_resumes(toy_root, tmp_path, bench_env, moment):
    res = tmp_path / "res"
    # 5 runs; two workers to interrupt at boot, one (cheaper) to interrupt mid-sweep
    args = ["run", "--methods", "epgood", "--set", "epgood.sleep=0.5", "--datasets",
            str(toy_root), "--subsets", "alpha", "--setting", "both", "--shots", "1",
            "--seeds", "1", "--results", str(res), "--weights", "none", "--no-table",
            "--workers", "2" if moment == "while workers boot" else "1"]
    # a new session: the signal goes to the whole process group, as a terminal's Ctrl-C does
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], env=bench_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    if moment == "while workers boot":
        while "worker(s)" not in proc.stdout.readline() and time.time() < deadline:
            pass
        time.sleep(0.2)  # the workers are importing torch now
    else:
        logs = res / "main" / "logs"
        while time.time() < deadline and len(_records(res)) < 2:
            time.sleep(0.05)
        time.sleep(0.2)  # the next runs have started: their workers are mid-run
        assert logs.is_dir() and len(list(logs.glob("*.log"))) > len(_records(res))
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert err.count("interrupted; finished runs are kept") == 1
    for noise in ("Traceback", "KeyboardInterrupt", "Process SpawnProcess"):
        assert noise not in err and noise not in out, err
    sweep = res / "main"
    if sweep.is_dir():
        assert not [p for p in sweep.iterdir() if p.name.startswith((".tmp-", ".old-"))]
        for p in sweep.iterdir():  # every run folder is complete
            if p.is_dir() and p.name not in ("logs", "claims"):
                assert (p / "record.json").is_file() and (p / "spec.json").is_file()
        assert not list((sweep / "claims").glob("*")) if (sweep / "claims").is_dir() else True
    deadline = time.time() + 10
    while time.time() < deadline:  # no process of the sweep's group outlives it
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a worker outlived the interrupted sweep")
    if moment == "while runs run":
        before = _records(res)
        assert before
        again = run_bench(args, bench_env, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{len(before)} already finished" in again.stdout
        after = _records(res)
        assert all(after[r] == m for r, m in before.items())  # kept, not redone
        assert len(after) == int(again.stdout.split(" runs planned")[0].split()[-1])


# -- item 8: messages that point the right way -----------------------------------------------
def test_status_and_report_name_what_is_there(tmp_path, capsys):
    res = tmp_path / "res"
    assert main(["status", "--results", str(res)]) == 2
    assert "no results folder" in _one_error(capsys)
    f = tmp_path / "file"
    f.write_text("")
    assert main(["status", "--results", str(f)]) == 2
    assert "is a file, not a results folder" in _one_error(capsys)
    for sweep in ("alpha_sweep", "beta_sweep"):
        (res / sweep).mkdir(parents=True)
    assert main(["status", "--results", str(res), "--name", "nosuch"]) == 2
    assert "no sweep 'nosuch'" in (line := _one_error(capsys)) and \
        "alpha_sweep, beta_sweep" in line
    assert main(["report", "--results", str(res), "--name", "nosuch",
                 "--out", str(tmp_path / "rep")]) == 2
    assert "the sweeps there: alpha_sweep, beta_sweep" in _one_error(capsys)
    assert main(["status", "--results", str(res), "--name", "alpha_sweep,beta_sweep"]) == 0
    out = capsys.readouterr().out
    assert "alpha_sweep: 0 done" in out and "beta_sweep: 0 done" in out


def test_data_info_and_list_say_what_matched(capsys):
    assert main(["data", "info", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nosuch'" in err and "folder" not in err
    assert main(["list", "methods", "zzz*"]) == 1
    err = capsys.readouterr().err
    assert "no method matches 'zzz*'" in err and "dra" in err
    assert main(["list", "datasets", "zzz*"]) == 1
    assert "no dataset matches 'zzz*'" in capsys.readouterr().err


# -- item 9: --dry-run never downloads -------------------------------------------------------
def test_dry_run_reports_weights_and_never_downloads(toy_root, tmp_path, capsys, monkeypatch):
    import torch.hub
    attempts = []
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: attempts.append(a) or (_ for _ in ()).throw(
                            OSError("offline")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    args = ["run", "--methods", "devnet", "--datasets", str(toy_root), "--subsets", "alpha",
            "--setting", "general", "--preset", "paper", "--results", str(tmp_path / "r")]
    assert main(args + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    from bench.methods.common.backbones import weights_filename
    fname = weights_filename("resnet18")
    assert f"weights for resnet18 (imagenet) missing: {fname} is not in torch's cache" in out
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / fname) in out
    assert attempts == []
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / fname
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"")
    assert main(args + ["--dry-run"]) == 0
    assert f"weights for resnet18 (imagenet): {ckpt}" in capsys.readouterr().out
    ckpt.unlink()
    assert main(args) == 2  # a real run tries once, then stops before any worker
    assert "ImageNet weights for resnet18 are not available" in _one_error(capsys)
    assert len(attempts) == 1 and not (tmp_path / "r").exists()


# -- item 10: help that answers --------------------------------------------------------------
def _options(sp):
    return [a for a in sp._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def test_every_option_of_every_subcommand_has_help_with_its_default(capsys):
    parser = build_parser()
    paths = [p for p, _ in subcommands(parser)]
    assert {("run",), ("report",), ("perf",), ("status",), ("list",), ("data", "prepare"),
            ("data", "check"), ("data", "info"), ("data", "download")} <= set(paths)
    missing = []
    for path, sp in subcommands(parser):
        with pytest.raises(SystemExit) as exc:
            main([*path, "--help"])
        assert exc.value.code == 0
        shown = capsys.readouterr().out
        for a in _options(sp):
            name = a.option_strings[0] if a.option_strings else a.dest
            # a flag is off unless given; every option that takes a value says its default
            if not a.help or (a.option_strings and a.nargs != 0 and "default" not in a.help):
                missing.append(f"bench {' '.join(path)} {name}: {a.help!r}")
            if a.option_strings:
                assert name in shown
    assert not missing, "options without help or default:\n" + "\n".join(missing)


def test_readme_option_summary_matches_the_help():
    text = README.read_text()
    begin, end = "<!-- options:begin -->\n", "<!-- options:end -->"
    assert begin in text and end in text
    block = text[text.index(begin) + len(begin):text.index(end)]
    generated = options_markdown()
    if block != generated and os.environ.get("BENCH_UPDATE_README") == "1":
        README.write_text(text.replace(block, generated))
        block = generated
    assert block == generated, ("README's option summary differs from the parser's help; "
                                "rerun this test with BENCH_UPDATE_README=1 to rewrite it")


def test_one_name_for_one_thing():
    parser = build_parser()
    metavars = {}
    for path, sp in subcommands(parser):
        for a in _options(sp):
            for opt in a.option_strings:
                if opt in ("--results", "--data-root"):
                    metavars.setdefault(opt, set()).add(a.metavar)
    assert metavars == {"--results": {"DIR"}, "--data-root": {"DIR"}}
    perf = dict(subcommands(parser))[("perf",)]
    assert "--csv" in perf._option_string_actions and "--out" in perf._option_string_actions


def test_list_methods_cuts_titles_at_a_word_boundary(capsys):
    from bench.registry import get_method_entry, list_methods
    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list_methods())
    for line in lines:
        name, rest = line.split(maxsplit=1)
        paper = get_method_entry(name).cls.card.paper
        title = rest.rsplit(" [", 1)[0].rstrip()
        if title != paper:
            assert title.endswith(" …"), title
            kept = title[:-2]
            assert paper.startswith(kept) and paper[len(kept)] == " ", (kept, paper)
    assert main(["list", "methods", "dra", "--long"]) == 0
    out = capsys.readouterr().out
    assert f"paper: {get_method_entry('dra').cls.card.paper}" in out


def test_table_header_explains_the_shot_count():
    import pandas as pd
    from bench.report.tables import to_latex, to_markdown, wide_table
    rows = [dict(dataset="d", subset="s", setting="general", known_class="", method=m,
                 shots=k, mean=0.8, std=0.01, n=3, planned=3)
            for m, k in (("devnet", 10), ("kdad", 0))]
    text, means = wide_table(pd.DataFrame(rows), "general")
    md = to_markdown(text)
    assert "DevNet (10)" in md and "(N) after a method: N labelled anomalies" in md
    assert "N labelled anomalies" in to_latex(text, means, "caption")
    only_unsupervised, _ = wide_table(pd.DataFrame(rows[1:]), "general")
    assert "(N)" not in to_markdown(only_unsupervised)


def test_perf_goes_on_after_a_failing_method(capsys, monkeypatch):
    import bench.perf as perf
    real = perf.measure

    def measure(method, **kw):
        if method == "devnet":
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(method, **kw)

    monkeypatch.setattr(perf, "measure", measure)
    assert main(["perf", "--methods", "devnet,pixelknn", "--img-size", "16", "--steps", "1",
                 "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "devnet    16px: failed: RuntimeError: CUDA out of memory (simulated)" in out
    assert re.search(r"^pixelknn\s+16px batch", out, re.M)


def test_shots_for_a_method_without_labelled_anomalies_is_named(toy_root, tmp_path, capsys):
    assert main(_dry(toy_root, "--setting", "general", "--shots", "1,10", "--seeds", "1",
                     "--results", str(tmp_path / "r"))) == 0
    out, err = capsys.readouterr()
    assert "--shots does not apply to pixelknn" in err and "shots=0" in out
