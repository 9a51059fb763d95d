"""Hyper-Kvasir: upper gastro-intestinal endoscopy (datasets.md §1.7).

Source: Borgli et al., "HyperKvasir, a comprehensive multi-class image and video dataset for
gastrointestinal endoscopy", Scientific Data 2020; datasets.simula.no/hyper-kvasir (OSF).
Licence: not verified this session (the release states its own terms; check them).

Conversion (the released ``convert_hyperkvasir.py``): the anatomical-landmark folders of the
upper GI tract (pylorus, retroflex-stomach, z-line) are pooled as normal and split 75/25
(sorted by name, ``train_test_split``, seed 42; the released ``os.listdir`` order is not
reproduced byte for byte); each pathological-finding folder (barretts,
barretts-short-segment, esophagitis-a, esophagitis-b-d) is copied to ``test/<same name>/``.
Files keep their names; lower-GI images are not used. Uses LAG as the paper's
pseudo-anomaly source. Subset name: ``hyperkvasir`` (the released classname).
"""
from __future__ import annotations

from pathlib import Path

from bench.registry import register_dataset

from ..convert import (ConversionError, Conversion, ConvertedDataset, find_root, images_in,
                       require_dir, split_normals, split_note)

SUBSET = "hyperkvasir"
LANDMARKS = ["pylorus", "retroflex-stomach", "z-line"]
FINDINGS = ["barretts", "barretts-short-segment", "esophagitis-a", "esophagitis-b-d"]


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


@register_dataset("hyper_kvasir")
class HyperKvasir(ConvertedDataset):
    title = "Hyper-Kvasir upper-GI endoscopy, 4 anomaly classes"
    source = ("Borgli et al., Scientific Data 2020; https://datasets.simula.no/hyper-kvasir/ "
              "(labeled-images)")
    license = "not verified this session; check the Hyper-Kvasir release terms"
    subsets = [SUBSET]
    anomaly_classes = {SUBSET: FINDINGS}
    hard_known_classes = {SUBSET: FINDINGS}
    paper_img_size = 448
    paper_outliers = "lag"
    exposure_outliers = "lag"  # SAOE: LAG (medical)
    expected_counts = {SUBSET: {"train_good": 2021, "test_good": 674, "classes": 4,
                                "anomalies": {"barretts": 41, "barretts-short-segment": 53,
                                              "esophagitis-a": 403, "esophagitis-b-d": 260}}}
    raw_layout = """\
<raw>/[labeled-images/]upper-gi-tract/anatomical-landmarks/{pylorus,retroflex-stomach,z-line}/*.jpg
<raw>/[labeled-images/]upper-gi-tract/pathological-findings/{barretts,barretts-short-segment,
                                                  esophagitis-a,esophagitis-b-d}/*.jpg"""

    def convert(self, raw: Path, out: Path, opts: dict, conv: Conversion) -> None:
        root = find_root(raw, lambda p: (p / "upper-gi-tract").is_dir(),
                         "upper-gi-tract/anatomical-landmarks/ and pathological-findings/",
                         wrappers=("labeled-images", "hyper-kvasir-labeled-images"))
        gi = root / "upper-gi-tract"
        landmarks = _subdirs(require_dir(gi / "anatomical-landmarks", "normal landmark folders"))
        findings = _subdirs(require_dir(gi / "pathological-findings", "anomaly class folders"))
        for got, want, what in ((landmarks, LANDMARKS, "anatomical-landmarks"),
                                (findings, FINDINGS, "pathological-findings")):
            names = [p.name for p in got]
            if names != want:
                conv.warn(f"{what} folders are {', '.join(names) or 'none'}; expected "
                          f"{', '.join(want)}")
        if not landmarks or not findings:
            raise ConversionError(f"{gi} needs landmark folders (normal) and finding folders "
                                  f"(anomalies); found landmarks: "
                                  f"{', '.join(p.name for p in landmarks) or 'none'}, findings: "
                                  f"{', '.join(p.name for p in findings) or 'none'}")
        normal = [f for d in landmarks for f in images_in(d)]
        train, test = split_normals(normal, key=lambda p: (p.name, p.parent.name),
                                    what="landmark images")
        for part, files in (("train/good", train), ("test/good", test)):
            for f in files:
                conv.copy(f, f"{SUBSET}/{part}/{f.name}")  # a name clash is reported by copy
        for d in findings:
            files = images_in(d)
            if not files:
                conv.warn(f"finding folder {d} holds no images")
            for f in files:
                conv.copy(f, f"{SUBSET}/test/{d.name}/{f.name}")
        conv.notes["split"] = split_note(False, "landmark images pooled, sorted by file name")
