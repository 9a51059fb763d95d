"""The ``bench data …`` subcommands: prepare, check, info, download.

Each subcommand is a plain function that prints its report and returns an exit code
(0 = fine, 1 = a data problem, 2 = a usage problem), so it can be called from Python and
tested without a shell. :func:`add_data_parser` registers them on the ``bench`` argument
parser; every parsed namespace carries ``func`` to call as ``args.func(args)``.

No dataset of the nine has a download URL with a verified sha256 (datasets.md names none),
so ``bench data download NAME`` says to bring your own copy, unless ``--url`` and
``--sha256`` are given: the generic mechanism then downloads with urllib to a temporary file,
verifies the hash, unpacks the zip or tar archive and prepares the dataset from it.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..util import atomic_write_with
from .base import DatasetNotPrepared, FolderDataset, default_data_root
from .convert import ConversionError, ConvertedDataset, passes_original_filter
from .images import ImageDecodeError, decode_image, is_image_file
from .layout import (LayoutError, SubsetIndex, dataset_fingerprint, find_duplicates,
                     list_subsets, read_subset)

OK, DATA_ERROR, USAGE_ERROR = 0, 1, 2


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _get(name: str):
    """The dataset plugin ``name`` (a registered name, or a folder path for ``check``)."""
    from bench.registry import get_dataset

    return get_dataset(name)


def _data_root(data_root) -> Path:
    return Path(data_root).expanduser() if data_root else default_data_root()


def parse_options(items: Optional[list[str]]) -> dict[str, str]:
    """``["key=value", …]`` from repeated ``--option`` flags into a dict."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConversionError(f"--option {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


# -- prepare -----------------------------------------------------------------------------------
def _print_prepared(ds: ConvertedDataset, result, raw) -> None:
    print(f"prepared {ds.name} at {result.root}")
    print(f"  from {raw}")
    for sub, c in result.counts.items():
        parts = [f"train/good {c['train_good']}"]
        if "test_good" in c:
            parts.append(f"test/good {c['test_good']}")
        parts += [f"test/{k} {v}" for k, v in c.get("anomalies", {}).items()]
        print(f"  {sub}: " + ", ".join(parts))
    changed = {k: v for k, v in result.options.items()
               if v != ds.all_options()[k].default}
    if changed:
        print("  options: " + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    for w in result.warnings:
        print(f"  warning: {w}")
    print(f"  licence: {ds.license}")
    if ds.non_commercial:
        print("  NOTE: these images are under a NON-COMMERCIAL licence; use them for research "
              "only and keep the licence with any copy")
    print(f"next: bench data check {ds.name} --data-root {result.root.parent}")


def prepare_command(name: str, raw: Optional[str] = None, *, data_root=None,
                    force: bool = False, from_package: bool = False,
                    options: Optional[dict] = None) -> int:
    """``bench data prepare NAME --raw PATH``: convert the raw distribution into MVTec layout
    under ``data_root/<dataset folder>``; ``from_package`` takes the raw data from an
    installed pip package (ELPV)."""
    try:
        ds = _get(name)
    except ValueError as exc:
        _err(str(exc))
        return USAGE_ERROR
    if not isinstance(ds, ConvertedDataset) and not ds.has_converter():
        _err(f"dataset {name!r} has no converter (`bench data info {name}`)")
        return USAGE_ERROR
    if bool(raw) == bool(from_package):
        _err("give exactly one of --raw PATH (the official raw distribution) or --from-package")
        return USAGE_ERROR
    root = ds.root(_data_root(data_root))
    try:
        raw_path = ds.raw_from_package() if from_package else Path(raw).expanduser()
        if from_package:
            print(f"using the raw data of the installed {ds.package} package: {raw_path}")
        if ds.non_commercial:
            print(f"licence: {ds.license}")
        result = ds.prepare(raw_path, root, force=force, **(options or {}))
    except (ConversionError, LayoutError) as exc:
        _err(str(exc))
        return DATA_ERROR
    _print_prepared(ds, result, raw_path)
    return OK


# -- check -------------------------------------------------------------------------------------
@dataclass
class CheckReport:
    """Result of checking one prepared dataset."""

    root: Optional[Path] = None
    rows: list[tuple] = field(default_factory=list)   # (subset, count, expected, found, status)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)
    fingerprint: Optional[str] = None
    n_decoded: int = 0
    n_unreadable: int = 0


def _compare(report: CheckReport, sub: str, key: str, expected, found, note: Optional[str]
             ) -> None:
    if expected == found:
        status = "ok"
    elif note:
        status = "warn"
        report.warnings.append(f"{sub} {key}: expected {expected}, found {found} ({note})")
    else:
        status = "MISMATCH"
        report.errors.append(f"{sub} {key}: expected {expected}, found {found}")
    report.rows.append((sub, key, expected, found, status))


def compare_counts(report: CheckReport, ds, sub: str, idx: SubsetIndex) -> None:
    """Add the expected-vs-found rows of one subset (paper Table 5 / datasets.md §1)."""
    exp = ds.expected_counts.get(sub)
    if not exp:
        return
    notes = getattr(ds, "count_notes", {}).get(sub, {})
    found_cls = {c: len(v) for c, v in idx.anomalies.items()}
    for key in ("train_good", "test_good"):
        if key in exp:
            _compare(report, sub, key, exp[key], len(getattr(idx, key)), notes.get(key))
    an = exp.get("anomalies")
    if isinstance(an, dict):
        for c, n in an.items():
            _compare(report, sub, f"anomalies {c}", n, found_cls.get(c, 0), notes.get("anomalies"))
        an = sum(an.values())
    if an is not None:
        _compare(report, sub, "anomalies", an, sum(found_cls.values()), notes.get("anomalies"))
    for c, n in exp.get("per_class", {}).items():
        _compare(report, sub, f"anomalies {c}", n, found_cls.get(c, 0),
                 notes.get("per_class", notes.get("anomalies")))
    if "classes" in exp:
        _compare(report, sub, "classes", exp["classes"], len(found_cls), notes.get("classes"))


def _decode_all(root: Path, files: list[str]) -> list[str]:
    """Decode every file fully; the errors, each naming its file."""
    def one(rel: str) -> Optional[str]:
        try:
            decode_image(root / rel)
        except ImageDecodeError as exc:
            return str(exc)
        return None

    workers = max(1, min(4, os.cpu_count() or 1))  # PIL decodes without the GIL
    with ThreadPoolExecutor(workers) as pool:
        return [e for e in pool.map(one, files, chunksize=16) if e]


def _decode_into(report: CheckReport, root: Path, files: list[str]) -> None:
    bad = _decode_all(root, files)
    report.errors += bad
    report.n_decoded += len(files)
    report.n_unreadable += len(bad)


def _duplicates(report: CheckReport, idx: SubsetIndex) -> None:
    train, test_good = set(idx.train_good), set(idx.test_good)
    anomalies = {p for files in idx.anomalies.values() for p in files}
    twin_groups = [[p for p in paths if p in anomalies]
                   for paths in find_duplicates(idx).values()]
    twin_groups = [g for g in twin_groups if len(g) > 1]
    if twin_groups:
        n_files = sum(len(g) for g in twin_groups)
        distinct = len(anomalies) - n_files + len(twin_groups)
        report.rows.append((idx.subset, "anomaly twins", "-", n_files, "note"))
        report.info.append(f"{idx.subset}: {n_files} anomaly files are content twins "
                           f"({len(twin_groups)} images filed more than once; {distinct} "
                           f"distinct of {len(anomalies)} anomaly files). Each split removes "
                           f"the twins of its reserved labelled anomalies (hard setting: of "
                           f"every known-class file) from its test set and lists them in "
                           f"split.json (test_twins_removed)")
    for paths in find_duplicates(idx).values():
        paths = sorted(paths)
        listed = ", ".join(paths)
        in_train = [p for p in paths if p in train]
        in_good = [p for p in paths if p in test_good]
        in_anom = [p for p in paths if p not in train and p not in test_good]
        if in_train and (in_good or in_anom):
            report.errors.append(f"identical content in train and test (leak): {listed}")
        elif in_good and in_anom:
            report.errors.append(f"identical content labelled normal and anomalous: {listed}")
        elif in_anom:
            report.warnings.append(f"duplicate anomalies (same content; a copy drawn for "
                                   f"training must not stay in test): {listed}")
        else:
            report.warnings.append(f"duplicate normal images: {listed}")


def _check_subset(report: CheckReport, ds, root: Path, sub: str) -> Optional[SubsetIndex]:
    try:
        idx = read_subset(root, sub)
    except LayoutError as exc:
        report.errors.append(str(exc))
        return None
    compare_counts(report, ds, sub, idx)
    want = getattr(ds, "anomaly_classes", {}).get(sub)
    if want and sorted(want) != idx.classes:
        extra = sorted(set(idx.classes) - set(want))
        missing = sorted(set(want) - set(idx.classes))
        report.warnings.append(f"{sub}: anomaly class folders differ from the expected ones: "
                               f"unexpected {', '.join(extra) or 'none'}; missing "
                               f"{', '.join(missing) or 'none'}")
    for known in ds.hard_known_classes.get(sub, []):
        if not idx.anomalies.get(known):
            report.errors.append(f"{sub}: hard-setting known class {known!r} (paper Table 2) "
                                 f"has no images under {root / sub / 'test' / known}")
    files = idx.all_files
    _decode_into(report, root, files)
    dropped = [f for f in files if not passes_original_filter(f)]
    if dropped:
        report.info.append(f"{sub}: {len(dropped)} file(s) would be ignored by the released "
                           f"loader's 3-character suffix filter (png/PNG/jpg/npy), e.g. "
                           f"{dropped[0]}")
    _duplicates(report, idx)
    report.fingerprints[sub] = idx.fingerprint
    return idx


def _check_outlier_source(report: CheckReport, ds, root: Path, subsets: list[str]) -> list:
    indexes = []
    for sub in subsets:
        good = root / sub / "train" / "good"
        if not good.is_dir():
            report.errors.append(f"missing outlier folder {good} (an outlier source is laid "
                                 f"out as <root>/<X>/train/good/)")
            continue
        files = sorted(f"{sub}/train/good/{p.name}" for p in good.iterdir()
                       if p.is_file() and is_image_file(p))
        if not files:
            report.errors.append(f"outlier folder {good} holds no images")
            continue
        idx = SubsetIndex(root, sub, files, [], {})
        report.rows.append((sub, "outlier images", "-", len(files), "ok"))
        _decode_into(report, root, files)
        _duplicates(report, idx)
        report.fingerprints[sub] = idx.fingerprint
        indexes.append(idx)
    return indexes


def check_dataset(ds, data_root) -> CheckReport:
    """Check a prepared dataset: layout of each subset, counts against the expected ones,
    every image decodes, no identical content across train and test; with fingerprints."""
    report = CheckReport()
    data_root = _data_root(data_root)
    try:
        root = ds.locate(data_root)
    except DatasetNotPrepared as exc:
        report.errors.append(str(exc))
        return report
    report.root = root
    converted = isinstance(ds, ConvertedDataset)
    if converted and ds.outlier_source:
        indexes = _check_outlier_source(report, ds, root, ds.expected_subsets(data_root))
    else:
        try:
            found = list_subsets(root)
        except LayoutError as exc:
            report.errors.append(str(exc))
            return report
        found = ds.only_subsets or found
        expected = ds.expected_subsets(data_root) if converted else list(found)
        missing = [s for s in expected if s not in found]
        if missing:
            report.errors.append(f"subset folder(s) missing under {root}: {', '.join(missing)} "
                                 f"(present: {', '.join(found)}); prepare again with --force")
        extra = [s for s in found if s not in expected]
        if extra:
            report.warnings.append(f"unexpected subset folder(s) under {root}: "
                                   f"{', '.join(extra)}")
        if converted and sorted(expected) != sorted(ds.subsets):
            report.warnings.append(f"only a selection of the subsets is prepared: "
                                   f"{', '.join(expected)}")
        indexes = [i for s in found if (i := _check_subset(report, ds, root, s)) is not None]
    if indexes:
        report.fingerprint = dataset_fingerprint(indexes)
    return report


def _print_table(rows: list[tuple]) -> None:
    head = ("subset", "count", "expected", "found", "status")
    table = [head] + [tuple(str(x) for x in r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for r in table:
        print("  " + "  ".join(c.ljust(w) if i < 2 or i == 4 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())


def check_command(name: str, *, data_root=None) -> int:
    """``bench data check NAME``: print the check report; exit 1 on any error."""
    from bench.registry import list_datasets

    try:
        # A registered name wins; an unregistered existing folder is checked as MVTec layout.
        if name not in list_datasets() and Path(name).expanduser().is_dir():
            ds = FolderDataset(name)
        else:
            ds = _get(name)
    except (ValueError, FileNotFoundError) as exc:
        _err(str(exc))
        return USAGE_ERROR
    report = check_dataset(ds, data_root)
    print(f"check {ds.name}" + (f" at {report.root}" if report.root else ""))
    if report.rows:
        _print_table(report.rows)
    if report.n_decoded:
        print(f"  decoded {report.n_decoded} images: "
              + (f"{report.n_unreadable} unreadable (listed below)" if report.n_unreadable
                 else "all readable"))
    for line in report.info:
        print(f"  info: {line}")
    for w in report.warnings:
        print(f"  warning: {w}")
    for e in report.errors:
        print(f"  ERROR: {e}")
    for sub, fp in report.fingerprints.items():
        print(f"  fingerprint {sub}: {fp}")
    if report.fingerprint:
        print(f"  fingerprint (files-hash): {report.fingerprint}")
    verdict = "FAILED" if report.errors else "OK"
    print(f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return DATA_ERROR if report.errors else OK


# -- info --------------------------------------------------------------------------------------
def info_command(name: str) -> int:
    """``bench data info NAME``: source, licence, expected raw layout, counts."""
    from bench.registry import get_dataset

    try:
        ds = get_dataset(name, folders_ok=False)  # info describes registered datasets only
    except ValueError as exc:
        _err(str(exc))
        return USAGE_ERROR
    print(ds.info())
    return OK


# -- download ----------------------------------------------------------------------------------
def fetch(url: str, dest_dir: Path, sha256: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``dest_dir`` through a temporary file and verify its sha256."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(url).path).name or "download"

    def download(part: Path) -> None:  # renamed into place only when its sha256 matches
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as f:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    h.update(chunk)
                    f.write(chunk)
        except (OSError, ValueError) as exc:
            raise ConversionError(f"download of {url} failed: {exc}") from exc
        if h.hexdigest() != sha256.lower():
            raise ConversionError(f"sha256 of {url} is {h.hexdigest()}, expected {sha256}; "
                                  f"the file is corrupt or not the expected release — nothing "
                                  f"was prepared")

    return atomic_write_with(dest_dir / name, download)


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack a zip or tar archive into ``dest`` (refusing paths that escape it); returns
    the data folder (the single top-level folder if the archive wraps everything in one)."""
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                target = (base / member).resolve()
                if target != base and base not in target.parents:
                    raise ConversionError(f"{archive}: member {member!r} would be written "
                                          f"outside {dest}; refusing to unpack")
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            if hasattr(tarfile, "data_filter"):
                t.extractall(dest, filter="data")  # rejects absolute paths, links out, devices
            else:  # pragma: no cover - Python without extraction filters
                for m in t.getmembers():
                    target = (base / m.name).resolve()
                    if (target != base and base not in target.parents) or m.issym() or m.islnk():
                        raise ConversionError(f"{archive}: unsafe member {m.name!r}")
                t.extractall(dest)
    else:
        raise ConversionError(f"{archive} is neither a zip nor a tar archive")
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")
               and p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def download_command(name: str, *, data_root=None, url: Optional[str] = None,
                     sha256: Optional[str] = None, force: bool = False,
                     options: Optional[dict] = None) -> int:
    """``bench data download NAME``: download a verified archive and prepare it. Only where
    a URL and sha256 are known (none of the nine datasets so far) or given with ``--url`` and
    ``--sha256``."""
    try:
        ds = _get(name)
    except ValueError as exc:
        _err(str(exc))
        return USAGE_ERROR
    url = url or getattr(ds, "download_url", None)
    sha256 = sha256 or (getattr(ds, "download_sha256", None)
                        if url == getattr(ds, "download_url", None) else None)
    if not url:
        note = getattr(ds, "download_note", "no verified download is known")
        print(f"{ds.name}: {note}.")
        print(f"  bring your own copy and verify it: get it from {ds.source}, then run "
              f"`bench data prepare {ds.name} --raw PATH` and `bench data check {ds.name}`")
        if getattr(ds, "package", None):
            print(f"  or: `bench data prepare {ds.name} --from-package` (pip package "
                  f"{ds.package})")
        print(f"  `bench data info {ds.name}` shows the expected raw layout")
        return DATA_ERROR
    if not sha256:
        _err(f"no sha256 is known for {url}; pass --sha256 HEX so the download can be verified")
        return USAGE_ERROR
    root_dir = _data_root(data_root)
    work = root_dir / ".downloads" / f"{ds.name}.{os.getpid()}"
    try:
        print(f"downloading {url}")
        archive = fetch(url, work, sha256)
        print(f"  sha256 verified: {sha256.lower()}")
        raw = unpack(archive, work / "unpacked")
        if ds.non_commercial:
            print(f"licence: {ds.license}")
        result = ds.prepare(raw, ds.root(root_dir), force=force, raw_note=url,
                            **(options or {}))
    except (ConversionError, LayoutError) as exc:
        _err(str(exc))
        return DATA_ERROR
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            work.parent.rmdir()  # .downloads/, if nothing else is in it
        except OSError:
            pass
    _print_prepared(ds, result, url)
    return OK


# -- argparse hook -----------------------------------------------------------------------------
def _prepare_args(args) -> int:
    try:
        options = parse_options(args.option)
    except ConversionError as exc:
        _err(str(exc))
        return USAGE_ERROR
    return prepare_command(args.name, args.raw, data_root=args.data_root, force=args.force,
                           from_package=args.from_package, options=options)


def _check_args(args) -> int:
    return check_command(args.name, data_root=args.data_root)


def _info_args(args) -> int:
    return info_command(args.name)


def _download_args(args) -> int:
    try:
        options = parse_options(args.option)
    except ConversionError as exc:
        _err(str(exc))
        return USAGE_ERROR
    return download_command(args.name, data_root=args.data_root, url=args.url,
                            sha256=args.sha256, force=args.force, options=options)


def add_data_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``data`` and its subcommands on ``subparsers`` (the object returned by
    ``parser.add_subparsers()``). Every leaf sets ``func``: call ``args.func(args)`` and use
    its return value as the exit code."""
    data = subparsers.add_parser(
        "data", help="prepare, check, describe and download datasets",
        description="Prepare the paper's datasets from their official raw distributions into "
                    "MVTec AD layout, check prepared copies, show what each dataset needs.")
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    root_help = "data root folder (default: $BENCH_DATA_ROOT or ./data)"
    opt_help = ("converter option KEY=VALUE, recorded in .prepared (repeatable; "
                "`bench data info NAME` lists them) (default: the converter's defaults)")

    p = sub.add_parser("prepare", help="convert the official raw data into MVTec layout",
                       description="Convert the raw distribution at --raw (or the pip package's "
                                   "copy with --from-package) into <data-root>/<dataset>/. "
                                   "Atomic; never replaces a prepared copy without --force.")
    p.add_argument("name", help="dataset name (`bench list datasets`)")
    p.add_argument("--raw", metavar="PATH", help="folder of the official raw distribution "
                                                  "(no default: give --raw or --from-package)")
    p.add_argument("--data-root", metavar="DIR", help=root_help)
    p.add_argument("--force", action="store_true", help="replace an existing prepared copy")
    p.add_argument("--from-package", action="store_true",
                   help="take the raw data from an installed pip package (elpv: elpv-dataset)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help=opt_help)
    p.set_defaults(func=_prepare_args)

    p = sub.add_parser("check", help="verify a prepared dataset: layout, counts, decoding, "
                                     "duplicates, fingerprint")
    p.add_argument("name", help="dataset name, or the path of an MVTec-layout folder")
    p.add_argument("--data-root", metavar="DIR", help=root_help)
    p.set_defaults(func=_check_args)

    p = sub.add_parser("info", help="source, licence, expected raw layout and counts")
    p.add_argument("name", help="dataset name")
    p.set_defaults(func=_info_args)

    p = sub.add_parser("download", help="download a verified archive and prepare it (only "
                                        "where a URL and sha256 are known)")
    p.add_argument("name", help="dataset name")
    p.add_argument("--data-root", metavar="DIR", help=root_help)
    p.add_argument("--url", help="archive URL (zip or tar) to use instead of a known one "
                                    "(default: the dataset's known URL, if any)")
    p.add_argument("--sha256", help="expected sha256 of the archive (required with --url; "
                                       "default: the known URL's hash)")
    p.add_argument("--force", action="store_true", help="replace an existing prepared copy")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help=opt_help)
    p.set_defaults(func=_download_args)
    return data
