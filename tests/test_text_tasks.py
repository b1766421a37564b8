"""Text tasks end to end on tiny models and real data (samsum, squad_v2 both modes, alpaca,
wikitext), `bench rescore` from stored outputs alone, and the generation/perplexity backends
against their naive definitions."""
from __future__ import annotations

import ast
import html
import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from harness.backends.generate import generate_batched, rolling_nll  # noqa: E402
from harness.types import Example, Prediction  # noqa: E402

SMALL = ("--train-samples", "16", "--eval-samples", "8", "--validation-samples", "4", "--batch-size", "8")
GENERATE = ("--max-new-tokens", "8")  # only tasks that generate from a prompt take it


def stored(results: Path, stage: str) -> tuple[dict, list[dict]]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        (metrics,) = db.execute("SELECT metrics FROM stages WHERE stage=?", (stage,)).fetchone()
        rows = db.execute("SELECT output, metric_values FROM predictions WHERE stage=? ORDER BY idx", (stage,))
        predictions = [{"output": r[0], "values": json.loads(r[1])} for r in rows]
    return json.loads(metrics), predictions


@pytest.mark.parametrize("task, family, extra, headline", [
    ("samsum", "gpt2", ("--max-length", "160", *GENERATE), "rougeL"),
    ("samsum", "t5", ("--max-length", "160", *GENERATE), "rougeL"),
    ("squad_v2", "bert", ("--max-length", "128"), "f1"),
    ("squad_v2", "llama", ("--mode", "generate", "--max-length", "192", *GENERATE), "f1"),
    ("alpaca", "gpt_neo", ("--max-response-chars", "512", "--max-length", "192", *GENERATE), "rougeL"),
    ("wikitext", "llama", ("--max-length", "64"), "perplexity"),
])
def test_text_task_runs_end_to_end(task, family, extra, headline, bench, data_dir, tiny_model, tmp_path):
    code, out, err = bench("run", task, "--models", tiny_model(family), "--data-dir", data_dir, "--results", tmp_path,
                           *SMALL, *extra)
    assert code == 0, err
    assert f"| {headline} before [95% CI] |" in out and "| 8 | 0/0 |" in out
    metrics, predictions = stored(tmp_path, "finetuned")
    assert metrics["headline"] == headline and metrics[headline]["value"] >= 0
    assert len(predictions) == 8 and all(p["output"] is not None for p in predictions)
    per_example = {"perplexity": "nll"}.get(headline, headline)
    assert all(per_example in p["values"] for p in predictions)
    if task in ("samsum", "alpaca"):  # reference perplexity on response tokens, next to the text metrics
        assert metrics["perplexity"]["value"] > 1 and all("nll" in p["values"] for p in predictions)
    if "bleu" in metrics:  # what a BLEU change is made of is said under the table
        bleu = metrics["bleu"]
        assert ("BLEU n-gram precisions (1/2/3/4-gram) " in out
                and f"→ {'/'.join(f'{p:.1f}' for p in bleu['precisions'])}, brevity penalty " in out), out
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "checkpoint" / "bench_checkpoint.json").is_file()
    # The HTML report's sample table shows what the terminal shows: for wikitext, a document's
    # held-out prompt and its continuation as the reference (not the whole text and "(no answer)").
    code, _, err = bench("report", "--results", tmp_path, "--data-dir", data_dir, "--format", "html",
                         "--out", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    terminal = [ast.literal_eval(line.split(": ", 1)[1]) for line in out.splitlines()
                if line.strip().startswith(("input:", "reference:"))]
    assert code == 0 and terminal, err
    flat_page = " ".join(page.split())  # the terminal flattens whitespace; the page keeps it
    assert all(html.escape(" ".join(text[:40].rstrip(".").split())) in flat_page for text in terminal)
    if task == "wikitext":
        assert "(no answer)" not in page
        # the leaderboard's delta is of NLL per token (what is resampled), and says so
        code, report, _ = bench("report", "--results", tmp_path, "--format", "md")
        (row,) = [line for line in report.splitlines() if line.startswith("| wikitext ") and "lower is better" in line]
        assert code == 0 and "| perplexity (lower is better) |" in row and "] nll |" in row, row


def test_rescore_recomputes_metrics_without_the_model(bench, data_dir, tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model("gpt2"), model)
    results = tmp_path / "results"
    code, first, err = bench("run", "samsum", "--models", model, "--data-dir", data_dir, "--results", results, *SMALL,
                             *GENERATE, "--max-length", "160")
    assert code == 0, err
    before, _ = stored(results, "finetuned")
    with sqlite3.connect(results / "bench.sqlite") as db:  # damage the stored metrics; outputs stay
        db.execute("UPDATE stages SET metrics = '{}' WHERE stage = 'finetuned'")
        db.execute("UPDATE predictions SET metric_values = NULL")
    shutil.rmtree(model)  # rescoring must not need the model
    (run_id,) = [p.name for p in (results / "runs").iterdir()]
    code, second, err = bench("rescore", run_id, "--results", results, "--data-dir", data_dir)
    assert code == 0, err
    after, predictions = stored(results, "finetuned")
    assert after["rougeL"] == before["rougeL"] and after["bleu"] == before["bleu"]
    assert all("rougeL" in p["values"] for p in predictions)
    table = [line for line in first.splitlines() if line.startswith("| ")]
    assert table and all(line in second for line in table)  # the same before/after table
    # Same example ids, other references: the outputs were not made for these, so nothing is rescored.
    changed = tmp_path / "changed" / "samsum"
    shutil.copytree(Path(data_dir) / "samsum", changed)
    test = pd.read_parquet(changed / "test.parquet")
    test.assign(summary="a different summary").to_parquet(changed / "test.parquet")
    code, _, err = bench("rescore", run_id, "--results", results, "--data-dir", changed.parent)
    assert code == 2 and err.startswith("error: the data files differ from the ones"), err
    assert stored(results, "finetuned")[0] == after


def test_generation_needs_room_for_the_prompt(bench, data_dir, tiny_model, tmp_path):
    """samsum generates 60 tokens: --max-length 80 would leave the dialogue 20, which is not a prompt."""
    code, out, err = bench("run", "samsum", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                           "--results", tmp_path / "r", "--max-length", "80")
    assert code == 2 and err.strip() == ("error: --max-length 80 leaves 20 prompt tokens after 60 generated ones "
                                         "(--max-new-tokens); use --max-length 188 or more, or a smaller "
                                         "--max-new-tokens")
    assert not (tmp_path / "r").exists()
    from harness.errors import BenchError
    from harness.task.prompts import build_prompts
    from harness.task.registry import spec_for

    spec = spec_for({"task": "samsum"})
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model("gpt2"))
    example = Example("0", ("Amanda: I baked cookies. Do you want some?\nJerry: Sure!",), -1, ("cookies",))
    fixed = len(build_prompts(spec, tokenizer, [Example("1", ("",), -1, ())], 1000, chat=False, strip_eos=True)[0])
    assert len(build_prompts(spec, tokenizer, [example], fixed + 8, chat=False, strip_eos=True)[0]) <= fixed + 8
    with pytest.raises(BenchError, match=f"the samsum prompt template alone takes {fixed} tokens, .* by at least 1$"):
        build_prompts(spec, tokenizer, [example], fixed + 7, chat=False, strip_eos=True)


