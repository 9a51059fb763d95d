"""ELPV converter: tiny fake labels.csv + images, and the real data of the elpv-dataset
package (split must reproduce the released convert_elpv.py: 1,131 / 377 / 313 / 402)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.commands import check_command, prepare_command
from bench.datasets.convert import ConversionError
from bench.datasets.layout import dataset_fingerprint, read_subset
from bench.registry import get_dataset

ROWS = [("cell0001", "1.0", "mono"), ("cell0002", "0.0", "mono"), ("cell0003", "0.0", "poly"),
        ("cell0004", "0.3333333333333333", "poly"), ("cell0005", "0.6666666666666666", "mono"),
        ("cell0006", "0.0", "poly"), ("cell0007", "1.0", "poly"), ("cell0008", "0.0", "mono"),
        ("cell0009", "0.0", "poly"), ("cell0010", "0.0", "mono"), ("cell0011", "1.0", "poly")]


def make_raw(root: Path, rows=ROWS) -> Path:
    (root / "images").mkdir(parents=True)
    lines = []
    for i, (name, p, kind) in enumerate(rows):
        Image.fromarray(np.full((8, 8), 10 + i * 7, np.uint8)).save(root / "images" / f"{name}.png")
        lines.append(f"images/{name}.png  {p:<20} {kind}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_convert_tiny(tmp_path):
    from sklearn.model_selection import train_test_split

    raw = make_raw(tmp_path / "raw")
    ds = get_dataset("elpv")
    res = ds.prepare(raw, tmp_path / "a" / "elpv")
    idx = read_subset(tmp_path / "a" / "elpv", "elpv")
    normal = [n for n, p, _ in ROWS if p == "0.0"]           # label-file order
    train, test = train_test_split(normal, test_size=0.25, random_state=42)
    assert sorted(Path(f).stem for f in idx.train_good) == sorted(train)
    assert sorted(Path(f).stem for f in idx.test_good) == sorted(test)
    assert [Path(f).name for f in idx.anomalies["mono"]] == ["cell0001.png"]
    assert [Path(f).name for f in idx.anomalies["poly"]] == ["cell0007.png", "cell0011.png"]
    assert res.counts == {"elpv": {"train_good": 4, "test_good": 2,
                                   "anomalies": {"mono": 1, "poly": 2}}}
    assert (tmp_path / "a" / "elpv" / ".prepared").is_file()
    # determinism: a second conversion gives byte-identical files and the same fingerprint
    ds.prepare(raw, tmp_path / "b" / "elpv")
    fa = dataset_fingerprint([idx])
    fb = dataset_fingerprint([read_subset(tmp_path / "b" / "elpv", "elpv")])
    assert fa == fb
    for f in (tmp_path / "a" / "elpv").rglob("*"):
        if f.is_file() and f.name != ".bench_hashes.json":
            assert f.read_bytes() == (tmp_path / "b" / "elpv" / f.relative_to(
                tmp_path / "a" / "elpv")).read_bytes()


def test_refuses_overwrite_and_force(tmp_path):
    raw = make_raw(tmp_path / "raw")
    ds = get_dataset("elpv")
    out = tmp_path / "d" / "elpv"
    ds.prepare(raw, out)
    with pytest.raises(ConversionError, match="already prepared.*--force"):
        ds.prepare(raw, out)
    ds.prepare(raw, out, force=True)
    assert (out / ".prepared").is_file()
    assert not list(out.parent.glob(".elpv.*"))  # no temporary folders left


@pytest.mark.parametrize("bad, match", [
    (("cell0003", "0.5", "poly"), r"labels.csv:3: unknown defect probability 0.5"),
    (("cell0003", "0.0", "cigs"), r"labels.csv:3: unknown module type 'cigs'"),
])
def test_bad_labels(tmp_path, bad, match):
    rows = list(ROWS)
    rows[2] = bad
    raw = make_raw(tmp_path / "raw", rows)
    out = tmp_path / "d" / "elpv"
    with pytest.raises(ConversionError, match=match):
        get_dataset("elpv").prepare(raw, out)
    assert not out.exists() and not list(out.parent.glob(".elpv*"))  # nothing half-done


def test_missing_image(tmp_path):
    raw = make_raw(tmp_path / "raw")
    (raw / "images" / "cell0006.png").unlink()
    with pytest.raises(ConversionError, match=r"cell0006.png"):
        get_dataset("elpv").prepare(raw, tmp_path / "d" / "elpv")


def test_from_package_missing(monkeypatch):
    import importlib.resources as res

    def boom(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(res, "files", boom)
    with pytest.raises(ConversionError, match=r"pip install 'osad-bench\[elpv\]'"):
        get_dataset("elpv").raw_from_package()


@pytest.mark.skipif(importlib.util.find_spec("elpv_dataset") is None,
                    reason="elpv-dataset package not installed")
def test_real_elpv_from_package(tmp_path, capsys):
    assert prepare_command("elpv", from_package=True, data_root=tmp_path) == 0
    out = capsys.readouterr().out
    assert "CC BY-NC-SA 4.0" in out and "NON-COMMERCIAL" in out
    root = tmp_path / "elpv"
    idx = read_subset(root, "elpv")
    assert (len(idx.train_good), len(idx.test_good)) == (1131, 377)
    assert {c: len(v) for c, v in idx.anomalies.items()} == {"mono": 313, "poly": 402}
    types = {}
    for line in (get_dataset("elpv").raw_from_package() / "labels.csv").read_text().splitlines():
        path, _, kind = line.split()
        types[Path(path).name] = kind
    train_mono = sum(types[Path(f).name] == "mono" for f in idx.train_good)
    test_mono = sum(types[Path(f).name] == "mono" for f in idx.test_good)
    assert (train_mono, 1131 - train_mono, test_mono, 377 - test_mono) == (454, 677, 134, 243)

    assert check_command("elpv", data_root=tmp_path) == 0
    out = capsys.readouterr().out
    for key, n in (("train_good", 1131), ("test_good", 377), ("anomalies mono", 313),
                   ("anomalies poly", 402)):
        assert any(key in line and f" {n} " in line and line.rstrip().endswith("ok")
                   for line in out.splitlines()), (key, out)
    assert "decoded 2223 images: all readable" in out
    assert "fingerprint (files-hash): 2223-" in out
    assert out.rstrip().endswith("OK: 0 error(s), 0 warning(s)")


def test_split_matches_sklearn():
    from sklearn.model_selection import train_test_split

    from bench.datasets.convert import seeded_split_indices

    for n in (2, 3, 7, 98, 100, 1143, 1508):
        tr, te = train_test_split(list(range(n)), test_size=0.25, random_state=42)
        assert seeded_split_indices(n) == (tr, te), n
