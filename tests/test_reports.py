"""`bench report` (md, csv, latex, html), `bench export` and the HTML report, from a store built
here: two tiny-model sst2 runs on a copy of the data with hostile example texts, plus a text-task
run written straight into the store with hostile outputs and a hostile model name. The HTML is
checked as text, parsed, and loaded in headless Chromium (skipped, saying why, without it)."""
from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("torch")

from harness.store import Store  # noqa: E402
from harness.types import Prediction  # noqa: E402

SCRIPT = "<script>document.title='PWNED';document.body.setAttribute('data-pwned','1')</script>"
IMG = "\"><img src=x onerror=\"document.title='PWNED'\">"
HOSTILE = (SCRIPT, IMG, "</table></td></tr> a & b; 100% _under_ #hash {braces} $x$")
TEXT_RUN = "samsum__evil__lora__0123456789"
EVIL_MODEL = "evil&co_100%#1 <script>alert(1)</script>"
SMALL = ("--train-samples", "16", "--eval-samples", "16", "--validation-samples", "8")
CHROMIUM_APT = "apt-get install -y --no-install-recommends chromium"


def hostile_data(source: Path, target: Path) -> Path:
    """sst2 with 40 real train rows and an eval split of 6 rows, 3 of them hostile."""
    import pandas as pd

    folder = target / "sst2"
    folder.mkdir(parents=True)
    train = pd.read_parquet(source / "sst2" / "train.parquet").head(40)
    train.to_json(folder / "train.jsonl", orient="records", lines=True)
    evaluation = pd.read_parquet(source / "sst2" / "validation.parquet").head(3)
    rows = [{"idx": 900 + i, "sentence": text, "label": i % 2} for i, text in enumerate(HOSTILE)]
    pd.concat([evaluation, pd.DataFrame(rows)]).to_json(folder / "validation.jsonl", orient="records", lines=True)
    return target