def test_rescore_of_unknown_run_is_a_clear_error(bench, data_dir, tiny_model, tmp_path):
    code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", tmp_path,
                         "--train-samples", "8", "--eval-samples", "8", "--validation-samples", "4")
    assert code == 0
    code, _, err = bench("rescore", "no-such-run", "--results", tmp_path)
    assert code == 2 and err.startswith("error: no run 'no-such-run'")


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5"])
def test_batched_generation_equals_one_at_a_time(family, tiny_model):
    """Length-sorted, left-padded batches must not change greedy outputs."""
    path = tiny_model(family)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    seq2seq = family == "t5"
    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(path)
    texts = ["Summary of the film:", "A long dialogue about the weather and the trains that were late again:",
             "Question: who won? Answer:", "The cat"]
    prompts = [tokenizer(t, add_special_tokens=seq2seq)["input_ids"] for t in texts]
    batched = generate_batched(model, tokenizer, prompts, max_new_tokens=12, batch_size=4, seq2seq=seq2seq)
    single = [generate_batched(model, tokenizer, [p], max_new_tokens=12, batch_size=1, seq2seq=seq2seq)[0]
              for p in prompts]
    assert batched == single


def test_rolling_perplexity_scores_every_token_once_and_matches_full_context(tiny_model):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model("llama"))
    ids = list(range(5, 205))
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    exact = -sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1))
    (full, count), (short, short_count) = rolling_nll(model, [ids, ids[:3]], max_length=256, stride=64, batch_size=2)
    assert count == 199 and short_count == 2 and full == pytest.approx(exact, rel=1e-4)
    for max_length, stride in ((64, 64), (64, 16), (32, 31)):
        total, tokens = rolling_nll(model, [ids], max_length=max_length, stride=stride, batch_size=3)[0]
        assert tokens == 199  # windows overlap, yet no token is scored twice or skipped
        assert total == pytest.approx(exact, rel=0.05)  # shorter context, close to the full one


def test_generated_no_answer_is_scored_right_on_unanswerable_questions():
    """Peers score NoAns as 0 for generated text or drop those rows: "unanswerable" must count."""
    from harness.task.registry import get_task
    from harness.kinds.scoring_helpers import score_stage

    spec = get_task("squad_v2", mode="generate")
    examples = [Example("a", ("Q1", "C1"), references=("Paris",), answer_starts=(0,)),
                Example("b", ("Q2", "C2")), Example("c", ("Q3", "C3"))]
    outputs = ["Paris", "Unanswerable.", "London"]
    metrics, scored = score_stage(spec, examples, [Prediction(e.id, -1, None, (), o) for e, o in zip(examples, outputs)], 0)
    assert metrics["NoAns_total"] == 2 and metrics["HasAns_total"] == 1
    assert metrics["NoAns_exact"]["value"] == pytest.approx(50.0)  # "Unanswerable." right, "London" wrong
    assert metrics["exact"]["value"] == pytest.approx(200 / 3)
    assert [p.values["exact"] for p in scored] == [100.0, 100.0, 0.0]


