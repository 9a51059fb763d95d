"""One self-contained HTML page per report: tables, figures, statistics, the run environment and
links to the per-run records, readable offline.

Images are inlined as base64 data URIs; the page loads nothing from elsewhere and runs no
script. Links to run records and other files of the report are relative to the page, so the
report folder can be moved or archived whole. The page is a pure function of its inputs (no
timestamps, sorted environment keys), so a rerun writes identical bytes.

A page is built from :class:`Section` s holding :class:`Table`, :class:`Image`, :class:`Text`
and :class:`Link` items; ``write_page`` adds the environment and the run list.
"""
from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union
from urllib.parse import quote

import numpy as np
import pandas as pd

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
         ".jpeg": "image/jpeg"}
_EMPHASIS = {"best": ("<strong>", "</strong>"), "second": ("<u>", "</u>"), "": ("", "")}
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; margin-top: 2.2rem;
     border-bottom: 1px solid #ccc; } h3 { font-size: 1.05rem; margin-bottom: .3rem; }
nav ul { columns: 2; } .caption { color: #444; font-size: .9rem; margin: .2rem 0 .8rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .85rem; }
th, td { padding: .2rem .55rem; border-bottom: 1px solid #ddd; text-align: center;
         vertical-align: top; }
thead th { border-bottom: 2px solid #333; text-align: center; }
tbody th { text-align: left; font-weight: 600; }
td.gap { color: #a33; }
td.text, th.text { text-align: left; }
.wrap { overflow-x: auto; }
figure { margin: .6rem 0 1.4rem; } figure img { max-width: 100%; height: auto; }
dl.env { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem;
         font-size: .85rem; } dl.env dt { font-weight: 600; } dl.env dd { margin: 0; }
.status-failed { color: #a33; font-weight: 600; } .status-skipped { color: #8a5a00; }
"""


@dataclass(frozen=True)
class Table:
    """A frame shown as an HTML table. ``emphasis``: a frame of the same shape holding "best",
    "second" or "" per cell (bold / underlined). NaN and None cells show as a marked gap "–".
    Floats are formatted with ``float_format``; text cells are shown as they are."""
    frame: pd.DataFrame
    title: str = ""
    caption: str = ""
    emphasis: Optional[pd.DataFrame] = None
    index: bool = True
    float_format: str = "{:.4g}"


@dataclass(frozen=True)
class Image:
    """A PNG, SVG or JPEG file, inlined as a data URI."""
    path: Path
    title: str = ""
    caption: str = ""
    alt: str = ""


@dataclass(frozen=True)
class Text:
    """Plain text; blank lines separate paragraphs (escaped, never interpreted as HTML)."""
    text: str


@dataclass(frozen=True)
class Link:
    """A link to a file of the report (e.g. a figure's PDF or a table's .tex), relative to the
    page."""
    path: Path
    text: str = ""


Item = Union[Table, Image, Text, Link]


@dataclass(frozen=True)
class Section:
    title: str
    items: Sequence[Item] = field(default_factory=tuple)


# -- rendering -----------------------------------------------------------------------------

def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _slugs(titles: Sequence[str]) -> list[str]:
    out, seen = [], {}
    for t in titles:
        base = re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-") or "section"
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(base if n == 0 else f"{base}-{n + 1}")
    return out


def _rel(path: Path | str, page_dir: Path) -> str:
    """A relative URL from the page's folder to ``path`` (POSIX separators, percent-encoded)."""
    rel = os.path.relpath(Path(path).resolve(), page_dir.resolve())
    return quote(Path(rel).as_posix())


def _is_gap(v) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _fmt(v, float_format: str) -> tuple[str, str]:
    """(cell text, css class) of one value; NaN, None, "" and "–" are gaps."""
    if _is_gap(v) or (isinstance(v, str) and v.strip() in ("", "–")):
        return "–", "gap"
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no"), ""
    if isinstance(v, (float, np.floating)):
        return float_format.format(float(v)), ""
    if isinstance(v, (int, np.integer)):
        return str(int(v)), ""
    return str(v), "text"


def _label(v) -> str:
    return " / ".join(map(str, v)) if isinstance(v, tuple) else str(v)


def _index_spans(index: pd.Index) -> list[list[Optional[int]]]:
    """Per row and index level: the rowspan of a cell that starts a group there, or None
    where the cell continues the group above (so repeated group names appear once)."""
    rows = [k if isinstance(k, tuple) else (k,) for k in index]
    spans: list[list[Optional[int]]] = []
    for i, key in enumerate(rows):
        row = []
        for lvl in range(len(key)):
            if i > 0 and rows[i - 1][:lvl + 1] == key[:lvl + 1] and lvl < len(key) - 1:
                row.append(None)
                continue
            n = 1
            while (lvl < len(key) - 1 and i + n < len(rows)
                   and rows[i + n][:lvl + 1] == key[:lvl + 1]):
                n += 1
            row.append(n)
        spans.append(row)
    return spans


def table_html(t: Table) -> str:
    """The HTML of one table (inside a horizontally scrolling wrapper)."""
    df = t.frame
    if t.emphasis is not None and (t.emphasis.shape != df.shape):
        raise ValueError(f"table {t.title!r}: emphasis has shape {t.emphasis.shape}, the table "
                         f"{df.shape}")
    names = [n if n is not None else "" for n in df.index.names] if t.index else []
    head = "".join(f'<th class="text">{_esc(n)}</th>' for n in names)
    head += "".join(f"<th>{_esc(_label(c))}</th>" for c in df.columns)
    body = []
    spans = _index_spans(df.index) if t.index else [[] for _ in range(len(df))]
    values = df.to_numpy(dtype=object)
    emph = t.emphasis.to_numpy(dtype=object) if t.emphasis is not None else None
    for i, key in enumerate(df.index):
        key = key if isinstance(key, tuple) else (key,)
        cells = []
        for lvl, span in enumerate(spans[i]):
            if span is None:
                continue
            rs = f' rowspan="{span}"' if span > 1 else ""
            cells.append(f"<th{rs}>{_esc(key[lvl])}</th>")
        for j, v in enumerate(values[i]):
            text, cls = _fmt(v, t.float_format)
            mark = "" if emph is None or _is_gap(emph[i, j]) else str(emph[i, j])
            if mark not in _EMPHASIS:
                raise ValueError(f"table {t.title!r}: emphasis must be 'best', 'second' or '', "
                                 f"got {mark!r}")
            o, c = _EMPHASIS[mark]
            attr = f' class="{cls}"' if cls == "gap" else ""
            cells.append(f"<td{attr}>{o}{_esc(text)}{c}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ('<div class="wrap"><table>\n<thead><tr>' + head + "</tr></thead>\n<tbody>\n" +
            "\n".join(body) + "\n</tbody></table></div>")


def image_html(img: Image) -> str:
    path = Path(img.path)
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: only {sorted(_MIME)} images can be inlined in the page; "
                         f"pass the PNG (and link the PDF with a Link item)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: figure file not found; write the figure first")
    raw = path.read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    alt = img.alt or img.title or path.stem
    cap = f'<figcaption class="caption">{_esc(img.caption)}</figcaption>' if img.caption else ""
    size = _png_css_width(raw) if mime == "image/png" else None
    width = f' width="{size}"' if size else ""
    return f'<figure><img src="data:{mime};base64,{data}" alt="{_esc(alt)}"{width}>{cap}</figure>'


def _png_css_width(raw: bytes) -> Optional[int]:
    """The width in CSS pixels (1/96 in) at which a PNG shows at its physical size, from its
    IHDR width and pHYs resolution; None if the file says no resolution."""
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or raw[12:16] != b"IHDR":
        return None
    width = int.from_bytes(raw[16:20], "big")
    at = raw.find(b"pHYs", 0, 4096)
    if at < 0 or raw[at + 12] != 1:  # unit 1 = pixels per metre
        return None
    ppm = int.from_bytes(raw[at + 4:at + 8], "big")
    return round(width / (ppm * 0.0254) * 96) if ppm else None


def _item_html(item: Item, page_dir: Path) -> str:
    if isinstance(item, Table):
        parts = [f"<h3>{_esc(item.title)}</h3>"] if item.title else []
        if item.caption:
            parts.append(f'<p class="caption">{_esc(item.caption)}</p>')
        return "\n".join(parts + [table_html(item)])
    if isinstance(item, Image):
        title = f"<h3>{_esc(item.title)}</h3>\n" if item.title else ""
        return title + image_html(item)
    if isinstance(item, Text):
        paras = [p.strip() for p in re.split(r"\n\s*\n", item.text) if p.strip()]
        return "\n".join(f"<p>{_esc(p)}</p>" for p in paras)
    if isinstance(item, Link):
        return (f'<p><a href="{_rel(item.path, page_dir)}">'
                f"{_esc(item.text or Path(item.path).name)}</a></p>")
    raise TypeError(f"a page item must be Table, Image, Text or Link, got {type(item).__name__}")


def _flatten(env: Mapping, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k in sorted(env, key=str):
        v = env[k]
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten(v, name + "."))
        else:
            out.append((name, "–" if v is None else str(v)))
    return out


def environment_section(env: Mapping) -> str:
    """The run environment (e.g. a run's env.json) as a definition list, keys sorted, nested
    keys joined with dots."""
    rows = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in _flatten(env))
    return f'<dl class="env">{rows}</dl>'


def runs_section(runs: pd.DataFrame, page_dir: Path) -> str:
    """The per-run list: every column of ``runs`` with ``record`` (the path of a run's
    record.json or folder) turned into a relative link and ``status`` highlighted when a run
    failed or was skipped (its ``reason`` column then says why)."""
    if "record" not in runs.columns:
        raise ValueError(f"the run list needs a 'record' column (path of each run's record), "
                         f"it has {list(runs.columns)}")
    cols = [c for c in runs.columns if c != "record"]
    head = "".join(f'<th class="text">{_esc(c)}</th>' for c in cols) + "<th>record</th>"
    body = []
    for r in runs.itertuples(index=False):
        row = r._asdict()
        cells = []
        for c in cols:
            text, cls = _fmt(row[c], "{:.4g}")
            if c == "status" and text in ("failed", "skipped"):
                cls = f"text status-{text}"
            cells.append(f'<td class="{cls or "text"}">{_esc(text)}</td>')
        rec = row["record"]
        cells.append("<td class=\"gap\">–</td>" if _is_gap(rec) else
                     f'<td class="text"><a href="{_rel(rec, page_dir)}">'
                     f"{_esc(Path(rec).name)}</a></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ('<div class="wrap"><table>\n<thead><tr>' + head + "</tr></thead>\n<tbody>\n" +
            "\n".join(body) + "\n</tbody></table></div>")


def render_page(title: str, sections: Sequence[Section], page_dir: Path | str, *,
                environment: Optional[Mapping] = None,
                runs: Optional[pd.DataFrame] = None) -> str:
    """The page as a string; ``page_dir`` is the folder the page will be written to (links
    are made relative to it)."""
    page_dir = Path(page_dir)
    blocks = [(s.title, "\n".join(_item_html(i, page_dir) for i in s.items)) for s in sections]
    if environment is not None:
        blocks.append(("Environment", environment_section(environment)))
    if runs is not None:
        counts = runs["status"].value_counts().to_dict() if "status" in runs.columns else {}
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        blocks.append(("Runs", (f"<p>{_esc(summary)}</p>\n" if summary else "") +
                       runs_section(runs, page_dir)))
    ids = _slugs([t for t, _ in blocks])
    nav = "".join(f'<li><a href="#{i}">{_esc(t)}</a></li>' for (t, _), i in zip(blocks, ids))
    body = "\n".join(f'<section id="{i}">\n<h2>{_esc(t)}</h2>\n{b}\n</section>'
                     for (t, b), i in zip(blocks, ids))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_esc(title)}</h1>\n<nav><ul>{nav}</ul></nav>\n{body}\n</body>\n</html>\n")


def write_page(path: Path | str, title: str, sections: Sequence[Section], *,
               environment: Optional[Mapping] = None,
               runs: Optional[pd.DataFrame] = None) -> Path:
    """Render the page and write it to ``path`` atomically (temp name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..util import atomic_write

    atomic_write(path, render_page(title, sections, path.parent, environment=environment,
                                   runs=runs))
    return path
