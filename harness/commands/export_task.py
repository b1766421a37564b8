"""`bench export-task TASK --to DIR`: a bench classification task as an lm-eval YAML task.

The YAML carries bench's exact zero-shot prompt (its str.format template rewritten as Jinja), its
verbalizers as the choices (each with its own leading space, so lm-eval's target delimiter is
empty) and, beside it as JSONL, the eval examples a `bench run` with the same options evaluates,
in bench's order. lm-eval scores each choice by its summed log-likelihood after the prompt and
takes the argmax, as bench's prompt baseline does, so `lm_eval --tasks bench_<task>
--include_path DIR` reproduces bench's baseline predictions on the same examples.

Where the two can part: bench clips a field that would overflow --max-length (lm-eval cuts the
whole context from the left), and tokenizers that prepend a BOS token get one in bench's prompts
and none in lm-eval's (its default for most models).
"""
from __future__ import annotations

import argparse
import json
import string
from pathlib import Path
from typing import Any, Mapping

from harness.commands.common import add_task_arguments, output_path, overrides, task_options
from harness.errors import BenchError
from harness.resolve import resolve
from harness.task.registry import get_task
from harness.task.spec import TaskSpec

EXPORT_MODEL = "lm-eval-export"  # the config's model slot: no model is loaded, only the splits are built


NAME = "export-task"


def add_parser(commands: Any) -> None:
    export_task = commands.add_parser(NAME, help="write a classification task as an lm-eval YAML task "
                                      "(bench's prompt, verbalizers and eval examples)",
                                      description="Example: bench export-task sst2 --to lm_tasks/ --data-dir DATA; "
                                      "then lm_eval --tasks bench_sst2 --include_path lm_tasks/")
    add_task_arguments(export_task)
    export_task.add_argument("--to", required=True, help="folder to create/fill (no '..' components)")


def run(args: argparse.Namespace) -> int:
    return export_task_command(args, overrides(args), output_path("--to", args.to))


def export_task_command(args: argparse.Namespace, overrides: Mapping[str, Any], target: Path) -> int:
    from harness.store import atomic_write  # lazy: pandas and sqlite3 stay out of `bench --help`
    from harness.task.data import data_dir_from, run_splits

    spec = get_task(args.task, **task_options(args))
    if not spec.kind.discrete:
        raise BenchError(f"export-task writes classification tasks (lm-eval multiple choice); {spec.name} is a "
                         "text task: lm-eval's generate_until tasks cannot score it as bench does")
    template = jinja_template(spec)
    if target.exists() and not target.is_dir():
        raise BenchError(f"--to {args.to} exists and is not a folder")
    config = resolve(spec, EXPORT_MODEL, overrides, args.preset or "quick")
    if config.shots:
        raise BenchError("export-task writes the zero-shot prompt; bench's few-shot demonstrations are chosen by "
                         "its own seed and lm-eval's would differ: drop --shots")
    examples = run_splits(spec, config.to_dict(), data_dir_from(args.data_dir)).eval
    name = f"bench_{spec.key}".replace("-", "_")
    fields = spec.kind.fields
    rows = "".join(json.dumps({"id": e.id, **dict(zip(fields, e.texts)), "label": e.label}, ensure_ascii=False) + "\n"
                   for e in examples)
    data_file = target.resolve() / f"{name}.jsonl"
    atomic_write(data_file, rows)
    atomic_write(target / f"{name}.yaml", task_yaml(spec, name, template, data_file, len(examples)))
    print(target / f"{name}.yaml")
    print(data_file)
    return 0


def jinja_template(spec: TaskSpec) -> str:
    """The task's str.format prompt as the Jinja template lm-eval renders: `{field}` -> `{{field}}`,
    literal text kept raw (a literal brace, `{{` in str.format, must not start a Jinja tag)."""
    if spec.formatter is not None:
        raise BenchError(f"task {spec.name} builds its prompt in Python (a formatter), which a YAML template "
                         "cannot express; only str.format prompts export")
    parts = []
    for literal, field, format_spec, conversion in string.Formatter().parse(spec.prompt):
        if literal:
            parts.append("{% raw %}" + literal + "{% endraw %}" if any(c in literal for c in "{}%#") else literal)
        if field is None:
            continue
        if format_spec or conversion or field not in spec.kind.fields or not field.isidentifier():
            raise BenchError(f"task {spec.name}: prompt field {{{field}{'!' + conversion if conversion else ''}"
                             f"{':' + format_spec if format_spec else ''}}} has no Jinja equivalent here; only "
                             "plain {field} names of the task's text columns export")
        parts.append("{{" + field + "}}")
    return "".join(parts)


def task_yaml(spec: TaskSpec, name: str, template: str, data_file: Path, count: int) -> str:
    """The YAML text. Strings are written as JSON strings, which YAML reads as double-quoted scalars."""
    labels = ", ".join(f"{label} = {verbalizer!r}" for label, verbalizer in zip(spec.kind.labels, spec.kind.verbalizers))
    lines = [
        f"# Written by `bench export-task {spec.key}`: bench's zero-shot prompt, verbalizers and its {count} eval",
        "# examples (bench's order; doc id = row). Each choice is scored by its summed log-likelihood after the",
        f"# prompt, as bench's prompt baseline does. Labels: {labels}.",
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(data_file))}",
        "test_split: test",
        "output_type: multiple_choice",
        f"doc_to_text: {json.dumps(template, ensure_ascii=False)}",
        f"doc_to_choice: {json.dumps(list(spec.kind.verbalizers), ensure_ascii=False)}",
        'target_delimiter: ""',  # each verbalizer carries its own leading space
        "doc_to_target: label",
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
    ]
    return "\n".join(lines) + "\n"
