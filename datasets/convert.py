"""Shared machinery of the dataset converters (``bench data prepare``).

A converter turns an official raw distribution into MVTec AD layout (``layout.py``). This
module gives every converter the same guarantees:

* **atomic**: conversion writes into a temporary sibling folder ``.<name>.partial-<pid>``;
  the ``.prepared`` marker (a small JSON: converter version, options, counts, warnings) is
  written last and the folder is then renamed into place, so an interrupted conversion never
  leaves anything that later looks prepared;
* **no silent overwrite**: an existing prepared (or non-empty) folder is only replaced with
  ``force=True`` (``--force``);
* **deterministic**: inputs are sorted, the 75/25 normal split is seeded (seed 42), PNGs are
  written by PIL without timestamps, files are copied byte for byte; the same raw input gives
  byte-identical output and the same fingerprint;
* **provenance**: ``manifest.json`` beside the subsets maps every output file to its raw
  source (and tile index where images are cut).

The 75/25 split is scikit-learn's ``train_test_split(items, test_size=0.25,
random_state=42)`` — the call of the released convert scripts — applied to the *sorted* list
of normal images. The released scripts apply it to ``os.listdir`` order, so their exact split
depends on the file system and is not reproduced byte for byte; ELPV (and HeadCT), whose
order comes from a label file, pass ``keep_order=True`` and reproduce the released split
exactly (datasets.md §1.4).

This file holds no data; the licence of each dataset is stated in its plugin module.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Optional, Sequence

import numpy as np

from ..util import pid_alive, replace_dir
from .base import Dataset
from .images import is_image_file
from .layout import LayoutError, list_subsets, read_subset

CONVERT_SEED = 42
TEST_SIZE = 0.25
MARKER = ".prepared"
MANIFEST = "manifest.json"
# The released DRA loader keeps a file only if its last three characters are one of these
# (datasets.md §0); used to report (and optionally replicate) what it would have dropped.
ORIGINAL_FILTER_SUFFIXES = ("png", "PNG", "jpg", "npy")


class ConversionError(ValueError):
    """The raw input cannot be converted; the message names the file or folder and the fix."""


def passes_original_filter(name: str) -> bool:
    """Whether the released loader's 3-character suffix filter keeps ``name``."""
    return name[-3:] in ORIGINAL_FILTER_SUFFIXES


# -- options -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """A converter option (``--option KEY=VALUE``); recorded in ``.prepared``."""

    default: Any
    help: str
    kind: str = "bool"   # bool | str | list (comma-separated)


def _parse_option(name: str, opt: Option, value: Any) -> Any:
    if opt.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConversionError(f"option {name}={value!r}: expected true or false")
    if opt.kind == "list":
        if isinstance(value, (list, tuple)):
            return sorted(str(v) for v in value)
        return sorted(v.strip() for v in str(value).split(",") if v.strip())
    return str(value)


# -- what one conversion writes ----------------------------------------------------------------
class Conversion:
    """Collects the files written under ``out`` (with their sources), warnings and the split
    description of one converter run."""

    def __init__(self, raw: Path, out: Path, *, link: bool = False):
        self.raw = Path(raw)
        self.out = Path(out)
        self.link = link
        self.sources: dict[str, str] = {}
        self.warnings: list[str] = []
        self.notes: dict[str, Any] = {}

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def source_name(self, src: Path) -> str:
        try:
            return Path(src).relative_to(self.raw).as_posix()
        except ValueError:
            return str(src)

    def _target(self, rel: str, source: str) -> Path:
        if rel in self.sources:
            # Two inputs mapping to one output would silently shrink the dataset (the
            # released Optical script's naming bug, datasets.md §1.5); refuse instead.
            raise ConversionError(f"two raw files map to the same output {rel}: "
                                  f"{self.sources[rel]} and {source}; rename one of them")
        self.sources[rel] = source
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        return dst

    def copy(self, src: Path, rel: str) -> None:
        """Copy ``src`` byte for byte to ``out/rel`` (hard link with the ``link`` option)."""
        dst = self._target(rel, self.source_name(src))
        if self.link:
            try:
                os.link(src, dst)
                return
            except OSError:
                pass  # another file system: fall back to a copy
        shutil.copyfile(src, dst)

    def write_png(self, array: np.ndarray, rel: str, source: str) -> None:
        """Write a uint8 H×W or H×W×3 array as PNG (PIL writes no timestamps: deterministic)."""
        from PIL import Image

        dst = self._target(rel, source)
        Image.fromarray(np.ascontiguousarray(array)).save(dst, format="PNG")

    def mkdir(self, rel: str) -> None:
        (self.out / rel).mkdir(parents=True, exist_ok=True)


