"""docs/methods.md is generated from the method cards: the committed file must be what the
generator writes now (regenerate: python -m bench.registry > docs/methods.md)."""
from pathlib import Path

from bench.registry import list_methods, method_cards_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "methods.md"


def test_committed_methods_doc_matches_the_cards():
    text = method_cards_markdown()
    assert DOC.read_text() == text, ("docs/methods.md is stale; run "
                                     "`python -m bench.registry > docs/methods.md`")
    for name in list_methods():
        if name.startswith("dra") and name != "dra":
            assert f"- `{name}`: `dra` with" in text   # variants under their method
        elif name in ("devnet", "kdad", "saoe"):
            assert f"\n## {name}\n" in text
