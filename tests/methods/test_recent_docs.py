"""docs/recent_methods.md carries the reference table of the methods after the paper and the
anomalib adapter's card (docs/methods.md leaves out the optional extra), both made from the
cards (one home: the card); rerun with BENCH_UPDATE_DOCS=1 to rewrite them."""
import os
from pathlib import Path

from bench.methods.ahl import AHL
from bench.methods.anomalib_adapter import AnomalibImageModel
from bench.methods.bgad import BGAD
from bench.methods.dra import DRA
from bench.methods.prenet import PReNet
from bench.registry import reference_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "recent_methods.md"


def _check_block(tag: str, expected: str) -> None:
    begin, end = f"<!-- {tag}:begin -->\n", f"<!-- {tag}:end -->"
    text = DOC.read_text()
    block = text[text.index(begin) + len(begin):text.index(end)]
    if block != expected and os.environ.get("BENCH_UPDATE_DOCS") == "1":
        DOC.write_text(text[:text.index(begin) + len(begin)] + expected + text[text.index(end):])
        block = expected
    assert block == expected, f"docs/recent_methods.md ({tag}) differs from the cards; rerun " \
                              f"with BENCH_UPDATE_DOCS=1"


def test_reference_table_matches_the_cards():
    table = reference_table([("dra", DRA), ("ahl", AHL), ("bgad", BGAD), ("prenet", PReNet),
                             ("anomalib:*", AnomalibImageModel)])
    assert "| `ahl` | Zhu, Ding, Tian, Pang." in table and "CVPR 2023" in table
    _check_block("table", table)


def test_adapter_card_is_in_the_doc():
    c = AnomalibImageModel
    card = (f"{c.card.notes}\n\nInput size {c.input_size} px; test budget "
            f"`{c.test_params()}`; quick preset `{dict(c.quick_params)}`.\n")
    _check_block("anomalib-card", card)
