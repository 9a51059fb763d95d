"""`bench data prepare|check|info|download`: exit codes, reports, atomicity, and the
generic download mechanism against a local http.server (no internet)."""
from __future__ import annotations

import argparse
import hashlib
import http.server
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bench
from bench.datasets.commands import (CheckReport, add_data_parser, check_command, compare_counts,
                                     download_command, info_command, unpack)
from bench.datasets.convert import ConversionError
from bench.datasets.layout import SubsetIndex, read_subset
from bench.registry import get_dataset

NINE = ["mvtec_ad", "aitex", "sdd", "elpv", "optical", "mastcam", "brainmri", "headct",
        "hyper_kvasir"]


def headct_raw(root: Path, n: int = 9) -> Path:
    img = root / "head_ct" / "head_ct"
    img.mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((6, 6), 10 + 20 * i, np.uint8)).save(img / f"{i:03d}.png")
        rows.append(f"{i},{int(i % 3 == 0)}")
    (root / "labels.csv").write_text("id, hemorrhage\n" + "\n".join(rows) + "\n")
    return root


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_every_dataset_is_listed():
    names = bench.list_datasets()
    assert set(NINE + ["lag"]) <= set(names)


@pytest.mark.parametrize("name", NINE + ["lag"])
def test_info(name, capsys):
    assert info_command(name) == 0
    out = capsys.readouterr().out
    assert "licence:" in out and f"bench data prepare {name} --raw PATH" in out
    assert "download: none" in out and "bring your own copy" in out
    ds = get_dataset(name)
    if ds.non_commercial:
        assert "NON-COMMERCIAL" in out
    if name == "elpv":
        assert "--from-package" in out and "CC BY-NC-SA 4.0" in out


def test_download_without_known_url(tmp_path, capsys):
    assert download_command("aitex", data_root=tmp_path) == 1
    out = capsys.readouterr().out
    assert "bring your own copy and verify" in out and "bench data info aitex" in out


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_local_archive(tmp_path, http_dir, capsys):
    served, base = http_dir
    raw = headct_raw(tmp_path / "raw" / "headct-archive")
    with zipfile.ZipFile(served / "headct.zip", "w") as z:
        for f in sorted(raw.rglob("*")):
            z.write(f, f.relative_to(tmp_path / "raw").as_posix())
    sha = hashlib.sha256((served / "headct.zip").read_bytes()).hexdigest()
    data = tmp_path / "data"
    # wrong hash: nothing prepared, nothing left behind
    assert download_command("headct", data_root=data, url=f"{base}/headct.zip",
                            sha256="0" * 64) == 1
    assert "sha256" in capsys.readouterr().err
    assert not (data / "headct").exists() and not (data / ".downloads").exists()
    # --url without --sha256 is refused
    assert download_command("headct", data_root=data, url=f"{base}/headct.zip") == 2
    assert download_command("headct", data_root=data, url=f"{base}/headct.zip", sha256=sha) == 0
    assert "sha256 verified" in capsys.readouterr().out
    idx = read_subset(data / "headct", "headct")
    assert (len(idx.train_good), len(idx.test_good), len(idx.anomalies["defect"])) == (4, 2, 3)
    assert not (data / ".downloads").exists()
    assert f'"raw": "{base}/headct.zip"' in (data / "headct" / ".prepared").read_text()


