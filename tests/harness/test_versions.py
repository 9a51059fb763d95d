"""Stale results cannot come back: the decoder version keys the decoded-image cache and
every run id, the shared blocks' version every method built on them, and the file-hash
cache notices a file replaced in place."""
import os

from bench.datasets import images
from bench.datasets.cache import decoded_array
from bench.datasets.layout import read_subset
from bench.plan import SweepConfig, expand
from bench.registry import list_methods, method_class


def test_decoder_version_invalidates_the_cache_and_changes_run_ids(toy_root, tmp_path,
                                                                   monkeypatch):
    idx = read_subset(toy_root, "alpha")
    cache = tmp_path / "c"
    decoded_array(idx.root, idx.all_files, idx.fingerprint, 16, cache)
    cfg = SweepConfig(methods=["pixelknn", "dra"], datasets=[str(toy_root)], setting="general",
                      seeds=1, shots=[1])
    before = {s.run_id for s in expand(cfg).specs}
    monkeypatch.setattr(images, "DECODER_VERSION", images.DECODER_VERSION + "-next")
    decoded_array(idx.root, idx.all_files, idx.fingerprint, 16, cache)
    assert len(list((cache / "decoded").glob("*.npy"))) == 2  # rebuilt, the old one unused
    after = expand(cfg).specs
    assert before.isdisjoint({s.run_id for s in after})
    assert {s.decoder_version for s in after} == {images.DECODER_VERSION}


def test_shared_block_version_changes_every_method_built_on_it(toy_root, monkeypatch):
    from bench.methods import common
    methods = list_methods()
    cfg = SweepConfig(methods=methods, datasets=[str(toy_root)], subsets=["alpha"],
                      setting="general", seeds=1, shots=[1])
    before = {(s.method, s.run_id) for s in expand(cfg).specs}
    monkeypatch.setattr(common, "COMMON_VERSION", common.COMMON_VERSION + "-next")
    after = {(s.method, s.run_id) for s in expand(cfg).specs}
    changed = {m for m, rid in after if (m, rid) not in before}
    users = {m for m in methods if method_class(m).uses_common_blocks}
    assert users >= {"dra", "dra1a", "devnet", "flos", "saoe", "mlep", "deepsad", "minns",
                     "kdad"}
    assert changed == users  # pixelknn uses no shared block: its ids stay


def test_file_replaced_in_place_with_same_size_and_mtime_is_rehashed(toy_root):
    idx = read_subset(toy_root, "alpha")
    a, b = idx.test_good[0], idx.test_good[1]
    old = idx.hashes[a]
    path = toy_root / a
    st = path.stat()
    # what `rsync -a` does: a new file of the same size renamed over the old one, mtime kept
    tmp = path.with_name(".tmp_replacement")
    data = (toy_root / b).read_bytes()
    data = data[:st.st_size].ljust(st.st_size, b"\0")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert read_subset(toy_root, "alpha").hashes[a] != old
