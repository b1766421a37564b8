"""Cells and table formats: numbers and labels as display strings, and one `Table` rendered as
markdown or LaTeX. Every report table goes through here, so the terminal, the table files, the
exports, the LaTeX output and the HTML report print the same cells."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from harness.compare.paired import Comparison, TextComparison, format_ci


OVER_SEEDS_TITLE = "Over seeds: mean ± sd (sample sd) per setting"  # a sweep's table, in every format


@dataclass(frozen=True)
class Table:
    """A rendered-format-neutral table: header and rows of display strings."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


# ---------------------------------------------------------------- cells

def show(value: Any) -> str:
    """A setting's value in a label or cell: floats as `5e-05`, missing as `—`."""
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def format_delta(value: float, ci: Sequence[float], name: str) -> str:
    """A signed difference of metric `name` with its CI, at that metric's scale (one decimal for
    0-100 scores, three for 0-1)."""
    return format_ci(value, ci, signed=True, decimals=1 if on_wide_scale(name) else 3)


def format_score(value: float, name: str = "") -> str:
    """3 decimals for 0-1 scores, 1 for 0-100 scales (BLEU, SQuAD) and perplexities."""
    return f"{value:.1f}" if on_wide_scale(name) or abs(value) >= 1.5 else f"{value:.3f}"


def on_wide_scale(name: str) -> bool:
    return name.split("_")[-1] in ("bleu", "exact", "f1", "perplexity") or name.startswith(("bleu", "perplexity"))


def count_label(n: int) -> str:
    """Parameter counts as 4.2k, 460.8k, 1.2B."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def csv_number(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) and math.isfinite(value) else value


def adjusted_column(adjust: str) -> str:
    return f"p adj ({adjust})"


def method_label(row: Comparison | TextComparison) -> str:
    """The method, with the settings that tell several configurations of one model x method (a
    sweep's cells) apart: `lora (lora_rank=2, lr=0.001)`."""
    return row.method + (f" ({row.settings})" if row.settings else "")


def baseline_stage(row: Comparison | TextComparison) -> str:
    """The store stage behind a row's baseline label ("prompt 0-shot" -> "baseline:prompt")."""
    return "baseline:" + row.baseline.split(" ")[0]


# ---------------------------------------------------------------- markdown

def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(_escape(c) for c in table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- LaTeX

# LaTeX's special characters in text mode; `<`, `>` and `|` print as other glyphs in OT1 fonts.
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "|": r"\textbar{}", "Δ": r"$\Delta$", "→": r"$\to$", "—": "---", "−": "$-$",
          "×": r"$\times$", "·": r"$\cdot$", "…": r"\ldots{}", "\n": " "}
_NUMERIC = re.compile(r"^([+\-−]?[\d.]|<1e-4$|—$)")


def latex_escape(text: str) -> str:
    escaped = "".join(_LATEX.get(char, char) for char in text)
    # A row starting with `[` would be read as the optional argument of the previous row's `\\`.
    return "{}" + escaped if escaped.startswith("[") else escaped


def to_latex(table: Table, caption: str = "", notes: Sequence[str] = ()) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); every cell escaped; `notes` (how to read
    it, warnings) in small type under it."""
    # numbers right-aligned: a column whose every cell starts like a number (or is empty: —)
    spec = "".join("r" if table.rows and all(_NUMERIC.match(row[i]) for row in table.rows) else "l"
                   for i in range(len(table.columns)))
    lines = [r"\begin{table}[ht]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines += [r"\par\smallskip", r"{\footnotesize\raggedright"] + [latex_escape(n) + r"\par" for n in notes] + ["}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