def test_unpack_refuses_escaping_paths(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.txt", "x")
    with pytest.raises(ConversionError, match="outside"):
        unpack(bad, tmp_path / "x")
    assert not (tmp_path / "evil.txt").exists()


def test_cli_prepare_check_force(tmp_path, capsys):
    raw = headct_raw(tmp_path / "raw")
    data = str(tmp_path / "data")
    assert cli(["data", "prepare", "headct", "--raw", str(raw), "--data-root", data]) == 0
    out = capsys.readouterr().out
    assert "prepared headct" in out and "train/good 4, test/good 2, test/defect 3" in out
    # a tiny fake cannot match Table 5: check fails with a clear table and still fingerprints
    assert cli(["data", "check", "headct", "--data-root", data]) == 1
    out = capsys.readouterr().out
    assert "headct  train_good" in out and "MISMATCH" in out
    assert "ERROR: headct train_good: expected 75, found 4" in out
    assert "decoded 9 images: all readable" in out and "fingerprint (files-hash): 9-" in out
    # never overwrite without --force
    assert cli(["data", "prepare", "headct", "--raw", str(raw), "--data-root", data]) == 1
    assert "already prepared" in capsys.readouterr().err
    assert cli(["data", "prepare", "headct", "--raw", str(raw), "--data-root", data,
                "--force"]) == 0
    # usage errors
    assert cli(["data", "prepare", "headct", "--data-root", data]) == 2
    assert cli(["data", "prepare", "headct", "--raw", str(raw), "--option", "nokey"]) == 2
    assert cli(["data", "prepare", "nosuch", "--raw", str(raw)]) == 2
    assert cli(["data", "info", "sdd"]) == 0


def test_check_finds_unreadable_and_duplicates(tmp_path, capsys):
    raw = headct_raw(tmp_path / "raw")
    ds = get_dataset("headct")
    ds.prepare(raw, ds.root(tmp_path))
    sub = tmp_path / "headct" / "headct"
    train = sorted((sub / "train" / "good").iterdir())
    (sub / "test" / "defect" / "leak.png").write_bytes(train[0].read_bytes())
    defect = sorted((sub / "test" / "defect").iterdir())
    (sub / "test" / "defect" / "copy.png").write_bytes(defect[0].read_bytes())
    train[1].write_bytes(b"not a png")
    assert check_command("headct", data_root=tmp_path) == 1
    out = capsys.readouterr().out
    assert f"{train[1]}: cannot decode image" in out
    assert "identical content in train and test (leak)" in out and "leak.png" in out
    assert "warning: duplicate anomalies" in out and "copy.png" in out
    # the twins are counted: 2 anomaly files, 1 image filed twice
    assert "anomaly twins" in out and "2 anomaly files are content twins" in out


def test_sdd_train_count_is_a_warning():
    ds = get_dataset("sdd")
    idx = SubsetIndex(Path("."), "SDD", [f"t{i}" for i in range(857)],
                      [f"g{i}" for i in range(286)], {"defect": [f"d{i}" for i in range(54)]})
    rep = CheckReport()
    compare_counts(rep, ds, "SDD", idx)
    assert rep.errors == []
    assert len(rep.warnings) == 1 and "expected 594, found 857" in rep.warnings[0]
    assert ("SDD", "train_good", 594, 857, "warn") in rep.rows


def test_interrupted_conversion_leaves_nothing_prepared(tmp_path, monkeypatch):
    raw = headct_raw(tmp_path / "raw")
    ds = get_dataset("headct")
    out = ds.root(tmp_path / "data")
    real = type(ds).convert

    def crash(self, raw, out_dir, opts, conv):
        real(self, raw, out_dir, opts, conv)  # everything written …
        raise KeyboardInterrupt               # … but interrupted before the marker

    monkeypatch.setattr(type(ds), "convert", crash)
    with pytest.raises(KeyboardInterrupt):
        ds.prepare(raw, out)
    assert not out.exists() and not ds.is_prepared(tmp_path / "data")
    assert not list(out.parent.glob(".headct*"))
    monkeypatch.undo()
    # a partial folder left by a killed process (dead pid) is cleaned up on the next run
    stale = out.parent / ".headct.partial-999999999"
    (stale / "headct").mkdir(parents=True)
    ds.prepare(raw, out)
    assert not stale.exists() and ds.is_prepared(tmp_path / "data")


def test_check_not_prepared_and_folder(tmp_path, capsys):
    assert check_command("sdd", data_root=tmp_path) == 1
    assert "bench data prepare sdd" in capsys.readouterr().out
    raw = headct_raw(tmp_path / "raw")
    ds = get_dataset("headct")
    ds.prepare(raw, tmp_path / "mine")
    assert check_command(str(tmp_path / "mine" / "headct")) == 0  # any MVTec-layout folder
    assert "OK: 0 error(s)" in capsys.readouterr().out