# -- helpers shared by converters --------------------------------------------------------------
def seeded_split_indices(n: int, *, seed: int = CONVERT_SEED, test_size: float = TEST_SIZE
                         ) -> tuple[list[int], list[int]]:
    """(train, test) indices exactly as scikit-learn's ``train_test_split(range(n),
    test_size=test_size, random_state=seed)``: ShuffleSplit takes
    ``RandomState(seed).permutation(n)``, the first ceil(test_size·n) for test and the rest
    for train. Re-implemented with numpy so preparing does not import scikit-learn (seconds);
    a test checks the equality."""
    n_test = math.ceil(test_size * n)
    perm = np.random.RandomState(seed).permutation(n)
    return [int(i) for i in perm[n_test:]], [int(i) for i in perm[:n_test]]


def split_normals(items: Sequence, *, keep_order: bool = False, key: Optional[Callable] = None,
                  seed: int = CONVERT_SEED, test_size: float = TEST_SIZE,
                  what: str = "normal images") -> tuple[list, list]:
    """75/25 split of normal items: scikit-learn ``train_test_split(test_size=0.25,
    random_state=42)`` over the sorted items (``keep_order=True``: the given order, used
    where a label file fixes it). Returns (train, test); test has ceil(25 %) of the items."""
    items = list(items) if keep_order else sorted(items, key=key)
    if len(items) < 2:
        raise ConversionError(f"need at least 2 {what} to split 75/25 into train and test, "
                              f"found {len(items)}")
    idx_train, idx_test = seeded_split_indices(len(items), seed=seed, test_size=test_size)
    return [items[i] for i in idx_train], [items[i] for i in idx_test]


def split_note(keep_order: bool, order: str = "") -> dict:
    """The split description recorded in ``.prepared``."""
    return {"function": "sklearn.model_selection.train_test_split",
            "test_size": TEST_SIZE, "random_state": CONVERT_SEED,
            "input_order": order or ("given order" if keep_order else "sorted by name")}


def present(folder: Path) -> str:
    """Comma-separated visible entries of ``folder`` (for error messages)."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(folder).iterdir()
                       if not p.name.startswith("."))
    except OSError:
        return "nothing (not readable)"
    if len(names) > 20:
        names = names[:20] + [f"… ({len(names) - 20} more)"]
    return ", ".join(names) or "nothing"


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else an error naming it and what its parent holds."""
    path = Path(path)
    if not path.is_dir():
        parent = path.parent
        raise ConversionError(f"missing folder {path} ({what}); {parent} contains: "
                              f"{present(parent) if parent.is_dir() else 'nothing (missing)'}")
    return path


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        parent = path.parent
        raise ConversionError(f"missing file {path} ({what}); {parent} contains: "
                              f"{present(parent) if parent.is_dir() else 'nothing (missing)'}")
    return path


def find_root(raw: Path, marker: Callable[[Path], bool], layout: str,
              wrappers: Iterable[str] = ()) -> Path:
    """The folder at or one level below ``raw`` that satisfies ``marker`` (archives often
    wrap the data in one extra folder). ``wrappers`` are preferred folder names."""
    raw = Path(raw)
    if marker(raw):
        return raw
    candidates = [raw / w for w in wrappers] + sorted(
        (p for p in raw.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name)
    for c in candidates:
        if c.is_dir() and marker(c):
            return c
    raise ConversionError(f"{raw} does not look like the raw distribution: expected "
                          f"{layout}; it contains: {present(raw)}")


def images_in(folder: Path) -> list[Path]:
    """Image files (by extension, any case; hidden files skipped) of ``folder``, sorted."""
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and is_image_file(p)),
                  key=lambda p: p.name)


def read_gray(path: Path) -> np.ndarray:
    """A mask or label image as a 2-D uint8 array (max over channels)."""
    from .images import ImageDecodeError, decode_image

    try:
        return decode_image(path).max(axis=2)
    except ImageDecodeError as exc:
        raise ConversionError(str(exc)) from exc


def read_rgb(path: Path) -> np.ndarray:
    """An image as H×W×3 uint8 (grey replicated), as OpenCV's colour-mode read does."""
    from .images import ImageDecodeError, decode_image

    try:
        return decode_image(path)
    except ImageDecodeError as exc:
        raise ConversionError(str(exc)) from exc


# -- the converter base class ------------------------------------------------------------------
@dataclass
class PrepareResult:
    """What ``prepare`` did: where, counts per subset, warnings, options."""

    root: Path
    counts: dict[str, dict]
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


