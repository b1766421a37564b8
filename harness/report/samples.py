"""A few examples under a before/after table: sample predictions (classification) and sample
outputs (text tasks), chosen from the stored predictions of the baseline and fine-tuned stages."""
from __future__ import annotations

from typing import Iterable, Sequence

from harness.compare.paired import Comparison, TextComparison
from harness.compare.stats import label_probabilities
from harness.report.formats import baseline_stage
from harness.store import Store
from harness.task.spec import TaskSpec
from harness.types import Example, Prediction


def sample_outputs(store: Store, row: TextComparison, texts: dict[str, str], references: dict[str, str],
                   count: int = 3) -> str:
    """Text tasks: the examples the fine-tuned model improved most, then the one it hurt most."""
    key = row.delta_metric
    chosen = output_pairs(store, row, count)
    lines = [f"Sample outputs, {row.model} ({row.baseline} -> fine-tuned {row.method}):"]
    for b, a in chosen:
        lines.append(f"  [{b.example_id}] input: {_short(texts.get(b.example_id, ''))}")
        lines.append(f"      reference: {_short(references.get(b.example_id, ''))}")
        for name, p in (("before", b), ("after ", a)):
            shown = "(no output: failed)" if p.output is None else _short(p.output) if p.output.strip() else \
                "(empty: no answer)"
            lines.append(f"      {name} ({key} {(p.values or {}).get(key, float('nan')):.3f}): {shown}")
    return "\n".join(lines)


def output_pairs(store: Store, row: TextComparison, count: int) -> list[tuple[Prediction, Prediction]]:
    """(before, after) of the `count - 1` examples fine-tuning improved most, then the one it hurt most."""
    before, after = store.predictions(row.run_id, baseline_stage(row)), store.predictions(row.run_id, "finetuned")
    key = row.delta_metric
    sign = -1.0 if row.lower_is_better else 1.0
    gains = sorted(zip(before, after), key=lambda pair: -sign * ((pair[1].values or {}).get(key, 0.0)
                                                                 - (pair[0].values or {}).get(key, 0.0)))
    return gains[: count - 1] + gains[-1:] if len(gains) >= count else gains


def _short(text: str, limit: int = 110) -> str:
    flat = " ".join(text.split())
    return repr(flat[:limit] + ("..." if len(flat) > limit else ""))


def sample_predictions(store: Store, row: Comparison, labels: Sequence[str], texts: dict[str, str],
                       count: int = 4) -> str:
    """Examples where the fine-tuned model changed its answer first (fixed, then broken), then agreed."""
    chosen = label_pairs(store, row, count)
    lines = [f"Sample predictions, {row.model} ({row.baseline} -> fine-tuned {row.method}):"]
    for b, a in chosen:
        text = " ".join(texts.get(b.example_id, "").split())
        lines.append(f"  [{b.example_id}] {text[:90]!r}{'...' if len(text) > 90 else ''}")
        lines.append(f"      gold {labels[b.gold]}  |  before {label_text(b, labels)}  |  after {label_text(a, labels)}")
    return "\n".join(lines)


def label_pairs(store: Store, row: Comparison, count: int) -> list[tuple[Prediction, Prediction]]:
    """(before, after) pairs: up to `count // 2` fixed by fine-tuning, then up to `count // 4` broken,
    then unchanged answers, then the rest (2 fixed + 1 broken of 4, as the terminal always showed)."""
    before, after = store.predictions(row.run_id, baseline_stage(row)), store.predictions(row.run_id, "finetuned")
    pairs = list(zip(before, after))
    fixed = [i for i, (b, a) in enumerate(pairs) if b.label != b.gold and a.label == a.gold]
    broken = [i for i, (b, a) in enumerate(pairs) if b.label == b.gold and a.label != a.gold]
    same = [i for i, (b, a) in enumerate(pairs) if b.label == a.label]
    order = fixed[: max(1, count // 2)] + broken[: max(1, count // 4)] + same + list(range(len(pairs)))
    return [pairs[i] for i in list(dict.fromkeys(order))[:count]]


def label_text(prediction: Prediction, labels: Sequence[str]) -> str:
    """"positive (p=0.61)", or FAILED when the example could not be scored."""
    if prediction.label is None:
        return "FAILED"
    return f"{labels[prediction.label]} (p={label_probabilities(prediction.scores)[prediction.label]:.2f})"


def example_texts(spec: TaskSpec, examples: Iterable[Example]) -> tuple[dict[str, str], dict[str, str]]:
    """Example id -> what the model was shown (a document's held-out prompt, for language
    modelling), and id -> what it should have written (references, or the document's continuation)."""
    return spec.kind.shown(list(examples))
