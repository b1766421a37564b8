"""Figures as PNG bytes: training curves and sweep heatmaps.

matplotlib's object API with the Agg canvas, never pyplot: no global figure registry, no backend
switch for the whole process, no display needed. Callers embed the bytes (base64) or write them.
"""
from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def plain(text: object) -> str:
    """Text from data or models, shown literally: matplotlib would read `$...$` as math."""
    return str(text).replace("$", r"\$")


def curves_png(curves: Sequence[dict[str, Any]], title: str) -> bytes | None:
    """Training loss per step (left) and each validation metric per evaluation (right).
    None when nothing was recorded, so the report says so instead of drawing empty axes."""
    loss = [(p["step"], p["loss"]) for p in curves if "loss" in p and _finite(p["loss"])]
    names = sorted({k for p in curves for k in p if k.startswith("val_")})
    if not loss and not names:
        return None
    from matplotlib.ticker import MaxNLocator

    figure = _figure(9.0, 3.2)
    left, right = figure.subplots(1, 2)
    if loss:
        steps, values = zip(*loss)
        left.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, color="#1f77b4")
    left.set(title="training loss", xlabel="optimizer step", ylabel="loss")
    for name in names:
        points = [(p["step"], p[name]) for p in curves if name in p and _finite(p[name])]
        if points:
            steps, values = zip(*points)
            right.plot(steps, values, marker="o", markersize=4, label=name[4:])
    right.set(title="validation", xlabel="optimizer step")
    if names:
        right.legend(loc="best", fontsize="small")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        low, high = axes.get_xlim()
        if axes.has_data() and high - low < 2:  # one step only: matplotlib pads it to ±5% (0.95 .. 1.05)
            middle = round((low + high) / 2)
            axes.set_xlim(middle - 1, middle + 1)
    figure.suptitle(plain(title), fontsize="medium")
    return _png(figure)


def heatmap_png(values: Sequence[Sequence[float]], row_labels: Sequence[str], col_labels: Sequence[str], *,
                row_axis: str, col_axis: str, title: str, colorbar_label: str,
                annotations: Sequence[Sequence[str]] | None = None) -> bytes:
    """A grid of metric values (NaN = no result, drawn grey), each cell annotated with its text."""
    import numpy as np

    grid = np.ma.masked_invalid(np.array(values, dtype=float))
    rows, cols = grid.shape
    missing = np.ma.getmaskarray(grid)
    figure = _figure(max(4.5, 1.4 * cols + 2.5), max(2.8, 0.9 * rows + 1.8))
    axes = figure.subplots()
    colormap = _colormap()
    image = axes.imshow(grid, cmap=colormap, aspect="auto")
    figure.colorbar(image, ax=axes, label=plain(colorbar_label))
    axes.set_xticks(range(cols), [plain(_wrap(str(label), 16)) for label in col_labels])  # Hub ids overlapped
    axes.set_yticks(range(rows), [plain(label) for label in row_labels])
    axes.set(xlabel=plain(col_axis), ylabel=plain(row_axis))
    axes.set_title(plain(title), fontsize="medium")
    low, high = (float(grid.min()), float(grid.max())) if grid.count() else (0.0, 1.0)
    for r in range(rows):
        for c in range(cols):
            text = annotations[r][c] if annotations else ("" if missing[r, c] else f"{grid[r, c]:.3f}")
            # dark text on light cells (high values of viridis, and the grey of missing ones)
            shade = 1.0 if missing[r, c] else 0.5 if high == low else (float(grid[r, c]) - low) / (high - low)
            axes.text(c, r, plain(text), ha="center", va="center", fontsize="small",
                      color="white" if shade < 0.6 else "black")
    return _png(figure)


def _wrap(text: str, width: int) -> str:
    """A tick label on lines of about `width` characters, broken after / - _ or a space: a column
    is ~1.4 inches, and model ids such as HuggingFaceTB/SmolLM2-135M-Instruct ran into their neighbours."""
    import re

    lines = [""]
    for part in re.findall(r"[^/\-_\s]*[/\-_\s]|[^/\-_\s]+", text):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(line.strip() for line in lines)


def _colormap() -> Any:
    from matplotlib import colormaps

    colormap = colormaps["viridis"].copy()
    colormap.set_bad("#cccccc")
    return colormap


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
