"""Each fault a cluster throws at a sweep, and what the harness does about it."""
import errno
import json

import pytest

from .conftest import run_bench


def _args(toy_root, res, methods, *extra, seeds=1):
    """One run per method (per seed) on one toy subset."""
    return ["run", "--methods", methods, "--datasets", str(toy_root), "--subsets", "alpha",
            "--setting", "general", "--shots", "2", "--seeds", str(seeds), "--results",
            str(res), "--weights", "none", "--no-table", *extra]


def _records(res, sweep="main"):
    return {json.loads(p.read_text())["method"]: json.loads(p.read_text())
            for p in (res / sweep).glob("[!.]*/record.json")}


def test_nan_loss_is_recorded_failed_with_its_step_and_retry_failed_reruns_only_it(
        toy_root, tmp_path, bench_env):
    res = tmp_path / "res"
    out = run_bench(_args(toy_root, res, "epnan,epgood"), bench_env, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr  # a failed run: exit status 1
    recs = _records(res)
    nan = recs["epnan"]
    assert nan["status"] == "failed" and nan["failure"]["kind"] == "nan_loss"
    assert nan["failure"]["step"] == 4 and nan["failure"]["steps"] == 4
    assert "non-finite loss at step 4/4" in nan["reason"] and "nan" in nan["reason"]
    assert "failed: epnan" in out.stdout + out.stderr
    good_dir = res / "main" / recs["epgood"]["run_id"]
    good_mtime = (good_dir / "record.json").stat().st_mtime_ns
    nan_mtime = (res / "main" / nan["run_id"] / "record.json").stat().st_mtime_ns
    again = run_bench(_args(toy_root, res, "epnan,epgood"), bench_env, timeout=300)
    assert "1 failed kept (--retry-failed reruns them)" in again.stdout
    assert "0 to run" in again.stdout
    again = run_bench(_args(toy_root, res, "epnan,epgood", "--retry-failed"), bench_env,
                      timeout=300)
    assert "1 to run" in again.stdout and "1 failed" in again.stdout, again.stdout
    assert (good_dir / "record.json").stat().st_mtime_ns == good_mtime  # not redone
    assert (res / "main" / nan["run_id"] / "record.json").stat().st_mtime_ns != nan_mtime


def test_cuda_out_of_memory_is_recorded_with_peak_memory_and_advice(toy_root, tmp_path,
                                                                    bench_env):
    res = tmp_path / "res"
    out = run_bench(_args(toy_root, res, "epoom"), bench_env, timeout=300)
    assert out.returncode == 1
    rec = _records(res)["epoom"]
    assert rec["status"] == "failed" and rec["failure"]["kind"] == "out_of_memory"
    assert rec["failure"]["exception"] == "OutOfMemoryError"
    assert "peak_gpu_mem_mb" in rec["failure"]  # None on the CPU, MiB on a GPU
    assert "--jobs-per-gpu" in rec["failure"]["advice"] and "batch_size" in rec["reason"]
    assert rec["reason"].startswith("out of memory (")


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_unwritable_results_disk_is_an_error_before_any_run(fault, toy_root, tmp_path,
                                                           monkeypatch, capsys):
    import shutil

    from bench import store as store_mod
    from bench.cli import main

    res = tmp_path / "res"
    res.mkdir()
    if fault == "full":
        usage = shutil.disk_usage(res)
        monkeypatch.setattr(store_mod.shutil, "disk_usage",
                            lambda p: usage._replace(free=1024))
    else:
        def refuse(folder):
            raise OSError(errno.EROFS, "Read-only file system", str(folder))
        monkeypatch.setattr(store_mod, "probe_write", refuse)
    code = main(_args(toy_root, res, "pixelknn"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and str(res) in err
    assert ("free" in err) if fault == "full" else ("Read-only file system" in err)
    assert list(res.iterdir()) == []  # nothing written: no sweep folder, no record


def test_corrupt_or_half_written_record_is_warned_about_and_redone(toy_root, tmp_path,
                                                                   bench_env):
    res = tmp_path / "res"
    out = run_bench(_args(toy_root, res, "pixelknn", seeds=2), bench_env, timeout=300)
    assert out.returncode == 0, out.stderr
    recs = sorted((res / "main").glob("[!.]*/record.json"))
    assert len(recs) == 2
    broken, kept = recs
    broken.write_text(broken.read_text()[:40])  # what a crash mid-write of old code leaves
    kept_mtime = kept.stat().st_mtime_ns
    half = res / "main" / f".tmp-{broken.parent.name}-deadbeef"
    half.mkdir()
    (half / "spec.json").write_text("{")
    again = run_bench(_args(toy_root, res, "pixelknn", seeds=2), bench_env,
                      timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"warning: {broken} is unreadable" in again.stderr
    assert "1 to run" in again.stdout and "1 done" in again.stdout
    assert json.loads(broken.read_text())["status"] == "done"
    assert kept.stat().st_mtime_ns == kept_mtime
    assert not half.exists()


def test_ray_worker_killed_mid_run_is_retried_and_the_sweep_completes(toy_root, tmp_path,
                                                                      bench_env):
    pytest.importorskip("ray")
    res = tmp_path / "res"
    marker = tmp_path / "first-attempt"
    out = run_bench(_args(toy_root, res, "epdieonce,epgood", "--executor", "ray",
                          "--set", f"epdieonce.marker={marker}"), bench_env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert marker.exists()  # the first attempt ran and killed its worker
    recs = _records(res)
    assert recs["epdieonce"]["status"] == "done" and recs["epgood"]["status"] == "done"
    log = (res / "main" / "logs" / f"{recs['epdieonce']['run_id']}.log").read_text()
    assert log.count("] fit ") == 2  # killed once, retried once
    assert not list((res / "main" / "claims").iterdir())
