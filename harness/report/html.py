"""One self-contained HTML file per run selection or sweep: tables, training curves, sample
predictions before/after, and the sweep heatmap.

Self-contained: figures are inline base64 PNGs, the style sheet is inline, and there is no
script at all; a Content-Security-Policy meta tag forbids anything else, so the file opens
offline and cannot fetch or run anything even if it were tampered with.

Safe: every string that comes from data or models (example texts, outputs, model names, config
values, errors) passes through `esc` (html.escape) on its way into the page. Markup is built only
with `el`, which escapes each child that is not already `Markup`; nothing else concatenates HTML.
"""
from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.compare.paired import Comparison, LmEvalComparison, TextComparison
from harness.errors import BenchError
from harness.task.registry import spec_for
from harness.report.formats import OVER_SEEDS_TITLE, Table
from harness.report.judge import judge_section
from harness.report.leaderboard import SELECTION_NOTE, leaderboard, leaderboard_table
from harness.report.notes import score_notes, statistics_notes
from harness.report.plots import curves_png
from harness.report.run_tables import PER_CLASS_TITLE, comparison_tables, per_class_table
from harness.report.samples import example_texts, label_pairs, label_text, output_pairs
from harness.store import Store
from harness.types import Example

if TYPE_CHECKING:
    from harness.task.spec import TaskSpec

