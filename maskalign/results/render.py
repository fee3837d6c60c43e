"""Write a table as CSV, Markdown and LaTeX, each file atomically.

The cells are already strings (see :mod:`maskalign.results.fmt`), so every format shows the same
text; LaTeX escapes its special characters and uses booktabs rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from maskalign.atomic import atomic_write_text

_SUBSCRIPT = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")
_LATEX_CHARS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_SYMBOLS = {"Δ": r"$\Delta$", "×": r"$\times$", "—": "---", "±": r"$\pm$"}


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def to_markdown(frame: pd.DataFrame, title: str = "") -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", r"\|").replace("\n", " ")

    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(cell(c) for c in frame.columns) + " |")
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def latex_escape(text: object) -> str:
    s = "".join(_LATEX_CHARS.get(ch, ch) for ch in str(text))
    s = re.sub(r"[₀-₉]+", lambda m: "$_{" + m.group(0).translate(_SUBSCRIPT) + "}$", s)
    return "".join(_LATEX_SYMBOLS.get(ch, ch) for ch in s)


def to_latex(frame: pd.DataFrame, title: str = "") -> str:
    lines = [f"% {title}"] if title else []
    lines += [
        r"\begin{tabular}{" + "l" * len(frame.columns) + "}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(
    frame: pd.DataFrame, out_dir: str | Path, stem: str, title: str = "", latex: bool = False
) -> list[Path]:
    """``<stem>.csv`` and ``<stem>.md`` (and ``<stem>.tex``) in ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    paths = [
        atomic_write_text(out_dir / f"{stem}.csv", to_csv(frame)),
        atomic_write_text(out_dir / f"{stem}.md", to_markdown(frame, title)),
    ]
    if latex:
        paths.append(atomic_write_text(out_dir / f"{stem}.tex", to_latex(frame, title)))
    return paths
