"""The LaTeX-compile helper: a fitting table compiles cleanly, a too-wide one is caught."""
import pytest

from bench.report.render_check import compile_latex, latex_document

TABLE = r"""\begin{table}[t]\centering
\begin{tabular}{lcc}\toprule
Dataset & DevNet & DRA \\ \midrule
Carpet & 0.867 & \textbf{0.940} \\ \bottomrule
\end{tabular}\caption{AUC-ROC.}\label{tab:x}\end{table}"""


def test_fitting_table_compiles_without_overfull_boxes(pdflatex):
    res = compile_latex(latex_document(TABLE))
    assert res.ok, res.errors
    assert res.overfull_hbox == [] and res.pages == 1


def test_too_wide_table_is_reported_as_overfull(pdflatex):
    cols = 24
    wide = (r"\begin{tabular}{" + "c" * cols + r"}\toprule " +
            " & ".join(f"Method{i}" for i in range(cols)) + r" \\ \bottomrule\end{tabular}")
    res = compile_latex(latex_document(wide))
    assert res.ok
    assert res.overfull_hbox and res.overfull_hbox[0].startswith(r"Overfull \hbox")


def test_error_halts_and_is_reported(pdflatex):
    res = compile_latex(latex_document(r"\begin{tabular}{cc} a & \undefinedmacro \\ \end{tabular}"))
    assert not res.ok and res.pages is None
    assert any("Undefined control sequence" in e for e in res.errors)