class ConvertedDataset(Dataset):
    """A dataset plugin with a converter. Subclasses implement ``convert`` and describe the
    dataset in class attributes; ``prepare`` adds atomicity, the marker and the manifest."""

    converter_version: ClassVar[int] = 1
    # {subset: [anomaly class folders]} as produced by the converter.
    anomaly_classes: ClassVar[dict[str, list[str]]] = {}
    # What `prepare --raw PATH` expects, shown by `bench data info`.
    raw_layout: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    # {subset: {count key: reason}}: a mismatch on these keys is a warning, not an error
    # (known benign or unverified expected values). Keys: train_good, test_good, anomalies,
    # classes, per_class.
    count_notes: ClassVar[dict[str, dict[str, str]]] = {}
    non_commercial: ClassVar[bool] = False
    img_size_note: ClassVar[str] = ""
    notes: ClassVar[list[str]] = []
    # A verified download: URL and sha256 of one archive; None where none is known.
    download_url: ClassVar[Optional[str]] = None
    download_sha256: ClassVar[Optional[str]] = None
    download_note: ClassVar[str] = ("no download URL with a verified sha256 is known for this "
                                    "dataset: bring your own copy from the official source, "
                                    "check it against the expected counts, then run "
                                    "`bench data prepare`")
    # An outlier source (LAG) holds only <X>/train/good/ folders, no test split.
    outlier_source: ClassVar[bool] = False
    # A pip package that ships the raw data (ELPV); see raw_from_package.
    package: ClassVar[Optional[str]] = None

    # -- to implement --------------------------------------------------------------------
    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        """Write the MVTec-layout dataset for ``raw`` into ``out`` through ``conv``."""
        raise NotImplementedError

    def raw_from_package(self) -> Path:
        """The raw folder shipped by an installed package (only datasets with ``package``)."""
        raise ConversionError(f"dataset {self.name!r} is not shipped by any Python package; "
                              f"pass --raw PATH (see `bench data info {self.name}`)")

    # -- options ---------------------------------------------------------------------------
    def all_options(self) -> dict[str, Option]:
        return {"link": Option(False, "hard-link files that are copied unchanged instead of "
                                      "copying them (saves disk; the prepared copy then shares "
                                      "the raw files)"),
                **self.options}

    def resolve_options(self, options: dict) -> dict:
        valid = self.all_options()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConversionError(f"unknown option(s) {', '.join(unknown)} for dataset "
                                  f"{self.name!r}; valid: {', '.join(sorted(valid))}")
        return {k: (_parse_option(k, o, options[k]) if k in options
                    else list(o.default) if isinstance(o.default, list) else o.default)
                for k, o in sorted(valid.items())}

    # -- prepare ---------------------------------------------------------------------------
    def prepare(self, raw: Path, out: Path, *, force: bool = False,
                raw_note: Optional[str] = None, **options) -> PrepareResult:
        """Convert ``raw`` into MVTec layout at ``out`` atomically (see module docstring).

        ``force`` replaces an existing prepared folder; ``options`` are the converter's
        options (``all_options``), recorded in the ``.prepared`` marker; ``raw_note`` is
        recorded as the raw source instead of the path (e.g. the URL of a download)."""
        opts = self.resolve_options(options)
        raw = Path(raw).expanduser().resolve()
        out = Path(out).expanduser().absolute()
        if not raw.is_dir():
            raise ConversionError(f"raw folder {raw} does not exist or is not a folder; pass "
                                  f"the folder of the official {self.title or self.name} "
                                  f"distribution (`bench data info {self.name}` shows the "
                                  f"expected layout)")
        if out.exists() and not force:
            if (out / MARKER).is_file():
                raise ConversionError(f"{self.name} is already prepared at {out}; pass --force "
                                      f"to convert again and replace it")
            if not out.is_dir() or any(out.iterdir()):
                raise ConversionError(f"{out} exists and is not an empty folder; move it away "
                                      f"or pass --force to replace it")
        if out == raw or out in raw.parents or raw in out.parents:
            raise ConversionError(f"output {out} and raw input {raw} overlap; choose a data "
                                  f"root outside the raw folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        for stale in out.parent.glob(f".{out.name}.partial-*"):
            # Left by an interrupted conversion; remove it unless its process still runs.
            try:
                pid = int(stale.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if not pid_alive(pid):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            conv = Conversion(raw, tmp, link=opts.get("link", False))
            self.convert(raw, tmp, opts, conv)
            counts = self.count_output(tmp)
            (tmp / MANIFEST).write_text(json.dumps(
                {"dataset": self.name, "files": dict(sorted(conv.sources.items()))},
                indent=0, sort_keys=True) + "\n")
            marker = {"dataset": self.name, "converter_version": self.converter_version,
                      "options": opts, "raw": raw_note or str(raw), "counts": counts,
                      "subsets": sorted(counts), "warnings": conv.warnings,
                      "licence": self.license, **conv.notes}
            # Written last: its presence is what makes the folder count as prepared.
            (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
            self._swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return PrepareResult(out, counts, list(conv.warnings), opts)

    @staticmethod
    def _swap_into_place(tmp: Path, out: Path) -> None:
        replace_dir(tmp, out)

    def count_output(self, root: Path) -> dict[str, dict]:
        """Counts per subset of a converted folder, read back through the layout reader (so a
        converter bug that breaks the layout fails the conversion)."""
        counts = {}
        try:
            for sub in list_subsets(root):
                idx = read_subset(root, sub)
                counts[sub] = {"train_good": len(idx.train_good), "test_good": len(idx.test_good),
                               "anomalies": {c: len(v) for c, v in sorted(idx.anomalies.items())}}
        except LayoutError as exc:
            raise ConversionError(f"the converted output is not a valid MVTec layout: {exc}") \
                from exc
        return counts

    # -- reading back ----------------------------------------------------------------------
    def marker(self, data_root: Path) -> dict:
        """The ``.prepared`` JSON of the prepared copy ({} if absent or unreadable)."""
        try:
            return json.loads((self.root(data_root) / MARKER).read_text())
        except (OSError, ValueError):
            return {}

    def expected_subsets(self, data_root: Optional[Path] = None) -> list[str]:
        """Subsets a complete prepared copy holds: those recorded at preparation (a
        deliberate selection, e.g. some MVTec categories), else ``subsets``."""
        if data_root is not None:
            recorded = self.marker(data_root).get("subsets")
            if recorded:
                return list(recorded)
        return list(self.subsets)

    def info(self) -> str:
        lines = [f"{self.name}: {self.title}", f"  source:   {self.source}",
                 f"  licence:  {self.license}"]
        if self.non_commercial:
            lines.append("            NON-COMMERCIAL licence: research use only; do not "
                         "redistribute the prepared images commercially")
        if self.outlier_source:
            lines.append("  role:     external outlier (pseudo-anomaly) source, laid out as "
                         "<root>/<X>/train/good/")
        lines.append(f"  subsets:  {', '.join(self.subsets)}")
        for sub in self.subsets:
            classes = self.anomaly_classes.get(sub, [])
            if classes:
                lines.append(f"  anomaly classes of {sub} ({len(classes)}): {', '.join(classes)}")
            hard = self.hard_known_classes.get(sub)
            if hard:
                lines.append(f"  hard-setting known classes of {sub} (paper Table 2): "
                             f"{', '.join(hard)}")
        if not any(self.hard_known_classes.values()) and not self.outlier_source:
            lines.append("  hard setting: not run by the paper on this dataset")
        if not self.outlier_source:
            size = self.paper_img_size
            lines.append(f"  image size (paper preset): {size}"
                         + (f"  [{self.img_size_note}]" if self.img_size_note else ""))
            lines.append(f"  outlier sources: DRA pseudo anomalies "
                         f"{self.paper_outliers or 'none (CutMix)'}; SAOE outlier exposure "
                         f"{self.exposure_outliers or 'none'} (own category excluded)")
        lines.append(f"  raw layout expected by `bench data prepare {self.name} --raw PATH`:")
        lines += ["    " + l for l in self.raw_layout.strip("\n").splitlines()]
        if self.package:
            lines.append(f"  or: `bench data prepare {self.name} --from-package` (pip package "
                         f"{self.package!r})")
        opts = self.all_options()
        lines.append("  options (--option KEY=VALUE, recorded in .prepared):")
        for k, o in sorted(opts.items()):
            lines.append(f"    {k} (default {o.default!r}): {o.help}")
        if self.download_url and self.download_sha256:
            lines.append(f"  download: {self.download_url} (sha256 {self.download_sha256})")
        else:
            lines.append(f"  download: none — {self.download_note}")
        if self.expected_counts:
            lines.append("  expected counts after conversion (paper Table 5 / datasets.md §1):")
            lines.append(f"    {'subset':<14}{'train_good':>11}{'test_good':>11}"
                         f"{'anomalies':>11}{'classes':>9}")
            for sub, exp in self.expected_counts.items():
                an = exp.get("anomalies")
                an_total = sum(an.values()) if isinstance(an, dict) else an
                lines.append(f"    {sub:<14}{exp.get('train_good', '?'):>11}"
                             f"{exp.get('test_good', '?'):>11}{an_total if an_total is not None else '?':>11}"
                             f"{exp.get('classes', '?'):>9}")
                per = an if isinstance(an, dict) else exp.get("per_class")
                if per:
                    lines.append("      per class: " + ", ".join(f"{c} {n}" for c, n in per.items()))
            for sub, notes in self.count_notes.items():
                for key, why in notes.items():
                    lines.append(f"    note {sub}.{key}: {why}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)
