"""The decoded-image cache: every image of a subset decoded and resized once per
(subset fingerprint, image size) into one uint8 array on disk that every method and every
run reads (memory-mapped), instead of decoding files at every training step — the released
code's main cost.

Layout: ``<cache dir>/decoded/<fingerprint>-<size>-d<decoder version>.npy`` (N×S×S×3
uint8, rows in ``paths`` order) and ``.json`` beside it listing the relative paths. Built
under a file lock and renamed into place, so concurrent workers neither corrupt nor
duplicate it. The decoder version (``images.DECODER_VERSION``) in the key means a change of
the decoding rules never reads arrays decoded by the old ones.
"""
from __future__ import annotations

import fcntl
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..util import atomic_write, atomic_write_with
from .base import default_cache_dir
from . import images
from .images import ImageDecodeError, load_image


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a handle: np.save would append ".npy" to a bare name
        np.save(fh, arr)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _key(fingerprint: str, size: int) -> str:
    return f"{fingerprint}-{size}-d{images.DECODER_VERSION}"


def _decode_into(arr: np.ndarray, root: Path, paths: Sequence[str], size: int) -> None:
    """Decode ``paths`` into the rows of ``arr`` (a few threads: PIL decodes without the
    GIL). Every undecodable file is collected, then one error names them all."""
    def one(item: tuple[int, str]) -> str | None:
        i, rel = item
        try:
            arr[i] = load_image(Path(root) / rel, size)
        except ImageDecodeError as exc:
            return str(exc)
        return None

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        bad = [e for e in pool.map(one, enumerate(paths), chunksize=16) if e]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ImageDecodeError(f"{len(bad)} of {len(paths)} images under {root} cannot be "
                               f"decoded: {shown}. Replace or remove the file(s) (`bench data "
                               f"check` lists every problem of a dataset), then rerun")


def is_cached(fingerprint: str, size: int, cache_dir: Path | None = None) -> bool:
    """Whether the decoded array of (``fingerprint``, ``size``) is already built."""
    cache = Path(cache_dir or default_cache_dir()) / "decoded"
    key = _key(fingerprint, size)
    return (cache / f"{key}.npy").is_file() and (cache / f"{key}.json").is_file()


def decoded_array(root: Path, paths: Sequence[str], fingerprint: str, size: int,
                  cache_dir: Path | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Memory-mapped uint8 array of ``paths`` (relative to ``root``) at ``size``, plus the
    row of each path. ``fingerprint`` must identify the content of exactly these files.
    Raises :class:`ImageDecodeError` naming every file that cannot be decoded."""
    cache = Path(cache_dir or default_cache_dir()) / "decoded"
    key = _key(fingerprint, size)
    arr_path, idx_path = cache / f"{key}.npy", cache / f"{key}.json"
    if not is_cached(fingerprint, size, cache_dir):
        with _locked(cache / f"{key}.lock"):
            if not is_cached(fingerprint, size, cache_dir):  # another worker built it
                arr = np.empty((len(paths), size, size, 3), dtype=np.uint8)
                _decode_into(arr, root, paths, size)
                atomic_write(idx_path, json.dumps(list(paths)))
                # the array last: its presence means complete
                atomic_write_with(arr_path, lambda tmp: _save_npy(tmp, arr))
    rows = {p: i for i, p in enumerate(json.loads(idx_path.read_text()))}
    return np.load(arr_path, mmap_mode="r"), rows


def load_images(root: Path, all_paths: Sequence[str], fingerprint: str, size: int,
                wanted: Sequence[str], cache_dir: Path | None = None) -> np.ndarray:
    """uint8 N×size×size×3 array of ``wanted`` (a subset of ``all_paths``), from the cache."""
    arr, rows = decoded_array(root, all_paths, fingerprint, size, cache_dir)
    missing = [p for p in wanted if p not in rows]
    if missing:
        raise KeyError(f"decoded-image cache for {fingerprint} lacks {missing[:3]}; delete "
                       f"{Path(cache_dir or default_cache_dir()) / 'decoded'} and rerun")
    if not wanted:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.ascontiguousarray(arr[[rows[p] for p in wanted]])


def load_outliers(pool, size: int, cache_dir: Path | None = None) -> np.ndarray:
    """uint8 N×size×size×3 array of an :class:`~bench.datasets.outliers.OutlierPool`, in
    ``pool.paths`` order. Cached per category, so the pools of MVTec AD's fifteen targets
    (each without its own category) share fifteen arrays instead of holding fifteen copies."""
    parts = [load_images(pool.root, paths, fp, size, paths, cache_dir)
             for _, paths, fp in pool.groups]
    return np.concatenate(parts) if parts else np.zeros((0, size, size, 3), dtype=np.uint8)
