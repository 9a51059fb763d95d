"""`bench perf --full` on the CPU: one complete (small) run through the harness' planning and
job, timed beside the compute floor of the same steps in the same process."""
import csv

from bench.cli import main


def test_perf_full_times_a_run_and_its_floor(tmp_path, capsys):
    out_csv = tmp_path / "full.csv"
    assert main(["perf", "--full", "--methods", "devnet", "--weights", "none", "--device",
                 "cpu", "--precision", "fp32", "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "devnet    64px fp32 10 steps × 16: wall" in out and "fit/floor" in out
    (row,) = list(csv.DictReader(out_csv.open()))
    wall, fit, floor = float(row["wall_s"]), float(row["fit_s"]), float(row["floor_s"])
    assert wall >= fit > 0 and floor > 0
    # the floor does the same steps without the data pipeline; the ratio is what the
    # README's figures report (loose bounds: a shared CPU is noisy)
    assert 0.2 < fit / floor < 50
    assert 0.0 <= float(row["auroc"]) <= 1.0 and row["precision"] == "fp32"


def test_perf_full_goes_on_after_a_failing_method(capsys, monkeypatch):
    import bench.perf as perf
    real = perf.measure_full

    def measure_full(method, **kw):
        if method == "dra":
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(method, **kw)

    monkeypatch.setattr(perf, "measure_full", measure_full)
    assert main(["perf", "--full", "--methods", "dra,pixelknn", "--weights", "none",
                 "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "dra       full run: failed: RuntimeError: CUDA out of memory (simulated)" in out
    # a method without a torch training loop has no floor: shown as "-", not invented
    assert "pixelknn  64px fp32" in out and "floor - s" in out