def write_text_run(store: Store) -> None:
    """A summarization run recorded directly: hostile outputs, a hostile model name, curves."""
    config = {"task": "samsum", "model": EVIL_MODEL, "method": "lora", "preset": "quick", "seed": 0,
              "early_stop_metric": "auto", "train_samples": 4, "eval_samples": 2, "validation_samples": 2}

    def metrics(value: float) -> dict:
        return {"n": 2, "failures": 0, "headline": "rougeL", "rougeL": {"value": value, "ci": [0.0, 1.0]},
                "rouge1": {"value": value + 0.1, "ci": [0.0, 1.0]}}

    def outputs(scores: tuple[float, float]) -> list[Prediction]:
        return [Prediction(f"d{i}", 0, None, (), output=HOSTILE[i], values={"rougeL": scores[i]}) for i in range(2)]

    info = {"mode": "prompt", "shots": 0, "peak_memory_mb": 10.0}
    store.complete_stage(TEXT_RUN, "baseline:prompt", config=config, seconds=1.0, metrics=metrics(0.1), info=info,
                         predictions=outputs((0.1, 0.1)))
    store.complete_stage(TEXT_RUN, "finetune", config=config, seconds=2.0,
                         metrics={"best_validation": 1.5, "best_step": 2},
                         info={"params": {"base": 1000, "added": 10, "total": 1010, "trainable": 10,
                                          "trainable_pct": 0.99}, "train_seconds": 2.0, "tokens_per_second": 50.0,
                               "peak_memory_mb": 12.0},
                         curves=[{"step": 1, "loss": 2.0, "lr": 1e-3}, {"step": 2, "loss": 1.6, "lr": 5e-4},
                                 {"step": 2, "val_loss": 1.5}])
    store.complete_stage(TEXT_RUN, "finetuned", config=config, seconds=1.0, metrics=metrics(0.3), info=info,
                         predictions=outputs((0.5, 0.2)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model, data_dir) -> dict:
    """The store: sst2 lora at two learning rates (one model x method, two configs) + the text run."""
    from harness.cli import main

    root = tmp_path_factory.mktemp("reports")
    data = hostile_data(data_dir, root / "data")
    results = root / "results"
    model = tiny_model("gpt2")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("BENCH_DATA_DIR", raising=False)
        patch.setenv("BENCH_CACHE", str(root / "cache"))
        for lr in ("1e-3", "1e-2"):
            assert main(["run", "sst2", "--models", str(model), "--data-dir", str(data), "--results", str(results),
                         "--lr", lr, *SMALL]) == 0
    store = Store(results)
    write_text_run(store)
    store.close()
    return {"results": results, "data": data, "model": str(model)}


class Dom(HTMLParser):
    """Elements, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.title += data

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)


def assert_safe(page: str) -> Dom:
    """No script element and no event handler anywhere; every hostile string is there as text;
    nothing is fetched from outside the file."""
    dom = Dom(page)
    assert dom.count("script") == 0
    assert not [(tag, name) for tag, attrs in dom.tags for name in attrs if name.startswith("on")]
    assert not [attrs for tag, attrs in dom.tags if tag in ("link", "iframe", "object", "embed")]
    for tag, attrs in dom.tags:
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/png;base64,"), attrs
    text = "".join(dom.text)
    for hostile in HOSTILE + (EVIL_MODEL,):
        assert hostile in text, hostile
    assert "PWNED" not in dom.title
    return dom


def test_markdown_report_has_before_after_and_leaderboard(bench, built):
    code, out, err = bench("report", "--results", built["results"])
    assert code == 0, err
    assert "## Before / after fine-tuning" in out and "## Leaderboard" in out
    leaderboard = out.split("## Leaderboard")[1]
    header = next(line for line in leaderboard.splitlines() if line.startswith("| task"))
    for column in ("baseline score", "fine-tuned", "Δ [95% CI]", "| p |", "| n |", "fail b/a", "trainable %",
                   "train s", "peak MB", "configs"):
        assert column in header, column
    rows = [line for line in leaderboard.splitlines() if line.startswith(("| sst2", "| samsum"))]
    assert len(rows) == 2  # one row per task x model x method: the two sst2 configs share one
    assert "| 2 |" in rows[0] or "| 2 |" in rows[1]
    assert "best validation score" in leaderboard


def test_leaderboard_selects_by_validation_and_keeps_every_config_in_the_table(built):
    from harness.report.leaderboard import collect, leaderboard, select_runs

    store = Store(built["results"])
    try:
        rows = collect(store, select_runs(store))
        entries = leaderboard(store, rows)
    finally:
        store.close()
    assert len(rows) == 3  # both sst2 configs stay in the before/after rows
    (sst2,) = [e for e in entries if e.task == "sst2"]
    assert sst2.configs == 2 and sst2.selected_by == "validation f1_macro" and sst2.n == 6
    (text,) = [e for e in entries if e.task == "samsum"]
    assert text.metric == "rougeL" and text.after == pytest.approx(0.3) and text.trainable_pct == pytest.approx(0.99)


def test_runs_that_stopped_on_different_metrics_are_ranked_by_one_they_all_recorded(built, tmp_path):
    """One sst2 config early-stopped on accuracy, the other on macro F1: their best scores do not
    compare, but every curve records val_f1_macro, so that one ranks them (not "the latest")."""
    import json
    import sqlite3

    from harness.report.leaderboard import collect, leaderboard, select_runs

    results = tmp_path / "results"
    shutil.copytree(built["results"], results)
    with sqlite3.connect(results / "bench.sqlite") as db:
        (run_id, config), *_ = db.execute("SELECT run_id, config FROM runs WHERE task = 'sst2' ORDER BY created_at")
        db.execute("UPDATE runs SET config = ? WHERE run_id = ?",
                   (json.dumps({**json.loads(config), "early_stop_metric": "accuracy"}), run_id))
    store = Store(results)
    try:
        rows = [row for row in collect(store, select_runs(store)) if row.task == "sst2"]
        (entry,) = leaderboard(store, rows)
        best = {row.run_id: max(p["val_f1_macro"] for p in store.curves(row.run_id) if "val_f1_macro" in p)
                for row in rows}
    finally:
        store.close()
    assert entry.selected_by == "validation f1_macro" and entry.configs == 2
    assert best[entry.run_id] == max(best.values())


def test_csv_outputs_parse(bench, built):
    code, out, err = bench("report", "--results", built["results"], "--format", "csv", "--table", "leaderboard")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {row["task"] for row in rows} == {"sst2", "samsum"}
    for row in rows:
        for name in ("before", "after", "delta", "delta_ci_low", "delta_ci_high", "p_value", "trainable_pct",
                     "train_seconds", "peak_memory_mb"):
            float(row[name])
        assert int(row["n"]) > 0
    code, out, err = bench("report", "--results", built["results"], "--format", "csv", "--task", "sst2")
    assert code == 0 and out.startswith("run_id,task,")
    comparisons = list(csv.DictReader(io.StringIO(out)))
    assert len(comparisons) == 2
    for row in comparisons:  # a CI is two plain numbers, never a bracketed string with float noise
        low, high = float(row["delta_ci_low"]), float(row["delta_ci_high"])
        assert low <= float(row["delta_accuracy"]) <= high and len(row["delta_ci_low"]) <= 13
        assert "data_notes" in row


def test_export_writes_csv_and_markdown_leaderboards(bench, built, tmp_path):
    target = tmp_path / "exports" / "sst2"
    code, out, err = bench("export", "--results", built["results"], "--to", target, "--task", "sst2")
    assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == ["comparisons.csv", "comparisons.md", "leaderboard.csv",
                                                        "leaderboard.md", "per_class.csv"]
    comparisons = (target / "comparisons.md").read_text()
    assert comparisons.startswith("# Before / after fine-tuning\n\n| task | model |")
    assert "\n- sst2: train 16 (class-balanced sample of 32)" in comparisons  # the data notes, as under `bench run`
    (row,) = csv.DictReader(io.StringIO((target / "leaderboard.csv").read_text()))
    assert row["task"] == "sst2" and row["configs"] == "2"
    markdown = (target / "leaderboard.md").read_text().splitlines()
    assert markdown[0] == "# Leaderboard"
    table = [line for line in markdown if line.startswith("|")]
    assert table[0].startswith("| task | model | method |") and table[1].startswith("|---") and len(table) == 3


@pytest.mark.parametrize("target", ["../escape", "a/../../b", "sub/.."])
def test_export_refuses_dotdot(bench, built, tmp_path, target, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = bench("export", "--results", built["results"], "--to", target)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: --to") and "'..'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_report_errors_are_one_line(bench, built, tmp_path):
    code, out, err = bench("report", "--results", built["results"], "--runs", "no-such-run")
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "'no-such-run' is not in the store" in err
    code, out, err = bench("report", "--results", tmp_path / "empty")
    assert code == 2 and "no results store" in err and not (tmp_path / "empty").exists()


def test_latex_escapes_specials(bench, built):
    code, out, err = bench("report", "--results", built["results"], "--format", "latex")
    assert code == 0, err
    # classification, its per-class table, text, leaderboard
    assert out.count(r"\begin{tabular}") == out.count(r"\end{tabular}") == 4
    assert r"evil\&co\_100\%\#1 \textless{}script\textgreater{}alert(1)\textless{}/script\textgreater{}" in out
    body = [line for line in out.splitlines() if not line.startswith("%")]
    for line in body:
        assert not re.search(r"(?<!\\)[%#_$^~]", line.replace("$\\Delta$", "").replace("$\\to$", "")
                             .replace("$-$", "")), line  # every special escaped
    unescaped = lambda char: len(re.findall(r"(?<!\\)" + re.escape(char), out))  # noqa: E731
    assert unescaped("{") == unescaped("}")
    for block in out.split(r"\begin{tabular}")[1:]:
        spec = re.match(r"\{([lr]+)\}", block).group(1)
        rows = [line for line in block.split(r"\end{tabular}")[0].splitlines() if line.endswith(r"\\")]
        assert rows and all(len(re.findall(r"(?<!\\)&", row)) == len(spec) - 1 for row in rows)


def test_html_report_is_self_contained_and_escaped(bench, built, tmp_path):
    code, out, err = bench("report", "--results", built["results"], "--format", "html", "--data-dir", built["data"])
    assert code == 0, err
    path = Path(out.strip())
    assert path.parent == built["results"] / "reports" and path.name.startswith("report__all__")
    page = path.read_text()
    assert not re.search(r"<\s*script", page, re.IGNORECASE)
    assert "&lt;script&gt;document.title=&#x27;PWNED&#x27;" in page
    assert "http://" not in page and "https://" not in page
    dom = assert_safe(page)
    assert dom.count("table") >= 8  # leaderboard, 2 before/after, per run: comparison + samples + config
    assert dom.count("table") == page.count("</table>")  # the hostile </table> closed nothing
    assert dom.count("img") == 3  # training curves of each run
    text = "".join(dom.text)
    assert "negative (p=" in text and "rougeL" in text  # classification samples, text samples
    assert "example texts are not shown" in text  # the text run's data is not in this data dir


def test_html_single_run_name_and_out(bench, built, tmp_path):
    store = Store(built["results"])
    run_id = next(run["run_id"] for run in store.runs("sst2"))
    store.close()
    code, out, err = bench("report", "--results", built["results"], "--runs", run_id, "--format", "html")
    assert code == 0 and out.strip() == str(built["results"] / "reports" / f"{run_id}.html")
    page = Path(out.strip()).read_text()
    assert "pass --data-dir" in page  # without data, samples show ids and say how to get texts
    code, out, err = bench("report", "--results", built["results"], "--format", "html", "--out", tmp_path / "r.html")
    assert code == 0 and (tmp_path / "r.html").is_file()


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"chromium not installed (CI: {CHROMIUM_APT})")


def test_html_renders_in_headless_chromium_without_running_data(bench, built, tmp_path):
    browser = chromium()
    code, out, err = bench("report", "--results", built["results"], "--format", "html", "--data-dir", built["data"],
                           "--out", tmp_path / "report.html")
    assert code == 0, err
    url = (tmp_path / "report.html").as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = assert_safe(dom.stdout)  # the DOM after load: what any script would have changed
    assert parsed.title.startswith("bench report")
    assert not [tag for tag, attrs in parsed.tags if "data-pwned" in attrs]  # the data's script never ran
    assert parsed.count("table") >= 8 and parsed.count("img") == 3
    shot = tmp_path / "shot.png"
    done = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 50  # text, tables and figures, not a blank page


def test_score_warnings_name_the_configuration_they_belong_to(tmp_path):
    """Two learning rates of one model x method: the table rows carry their settings, and so must
    the warnings under the table, or 'every answer is positive' and '... negative' both read as
    the same model's."""
    from types import SimpleNamespace

    from harness.report.notes import score_notes

    store = Store(tmp_path / "results")
    rows = []
    for run_id, lr, answer in (("run_a", "0.01", "positive"), ("run_b", "0.001", "negative")):
        config = {"task": "sst2", "model": "m", "method": "full", "preset": "quick"}
        for stage in ("baseline:head", "finetuned"):
            store.complete_stage(run_id, stage, config=config, seconds=1.0, info={},
                                 metrics={"warnings": [f"every answer is '{answer}'"]})
        rows.append(SimpleNamespace(run_id=run_id, task="sst2", model="m", method="full", baseline="head (untrained)",
                                    settings=f"lr={lr}"))
    notes = score_notes(store, rows)
    store.close()
    assert "warning: m full (lr=0.01), fine-tuned: every answer is 'positive'" in notes
    assert "warning: m full (lr=0.001), fine-tuned: every answer is 'negative'" in notes


def test_free_text_cells_keep_a_readable_width_on_a_narrow_screen():
    """`word-break` lets a text cell shrink to a few characters, so on a phone (or any window
    narrower than the table) the sample texts came out one syllable per line. A text cell keeps
    a minimum width; the table scrolls sideways in its .scroll box instead."""
    from harness.report.html import CSS

    rule = re.search(r"td\.text\{([^}]*)\}", CSS).group(1)
    width = re.search(r"min-width:\s*([\d.]+)rem", rule)
    assert width and float(width.group(1)) >= 12, rule
    assert re.search(r"\.scroll\{[^}]*overflow-x:\s*auto", CSS)


def test_training_curves_of_a_single_step_have_whole_step_ticks(monkeypatch):
    """A run that took one optimizer step (or evaluated once) drew its lone point over ticks of
    0.945, 0.960 ... 1.050: fractional optimizer steps. The axis is widened to whole steps."""
    from harness.report import plots

    drawn = []
    monkeypatch.setattr(plots, "_png", lambda figure: drawn.append(figure) or b"png")
    assert plots.curves_png([{"step": 1, "loss": 6.7}, {"step": 1, "val_loss": 6.7}], "one step") == b"png"
    (figure,) = drawn
    for axes in figure.axes:
        ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert 1 in ticks


def test_printed_report_keeps_every_table_column():
    """Printed (or saved as PDF), each wide table sat in an overflow-x:auto box: on a portrait page
    the columns right of the box (fail b/a .. configs, trainable .. peak MB) were cut off, with no
    scroll bar on paper. Print uses a landscape page, a smaller font, and lets the box overflow."""
    from harness.report.html import CSS

    assert re.search(r"@page\{[^}]*size:[^};]*landscape", CSS)
    block = CSS.split("@media print{", 1)[1]
    assert re.search(r"\.scroll\{overflow:visible\}", block)
    assert re.search(r"body\{[^}]*font-size:\s*\d+px", block)


def test_html_run_sections_of_one_model_and_method_are_told_apart_by_their_settings(bench, built, tmp_path):
    """Two learning rates of one model x method (a sweep's cells): every run section had the same
    heading and the same training-curve title; the settings that differ now name each one."""
    code, out, err = bench("report", "--results", built["results"], "--format", "html", "--out", tmp_path / "r.html")
    assert code == 0, err
    headings = re.findall(r'<h3 id="run-sst2[^"]*">([^<]*)</h3>', (tmp_path / "r.html").read_text())
    assert len(headings) == 2 and len(set(headings)) == 2, headings
    assert all("lr=" in heading for heading in headings), headings


def test_heatmap_column_labels_do_not_overlap(monkeypatch):
    """A sweep over models puts Hub ids on the heatmap's x axis; level, they ran into each other
    ("HuggingFaceTB/SmolLSt2-135M-transformers/...") and no column could be read."""
    from harness.report import plots

    drawn = []
    monkeypatch.setattr(plots, "_png", lambda figure: drawn.append(figure) or b"png")
    models = ["HuggingFaceTB/SmolLM2-135M-Instruct", "sentence-transformers/all-MiniLM-L6-v2",
              "Qwen/Qwen2.5-0.5B-Instruct"]
    plots.heatmap_png([[0.81, 0.84, 0.79], [0.6, 0.7, float("nan")]], ["true", "false"], models,
                      row_axis="freeze", col_axis="model", title="sst2: accuracy", colorbar_label="accuracy")
    (figure,) = drawn
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (axes, *_) = figure.axes
    boxes = [label.get_window_extent(renderer) for label in axes.get_xticklabels() if label.get_text()]
    assert len(boxes) == 3
    for left, right in zip(boxes, boxes[1:]):
        assert not left.overlaps(right), (left, right)
    for box in boxes:  # and none is cut off at the figure's edge
        assert box.x0 >= 0 and box.y0 >= 0, box


def test_per_class_scores_are_shown_before_and_after(bench, built, tmp_path):
    """The macro scores' parts, class by class, read from each stage's stored scores: in the
    markdown report, the HTML run sections and export's per_class.csv (the same numbers)."""
    store = Store(built["results"])
    try:
        run_id = store.runs("sst2")[0]["run_id"]
        before = store.stage(run_id, "baseline:prompt").metrics["per_class"]
        after = store.stage(run_id, "finetuned").metrics["per_class"]
    finally:
        store.close()
    code, out, err = bench("report", "--results", built["results"], "--runs", run_id)
    assert code == 0, err
    section = out.split("## Per class: precision, recall and F1")[1].split("## Leaderboard")[0]
    for name in ("negative", "positive"):
        b, a = before[name], after[name]
        assert (f"| {name} | {a['support']} | {b['precision']:.3f} → {a['precision']:.3f} | "
                f"{b['recall']:.3f} → {a['recall']:.3f} | {b['f1']:.3f} → {a['f1']:.3f} | "
                f"{a['f1'] - b['f1']:+.3f} |") in section, section
    code, _, err = bench("export", "--results", built["results"], "--runs", run_id, "--to", tmp_path / "x")
    assert code == 0, err
    rows = {row["class"]: row for row in csv.DictReader(io.StringIO((tmp_path / "x" / "per_class.csv").read_text()))}
    assert float(rows["positive"]["f1_after"]) == pytest.approx(after["positive"]["f1"], rel=1e-5, abs=1e-9)
    assert int(rows["negative"]["support"]) == after["negative"]["support"]
    code, _, err = bench("export", "--results", built["results"], "--task", "sst2", "--to", tmp_path / "both")
    assert code == 0, err  # two learning rates of one model x lora: each row says which
    exported = (tmp_path / "both" / "per_class.csv").read_text()
    settings = {row["settings"] for row in csv.DictReader(io.StringIO(exported))}
    assert settings == {"lr=0.001", "lr=0.01"}, settings
    code, _, err = bench("report", "--results", built["results"], "--runs", run_id, "--format", "html",
                         "--data-dir", built["data"], "--out", tmp_path / "r.html")
    assert code == 0, err
    assert "<caption>Per class: precision, recall and F1" in (tmp_path / "r.html").read_text()


def test_export_help_names_what_it_writes():
    """`bench --help` says what `bench export` writes: every table as CSV and markdown, the judge table too."""
    from harness.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    (line,) = [choice.help for choice in commands._choices_actions if choice.dest == "export"]
    assert "judge" in line and "CSV and markdown" in line and "before/after" in line
