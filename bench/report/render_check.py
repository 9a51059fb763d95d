"""Check that report outputs render: compile LaTeX with ``pdflatex`` and load an HTML page in
headless Chromium. Used by the tests (which skip when a binary is missing) and available to
anyone who wants to check a report by hand.

Both tools are Debian packages that ``.ci/run`` installs: ``texlive-latex-base``,
``texlive-latex-recommended`` (booktabs, xcolor, colortbl, graphicx) and ``chromium``.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

INSTALL_HINT = ("apt-get update && apt-get install -y texlive-latex-base "
                "texlive-latex-recommended chromium")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
# Run inside the page's copy after load: record each image's decoded size, so a DOM dump
# tells whether the browser could decode it (0 = broken image).
_PROBE = """<script>
window.addEventListener("load", () => {
  for (const im of document.images) {
    im.setAttribute("data-natural-width", im.naturalWidth);
    im.setAttribute("data-natural-height", im.naturalHeight);
  }
  document.body.setAttribute("data-probed", "1");
});
</script>"""


def pdflatex_binary() -> Optional[str]:
    return shutil.which("pdflatex")


def chromium_binary() -> Optional[str]:
    return shutil.which("chromium")


def _need(binary: Optional[str], name: str) -> str:
    if binary is None:
        raise FileNotFoundError(f"{name} not found on PATH; install it with: {INSTALL_HINT}")
    return binary


@dataclass(frozen=True)
class LatexResult:
    returncode: int
    log: str
    pages: Optional[int]

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def overfull_hbox(self) -> list[str]:
        """The log's ``Overfull \\hbox`` lines (text wider than its box: off the page)."""
        return re.findall(r"^Overfull \\hbox.*$", self.log, flags=re.M)

    @property
    def errors(self) -> list[str]:
        """The log's error lines (they start with "!")."""
        return re.findall(r"^!.*$", self.log, flags=re.M)


def latex_document(body: str, packages: Sequence[str] = ("booktabs",),
                   documentclass: str = r"\documentclass[a4paper]{article}") -> str:
    """A minimal document around a fragment (e.g. a ``table`` environment)."""
    uses = "".join(f"\\usepackage{{{p}}}\n" for p in packages)
    return (f"{documentclass}\n\\usepackage[T1]{{fontenc}}\n\\usepackage[utf8]{{inputenc}}\n"
            f"{uses}\\begin{{document}}\n{body}\n\\end{{document}}\n")


def compile_latex(source: str, *, timeout: float = 120) -> LatexResult:
    """Compile a complete LaTeX document with ``pdflatex -interaction=nonstopmode
    -halt-on-error`` in a temporary folder; returns the exit code, the full log and the
    number of pages written."""
    exe = _need(pdflatex_binary(), "pdflatex")
    with tempfile.TemporaryDirectory(prefix="bench-latex-") as tmp:
        (Path(tmp) / "doc.tex").write_text(source, encoding="utf-8")
        proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error",
                               "-no-shell-escape", "doc.tex"], cwd=tmp, capture_output=True,
                              text=True, errors="replace", timeout=timeout,
                              stdin=subprocess.DEVNULL)
        log_path = Path(tmp) / "doc.log"
        log = (log_path.read_text(errors="replace") if log_path.is_file()
               else proc.stdout + proc.stderr)
    m = re.search(r"Output written on doc\.pdf \((\d+) pages?", log)
    return LatexResult(returncode=proc.returncode, log=log, pages=int(m.group(1)) if m else None)


def _chromium(args: list[str], profile: str, timeout: float) -> subprocess.CompletedProcess:
    exe = _need(chromium_binary(), "chromium")
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, errors="replace", timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _probe_copy(page: Path, folder: Path) -> Path:
    """A copy of ``page`` in ``folder`` with a <base> pointing back at the page's folder (so
    relative links resolve as in the original) and the image probe appended."""
    text = page.read_text(encoding="utf-8")
    base = f'<base href="{page.parent.resolve().as_uri()}/">'
    text = re.sub(r"<head>", "<head>" + base, text, count=1)
    text = re.sub(r"</body>", _PROBE + "</body>", text, count=1) if "</body>" in text \
        else text + _PROBE
    copy = folder / page.name
    copy.write_text(text, encoding="utf-8")
    return copy


def chromium_dom(page: Path | str, *, timeout: float = 90) -> str:
    """The DOM of ``page`` after Chromium loaded it (``--dump-dom``), with
    ``data-natural-width``/``-height`` on every <img> (0 = the browser could not decode it).
    The page itself is not modified: a probed copy is loaded from a temporary folder."""
    page = Path(page)
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such page")
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as tmp:
        copy = _probe_copy(page, Path(tmp))
        proc = _chromium(["--dump-dom", copy.as_uri()], str(Path(tmp) / "profile"), timeout)
    if proc.returncode != 0 or 'data-probed="1"' not in proc.stdout:
        raise RuntimeError(f"chromium could not render {page} (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    return proc.stdout


def chromium_screenshot(page: Path | str, out: Path | str, *, size: tuple[int, int] = (1280, 2400),
                        timeout: float = 90) -> Path:
    """A PNG screenshot of ``page`` (``--screenshot``) at ``size`` = (width, height) pixels."""
    page, out = Path(page), Path(out).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such page")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as tmp:
        proc = _chromium([f"--screenshot={out}", f"--window-size={size[0]},{size[1]}",
                          "--hide-scrollbars", page.resolve().as_uri()],
                         str(Path(tmp) / "profile"), timeout)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium could not screenshot {page} (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    return out
