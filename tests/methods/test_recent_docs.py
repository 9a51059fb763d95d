"""docs/recent_methods.md carries the reference table of the methods after the paper, made
from their cards (one home: the card); rerun with BENCH_UPDATE_DOCS=1 to rewrite it."""
import os
from pathlib import Path

from bench.methods.ahl import AHL
from bench.methods.anomalib_adapter import AnomalibImageModel
from bench.methods.bgad import BGAD
from bench.methods.dra import DRA
from bench.methods.prenet import PReNet
from bench.registry import reference_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "recent_methods.md"
BEGIN, END = "<!-- table:begin -->\n", "<!-- table:end -->"


def test_reference_table_matches_the_cards():
    table = reference_table([("dra", DRA), ("ahl", AHL), ("bgad", BGAD), ("prenet", PReNet),
                             ("anomalib:*", AnomalibImageModel)])
    assert "| `ahl` | Zhu, Ding, Tian, Pang." in table and "CVPR 2023" in table
    text = DOC.read_text()
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    if block != table and os.environ.get("BENCH_UPDATE_DOCS") == "1":
        DOC.write_text(text[:text.index(BEGIN) + len(BEGIN)] + table + text[text.index(END):])
        block = table
    assert block == table, "docs/recent_methods.md differs from the cards; rerun with " \
                           "BENCH_UPDATE_DOCS=1"