def test_a_model_that_never_answers_is_called_out():
    """All 'no answer' scores exactly the share of unanswerable questions: a collapse, not a skill."""
    from harness.task.registry import get_task
    from harness.kinds.scoring_helpers import score_stage

    spec = get_task("squad_v2", mode="generate")
    examples = [Example(str(i), ("Q", "C"), references=("Paris",) if i % 2 else (), answer_starts=(0,) if i % 2 else ())
                for i in range(10)]
    metrics, _ = score_stage(spec, examples, [Prediction(e.id, -1, None, (), "unanswerable") for e in examples], 0)
    assert metrics["f1"]["value"] == 50.0
    assert metrics["warnings"] == ["every answer is 'no answer': its score is the share of unanswerable questions (0.50)"]
    varied, _ = score_stage(spec, examples, [Prediction(e.id, -1, None, (), f"a{i}") for i, e in enumerate(examples)], 0)
    assert "warnings" not in varied


def test_squad_train_and_eval_never_share_a_context(data_dir):
    from harness.task.data import build_splits
    from harness.task.registry import get_task

    splits = build_splits(get_task("squad_v2"), data_dir, train_samples=None, eval_samples=200,
                          validation_samples=50, seed=0)
    eval_contexts = {e.texts[1] for e in splits.eval}
    assert not eval_contexts & {e.texts[1] for e in splits.train + splits.validation}
    assert len(splits.eval) == 200 and sum(not e.references for e in splits.eval) > 0  # unanswerables present


def test_chat_template_wraps_prompts_and_on_without_template_is_an_error(tiny_model):
    from harness.errors import BenchError
    from harness.task.prompts import encode_prompt, use_chat_template

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model("llama"))
    assert use_chat_template(tokenizer, "auto", seq2seq=False) is False
    with pytest.raises(BenchError, match="no chat template"):
        use_chat_template(tokenizer, "on", seq2seq=False)
    tokenizer.chat_template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}ASSISTANT:"
    assert use_chat_template(tokenizer, "auto", seq2seq=False) is True
    wrapped = tokenizer.decode(encode_prompt(tokenizer, "hello there", chat=True, strip_eos=True))
    assert wrapped.replace(" ", "").endswith("hellothere</s>ASSISTANT:")


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_target_nll_counts_only_target_tokens(family, tiny_model):
    from harness.backends.generate import target_nll
    from harness.types import TrainItem

    path = tiny_model(family)
    seq2seq = family == "t5"
    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(path).eval()
    prompt, target = [5, 6, 7, 8], [9, 10, 11]
    item = TrainItem(prompt, lm_labels=target) if seq2seq else TrainItem(prompt + target, lm_labels=[-100] * 4 + target)
    with torch.inference_mode():
        if seq2seq:
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt]), labels=torch.tensor([target])).logits[0], -1)
            exact = -sum(logp[k, t].item() for k, t in enumerate(target))
        else:
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + target])).logits[0], -1)
            exact = -sum(logp[3 + k, t].item() for k, t in enumerate(target))
    short = TrainItem(prompt[:2], lm_labels=target[:1]) if seq2seq else TrainItem([5, 9], lm_labels=[-100, 9])
    (total, count), (_, short_count) = target_nll(model, [item, short], pad_id=0, batch_size=2, seq2seq=seq2seq)
    assert count == 3 and short_count == 1 and total == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_validation_loss_is_per_target_token_whatever_the_batch(family, tiny_model):
    """Early stopping compares these values: items with 1 and 3 target tokens must weigh 1:3, so
    batch size 1 and batch size 2 give the same loss (total NLL / total target tokens)."""
    from harness.backends.generate import target_nll
    from harness.types import TrainItem
    from harness.train.validate import validation_loss

    seq2seq = family == "t5"
    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(tiny_model(family)).eval()
    if seq2seq:
        items = [TrainItem([5, 6, 7, 8], lm_labels=[9, 10, 11]), TrainItem([5, 6], lm_labels=[9])]
    else:
        items = [TrainItem([5, 6, 7, 8, 9, 10, 11], lm_labels=[-100] * 4 + [9, 10, 11]),
                 TrainItem([5, 9], lm_labels=[-100, 9])]
    totals = target_nll(model, items, pad_id=0, batch_size=2, seq2seq=seq2seq)
    exact = sum(total for total, _ in totals) / sum(count for _, count in totals)
    assert sum(count for _, count in totals) == 4
    assert validation_loss(model, items, 0, batch_size=1) == pytest.approx(exact, rel=1e-5)
    assert validation_loss(model, items, 0, batch_size=2) == pytest.approx(exact, rel=1e-5)