Row = Comparison | TextComparison
TEXT_LIMIT = 600  # characters of an example text or output shown in a sample table cell
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:0 1.5rem 3rem;color:#1d1d1f}
h1{font-size:1.6rem;margin:1.2rem 0 .2rem}h2{margin-top:2rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}
h3{margin:1.6rem 0 .4rem}.meta,.note{color:#555}.note{font-size:.9em}nav a{margin-right:1rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.88em}caption{text-align:left;font-weight:600;
padding:.3rem 0}th,td{border:1px solid #d0d0d0;padding:.25rem .5rem;vertical-align:top;text-align:left}
th{background:#f3f3f3}tbody tr:nth-child(even){background:#fafafa}td.text{min-width:15rem;max-width:38rem;white-space:pre-wrap;
word-break:break-word}.scroll{overflow-x:auto}figure{margin:.6rem 0}img{max-width:100%;height:auto}
figcaption{color:#555;font-size:.9em}section.run{border-top:1px solid #eee;margin-top:1.5rem}
.wrong{color:#b00020}.right{color:#0a7a2f}details{margin:.4rem 0}summary{cursor:pointer;color:#333}
@page{size:A4 landscape;margin:1cm}@media print{body{max-width:none;padding:0;font-size:10px}
.scroll{overflow:visible}td.text{min-width:10rem}tr,figure{break-inside:avoid}h2,h3{break-after:avoid}}
"""


class Markup(str):
    """HTML that is safe as it is: produced by `el`/`esc`, never by formatting outside data in."""


def esc(value: object) -> Markup:
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def _attributes(attrs: dict[str, object]) -> str:
    # class_ -> class, http_equiv -> http-equiv; values are escaped like text (quotes included).
    return "".join(f' {name.rstrip("_").replace("_", "-")}="{esc(value)}"' for name, value in attrs.items()
                   if value is not None)


def el(tag: str, *children: object, **attrs: object) -> Markup:
    """<tag attrs>children</tag>; children that are not Markup are escaped text."""
    return Markup(f"<{tag}{_attributes(attrs)}>" + "".join(esc(child) for child in children) + f"</{tag}>")


def void(tag: str, **attrs: object) -> Markup:
    return Markup(f"<{tag}{_attributes(attrs)}>")


def join(parts: Sequence[object]) -> Markup:
    return Markup("".join(esc(part) for part in parts))


# ---------------------------------------------------------------- what a report shows

@dataclass(frozen=True)
class SampleTable:
    caption: str
    table: Table
    text_columns: tuple[int, ...]  # columns holding free text (wrapped, not one long line)


@dataclass(frozen=True)
class RunSection:
    run_id: str
    title: str
    config: dict[str, Any]
    comparisons: tuple[Table, ...]
    per_class: Table | None  # classification runs: the macro scores' parts, class by class
    curves_png: bytes | None
    samples: tuple[SampleTable, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class SweepSection:
    name: str
    description: str
    heatmap_png: bytes | None
    heatmap_caption: str
    table: Table
    over_seeds: Table | None = None  # mean ± sd per setting, when the grid has a seed axis


@dataclass(frozen=True)
class Report:
    title: str
    store_path: str
    leaderboard: Table
    leaderboard_note: str
    comparisons: tuple[Table, ...]
    runs: tuple[RunSection, ...]
    sweep: SweepSection | None = None
    judge: tuple[Table, list[str]] | None = None  # the LLM-judge table and its notes
    # under the before/after tables: the p-value family, each row's MDE, clustered errors
    comparison_notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- gathering from the store

class ExampleSource:
    """Eval examples of stored runs. The store keeps predictions by example id, not the texts, so
    the texts are re-read from the data with each run's own sampling settings (seeded, so the same
    examples come back). One instance per report: its cache lives and dies with the report."""

    def __init__(self, data_dir: Path | None):
        self.data_dir = data_dir
        self._cache: dict[tuple[Any, ...], dict[str, Example]] = {}

    def spec(self, config: dict[str, Any]) -> TaskSpec | None:
        try:
            return spec_for(config)
        except BenchError:
            return None

    def examples(self, config: dict[str, Any]) -> tuple[dict[str, Example], str]:
        """(eval examples by id, "" or why there are none)."""
        if self.data_dir is None:
            return {}, "example texts are not shown: pass --data-dir (or set BENCH_DATA_DIR) to read them"
        spec = self.spec(config)
        if spec is None:
            return {}, f"example texts are not shown: task {config.get('task')!r} is not registered here"
        from harness.task.data import run_splits, split_settings  # pandas: keeps `bench --help` light

        key = (spec.key, *split_settings(config).values())
        if key not in self._cache:
            try:
                splits = run_splits(spec, config, self.data_dir)
            except BenchError as exc:
                return {}, f"example texts are not shown: {exc}"
            self._cache[key] = {example.id: example for example in splits.eval}
        return self._cache[key], ""


def build_report(store: Store, runs: Sequence[dict[str, Any]], rows: Sequence[Row], data_dir: Path | None,
                 title: str, sweep: SweepSection | None = None, adjust: str = "holm") -> Report:
    """Everything a report shows, read from the store (and the data, for example texts); the
    before/after p-values adjusted by `adjust` over all its rows, as in the markdown report."""
    entries = leaderboard(store, rows)
    note = SELECTION_NOTE if any(e.configs > 1 for e in entries) else ""
    return Report(title, str(store.root), leaderboard_table(entries, adjust), note,
                  tuple(comparison_tables(rows, adjust)), tuple(run_sections(store, runs, rows, data_dir)), sweep,
                  judge_section(store, [row.run_id for row in rows]), tuple(statistics_notes(rows, adjust)))


def run_sections(store: Store, runs: Sequence[dict[str, Any]], rows: Sequence[Row], data_dir: Path | None,
                 samples: int = 10) -> list[RunSection]:
    source = ExampleSource(data_dir)
    sections = []
    for run in runs:
        run_rows = [row for row in rows if row.run_id == run["run_id"]]
        if not run_rows:
            continue
        config = run["config"]
        title = f"{run['model']} · {run['method']} · {run['task']}"
        if run_rows[0].settings:  # a sweep's cells share model, method and task: the settings tell them apart
            title += f" · {run_rows[0].settings}"
        record = store.stage(run["run_id"], "finetuned")
        notes = (*(record.info.get("data_notes", ()) if record else ()), *score_notes(store, run_rows))
        tables = tuple(_sample_table(store, row, source, samples) for row in run_rows
                       if not isinstance(row, LmEvalComparison))  # lm-eval documents are not the task's examples
        sections.append(RunSection(run["run_id"], title, config, tuple(comparison_tables(run_rows)),
                                   per_class_table(store, run_rows),
                                   curves_png(store.curves(run["run_id"]), title), tables, notes))
    return sections


def _sample_table(store: Store, row: Row, source: ExampleSource, count: int) -> SampleTable:
    config = store.run_config(row.run_id) or {}
    examples, missing = source.examples(config)
    spec = source.spec(config)
    # what the model was shown and should have written (for language modelling: a document's
    # held-out prompt and its continuation, not the whole text)
    inputs, references = example_texts(spec, examples.values()) if spec else ({}, {})
    caption = (f"Sample predictions: {row.baseline} -> fine-tuned {row.method}, changed answers first"
               + (f" ({missing})" if missing else ""))
    if isinstance(row, Comparison):
        labels = spec.kind.answer_names() if spec else ()
        body = []
        for before, after in label_pairs(store, row, count):
            body.append((before.example_id, _clip(inputs.get(before.example_id, "")), _name(before.gold, labels),
                         _answer(before, labels), _answer(after, labels)))
        return SampleTable(caption, Table(("id", "text", "gold", "before", "after"), tuple(body)), (1,))
    key = row.delta_metric
    body = []
    for before, after in output_pairs(store, row, count):
        body.append((before.example_id, _clip(inputs.get(before.example_id, "")),
                     _clip(references.get(before.example_id, "")), _clip(_output(before.output)),
                     _value(before.values, key), _clip(_output(after.output)), _value(after.values, key)))
    columns = ("id", "input", "reference", "before", f"{key} before", "after", f"{key} after")
    caption = caption.replace("predictions", "outputs").replace("changed answers first", "largest gains first")
    return SampleTable(caption, Table(columns, tuple(body)), (1, 2, 3, 5))


def _answer(prediction: Any, labels: Sequence[str]) -> str:
    if labels:
        return label_text(prediction, labels)
    return "FAILED" if prediction.label is None else str(prediction.label)


def _name(index: int, labels: Sequence[str]) -> str:
    return labels[index] if 0 <= index < len(labels) else str(index)


def _output(output: str | None) -> str:
    return "(no output: failed)" if output is None else output if output.strip() else "(empty: no answer)"


def _value(values: dict[str, float] | None, key: str) -> str:
    value = (values or {}).get(key)
    return "" if value is None else f"{value:.3f}"


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + " …"


# ---------------------------------------------------------------- rendering

def render(report: Report) -> str:
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    navigation = [el("a", "leaderboard", href="#leaderboard"), el("a", "before / after", href="#comparisons")]
    if report.sweep:
        navigation.insert(0, el("a", "sweep", href="#sweep"))
    if report.judge:
        navigation.append(el("a", "LLM judge", href="#judge"))
    if report.runs:
        navigation.append(el("a", f"runs ({len(report.runs)})", href="#runs"))
    body = [el("header", el("h1", report.title),
               el("p", f"generated {generated} from the store at {report.store_path} · no model loaded",
                  class_="meta"),
               el("nav", *navigation))]
    if report.sweep:
        body.append(_sweep_html(report.sweep))
    leaderboard = [el("h2", "Leaderboard", id="leaderboard"), _table_html(report.leaderboard)]
    if report.leaderboard_note:
        leaderboard.append(el("p", report.leaderboard_note, class_="note"))
    body.append(el("section", *leaderboard))
    comparisons = [el("h2", "Before / after fine-tuning", id="comparisons"),
                   *(_table_html(table) for table in report.comparisons)]
    if report.comparison_notes:
        comparisons.append(el("ul", *(el("li", note) for note in report.comparison_notes), class_="note"))
    body.append(el("section", *comparisons))
    if report.judge:
        table, notes = report.judge
        body.append(el("section", el("h2", "LLM judge", id="judge"), _table_html(table),
                       el("ul", *(el("li", note) for note in notes), class_="note")))
    if report.runs:
        body.append(el("section", el("h2", "Runs", id="runs"), *(_run_html(run) for run in report.runs)))
    head = el("head", void("meta", charset="utf-8"), void("meta", http_equiv="Content-Security-Policy", content=CSP),
              void("meta", name="viewport", content="width=device-width, initial-scale=1"),
              el("title", report.title), el("style", Markup(CSS)))
    return "<!DOCTYPE html>\n" + el("html", head, el("body", *body), lang="en") + "\n"


def _table_html(table: Table, caption: str = "", text_columns: Sequence[int] = ()) -> Markup:
    header = el("thead", el("tr", *(el("th", column, scope="col") for column in table.columns)))
    rows = el("tbody", *(el("tr", *(el("td", cell, class_="text" if i in text_columns else None)
                                    for i, cell in enumerate(row))) for row in table.rows))
    parts = ([el("caption", caption)] if caption else []) + [header, rows]
    return el("div", el("table", *parts), class_="scroll")


def _figure(png: bytes, alt: str, caption: str) -> Markup:
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return el("figure", void("img", src=source, alt=alt), el("figcaption", caption))


def _sweep_html(sweep: SweepSection) -> Markup:
    parts: list[Markup] = [el("h2", f"Sweep {sweep.name}", id="sweep"), el("p", sweep.description, class_="note")]
    if sweep.heatmap_png:
        parts.append(_figure(sweep.heatmap_png, f"heatmap of sweep {sweep.name}", sweep.heatmap_caption))
    parts.append(_table_html(sweep.table))
    if sweep.over_seeds is not None:
        parts += [el("h3", OVER_SEEDS_TITLE), _table_html(sweep.over_seeds)]
    return el("section", *parts)


def _run_html(run: RunSection) -> Markup:
    parts: list[Markup] = [el("h3", run.title, id=f"run-{run.run_id}"), el("p", f"run {run.run_id}", class_="meta")]
    parts += [_table_html(table) for table in run.comparisons]
    if run.per_class:
        parts.append(_table_html(run.per_class, PER_CLASS_TITLE))
    if run.curves_png:
        parts.append(_figure(run.curves_png, f"training curves of {run.run_id}",
                             "Training loss per optimizer step and validation metrics per evaluation "
                             "(finetune/curves.jsonl)."))
    else:
        parts.append(el("p", "No training curves recorded for this run.", class_="note"))
    for sample in run.samples:
        parts.append(_table_html(sample.table, sample.caption, sample.text_columns))
    if run.notes:
        parts.append(el("ul", *(el("li", note) for note in run.notes), class_="note"))
    config_rows = tuple((key, _config_value(value)) for key, value in sorted(run.config.items()))
    parts.append(el("details", el("summary", "configuration"), _table_html(Table(("option", "value"), config_rows))))
    return el("section", *parts, class_="run")


def _config_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
