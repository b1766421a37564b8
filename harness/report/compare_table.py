"""`bench compare`'s table (terminal, md or csv) and the notes below it, from the paired results
(harness/compare/pairwise.py)."""
from __future__ import annotations

import csv
import io
import math
from typing import TYPE_CHECKING, Sequence

from harness.compare.paired import format_ci, format_p
from harness.compare.stats import ADJUSTMENTS
from harness.report.formats import Table, to_markdown

if TYPE_CHECKING:
    from harness.compare.pairwise import PairResult


def columns(results: Sequence[PairResult], method: str, margin: float | None) -> tuple[str, ...]:
    metric = results[0].metric if len({r.metric for r in results}) == 1 else "score"
    head = ("A", "B", "task", "n", f"A {metric} [95% CI]", f"B {metric} [95% CI]", "Δ (B − A) [95% CI]", "test", "p")
    head += (f"p adj ({method})",) if len(results) > 1 and method != "none" else ()
    return head + ((f"verdict (±{margin:g})",) if margin is not None else ())


def cells(result: PairResult, method: str, several: bool, margin: float | None) -> tuple[str, ...]:
    n = str(result.n) if result.n == result.n_a == result.n_b else f"{result.n} of {result.n_a}/{result.n_b}"
    row = (result.a, result.b, result.task, n, format_ci(result.score_a, result.ci_a),
           format_ci(result.score_b, result.ci_b), format_ci(result.delta, result.delta_ci, signed=True),
           result.test, format_p(result.p_value))
    row += (format_p(result.p_adjusted),) if several and method != "none" else ()
    return row + ((result.verdict or "—",) if margin is not None else ())


def notes(results: Sequence[PairResult], method: str, margin: float | None) -> list[str]:
    lines = []
    for r in results:
        prefix = f"{r.a} vs {r.b}: " if len(results) > 1 else ""
        if r.n < max(r.n_a, r.n_b):
            lines.append(f"{prefix}paired on the {r.n} examples both evaluated ({r.a} has {r.n_a}, {r.b} has {r.n_b})")
        mde = "none: too few disagreements at this n" if math.isnan(r.mde) else f"±{r.mde:.3g}"
        if r.gold_probability:
            lines.append(prefix + r.gold_probability)
        if r.clustering:
            lines.append(f"{prefix}CIs and p: {r.clustering}")
        lines.append(f"{prefix}MDE: the smallest Δ detectable at 80% power, α 0.05, given n {r.n} and the observed "
                     f"{r.mde_basis}: {mde}")
    if len(results) > 1:
        lines.append(f"p adj: {ADJUSTMENTS[method]} over a family of {len(results)} comparisons"
                     + (" (also applied to the equivalence p-values)" if margin is not None else "")
                     if method != "none" else f"p: not adjusted for the {len(results)} comparisons (--adjust none)")
    if margin is not None:
        lines.append(f"verdict: two one-sided paired t tests (TOST) against ±{margin:g} on the per-item differences; "
                     "'different' from the test in the p column; 'inconclusive': neither shown at this n")
    return lines


def render(results: Sequence[PairResult], fmt: str, method: str, margin: float | None) -> str:
    several = len(results) > 1
    head = columns(results, method, margin)
    rows = [cells(r, method, several, margin) for r in results]
    below = notes(results, method, margin)
    if fmt == "csv":
        return _csv(results, method, margin)
    if fmt == "md":
        return to_markdown(Table(head, tuple(rows))) + "\n" + "".join(f"- {line}\n" for line in below)
    widths = [max(len(str(row[i])) for row in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (head, *rows)]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n\n" + "".join(f"{line}\n" for line in below)


def _csv(results: Sequence[PairResult], method: str, margin: float | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["a", "b", "task", "metric", "n", "n_a", "n_b", "score_a", "ci_a_low", "ci_a_high", "score_b",
                     "ci_b_low", "ci_b_high", "delta", "delta_ci_low", "delta_ci_high", "test", "p_value",
                     "p_adjusted", "adjustment", "mde", "mde_basis", "margin", "tost_p", "verdict",
                     "delta_ci_naive_low", "delta_ci_naive_high", "clusters", "clustering"])
    for r in results:
        writer.writerow([r.a, r.b, r.task, r.metric, r.n, r.n_a, r.n_b, r.score_a, *r.ci_a, r.score_b, *r.ci_b,
                         r.delta, *r.delta_ci, r.test, r.p_value, r.p_adjusted, method if len(results) > 1 else "none",
                         r.mde, r.mde_basis, "" if margin is None else margin,
                         "" if math.isnan(r.tost_p) else r.tost_p, r.verdict, *r.naive_delta_ci, r.clusters,
                         r.clustering])
    return out.getvalue()
