"""A judge that cannot judge is called out: judged through a real local HTTP server by scripted
judges that always answer "A", give every response one score, answer by position on most items,
or judge sanely. The reliability numbers are exact, the broken judges get an UNUSABLE warning under
every judge table (terminal, reports, export) and the sane one does not, and no zero-width
confidence interval (a win rate of 0.5 [0.500, 0.500] from all ties) is ever printed."""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.judging.backend import JudgeOptions
from harness.judging.cache import JudgeCache
from harness.report.judge import judge_csv, judge_markdown, judge_notes, judge_table
from harness.judging.engine import EngineSettings, ask_all
from harness.judging.grading import Item, plan_queries, summarize
from harness.judging.retry import RetryPolicy
from harness.judging.templates import PAIRWISE, SINGLE
from harness.task.registry import get_judge
from judge_server import JudgeServer, Respond

RETRY = RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.05)
# A CI whose two ends print the same: "0.500 [0.500, 0.500]", "+0.0 [+0.0, +0.0]".
ZERO_WIDTH = re.compile(r"\[([+\-]?\d+(?:\.\d+)?), \1\]")
UNUSABLE = "UNUSABLE judgment"

# The fine-tuned answer is better on items 0 and 1, the baseline's on item 2, neither on item 3.
ITEMS = [Item("0", "task 0", "ref 0", "plain answer 0", "GOOD answer 0"),
         Item("1", "task 1", "ref 1", "plain answer 1", "GOOD answer 1"),
         Item("2", "task 2", "ref 2", "GOOD answer 2", "plain answer 2"),
         Item("3", "task 3", "ref 3", "plain answer 3", "plain other 3")]


def _between(prompt: str, start: str, end: str) -> str:
    return prompt.split(start)[1].split(end)[0]


def _sane_score(prompt: str) -> int:
    response = _between(prompt, "### Response to rate", "Reply with").strip()
    return 80 if "GOOD" in response else 30 + 10 * int(response[-1])


def _sane_verdict(prompt: str) -> str:
    a_good = "GOOD" in _between(prompt, "### Response A", "### Response B")
    b_good = "GOOD" in _between(prompt, "### Response B", "Reply with")
    return "A" if a_good and not b_good else "B" if b_good and not a_good else "tie"


def _item(prompt: str) -> int:
    return int(_between(prompt, "### Task", "###").strip().split()[-1])


def _judge(verdict: Callable[[str], str], score: Callable[[str], int]) -> Callable[..., Respond]:
    def script(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        if "### Response A" in prompt:
            return Respond('{"winner": "%s"}' % verdict(prompt))
        return Respond('{"score": %d}' % score(prompt))
    return script


SCRIPTS = {
    "sane": _judge(_sane_verdict, _sane_score),
    "always-a": _judge(lambda prompt: "A", _sane_score),
    "same-score": _judge(_sane_verdict, lambda prompt: 50),
    # sane on item 0, "A" whatever the order on items 1-3: three of four pairs flip
    "position-biased": _judge(lambda prompt: _sane_verdict(prompt) if _item(prompt) == 0 else "A", _sane_score),
}
SANE_SCORES = [30, 80, 40, 80, 80, 50, 60, 60]  # before/after of items 0..3
SANE_SD = math.sqrt(sum((s - 60) ** 2 for s in SANE_SCORES) / 7)
FLIP_REASON = "its verdict changes when the two responses swap places in {} of pairs (over 50%)"
EXPECTED = {  # flip rate, ties share, said A/B/tie, distinct scores, score sd, usable, problems (their starts)
    "sane": (0.0, 0.25, {"A": 3 / 8, "B": 3 / 8, "tie": 2 / 8}, 5, SANE_SD, "yes", []),
    "always-a": (1.0, 1.0, {"A": 1.0, "B": 0.0, "tie": 0.0}, 5, SANE_SD, "NO: win rate",
                 [FLIP_REASON.format("100%"), 'every pairwise verdict (8) is "A", the response shown first']),
    "same-score": (0.0, 0.25, {"A": 3 / 8, "B": 3 / 8, "tie": 2 / 8}, 1, 0.0, "NO: scores",
                   ["every response of every item got the same score (50)"]),
    "position-biased": (0.75, 0.75, {"A": 7 / 8, "B": 1 / 8, "tie": 0.0}, 5, SANE_SD, "NO: win rate",
                        [FLIP_REASON.format("75%")]),
}


def _judged(name: str, tmp_path: Path, samples: int = 1,
            script: Callable[..., Respond] | None = None) -> dict[str, Any]:
    """One judgment of ITEMS by the scripted judge, as the store hands it to the judge table."""
    with JudgeServer(script or SCRIPTS[name]) as server:
        backend = get_judge(f"openai:{server.url}/v1#{name}", JudgeOptions(timeout=5.0))
        planned = plan_queries(backend.id, SINGLE, PAIRWISE, ITEMS, samples)
        cache = JudgeCache(tmp_path / f"{name}.sqlite")
        try:
            answers = ask_all(backend, [q for _, q in planned], cache, EngineSettings(samples, 2, RETRY))
        finally:
            cache.close()
    metrics, _ = summarize(ITEMS, samples, [s for s, _ in planned], answers, seed=0)
    info = {"templates": {"single": SINGLE.version, "pairwise": PAIRWISE.version}, "before_stage": "baseline:zero",
            "after_stage": "finetuned", "warnings": []}
    return {"run_id": f"run-{name}", "judge": backend.id, "setup": f"k={samples}", "metrics": metrics, "info": info,
            "config": {"task": "alpaca", "model": "tiny", "method": "lora"}}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_reliability_numbers_and_the_unusable_verdict(name: str, tmp_path: Path) -> None:
    from harness.judging.reliability import problems

    record = _judged(name, tmp_path)
    metrics = record["metrics"]
    flip_rate, ties, said, distinct, sd, usable, reasons = EXPECTED[name]
    measured = metrics["reliability"]
    assert metrics["pairwise"]["flip_rate"] == flip_rate
    assert metrics["pairwise"]["ties"] / metrics["pairwise"]["n_judged"] == ties
    assert measured["verdicts"] == 8 and measured["said"] == said
    assert measured["scores"] == 8 and measured["distinct_scores"] == distinct
    assert measured["score_sd"] == pytest.approx(sd)
    assert "repeat_agreement" not in measured  # one sample: nothing to agree with
    found = [problem.reason for problem in problems(metrics)]
    assert len(found) == len(reasons) and all(f.startswith(r) for f, r in zip(found, reasons))

    text = judge_markdown(judge_table([record]), judge_notes([record]))
    table, notes = text.split("\n- ", 1)
    assert not ZERO_WIDTH.search(text), text
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    row = dict(zip(header, (c.strip() for c in table.splitlines()[2].strip("|").split("|"))))
    assert row["flip rate"] == f"{flip_rate:.0%}" and row["ties"] == f"{ties:.0%}"
    assert row["said A/B/tie"] == "/".join(f"{said[v]:.0%}" for v in ("A", "B", "tie"))
    assert row["scores: distinct, sd"] == f"{distinct}, sd {sd:.1f}" and row["repeats agree"] == "—"
    assert row["usable"] == usable
    exported = next(csv.DictReader(io.StringIO(judge_csv([record]))))
    assert float(exported["flip_rate"]) == flip_rate and float(exported["tie_share"]) == ties
    assert int(exported["distinct_scores"]) == distinct
    if reasons:
        assert exported["usable"] == "no"
        warning = f"warning: {UNUSABLE}: judge {record['judge']} on run-{name} cannot judge these outputs: "
        assert notes.startswith(warning + "; ".join(found))  # the first line under the table
        assert f". Read its {usable[4:]} above as a measure of the judge" in notes.splitlines()[0]
        assert exported["unusable_reason"] == "; ".join(found)
    else:
        assert exported["usable"] == "yes" and exported["unusable_reason"] == ""
        assert UNUSABLE not in text and exported["ci_note"] == ""
        assert re.fullmatch(r"0\.625 \[0\.\d{3}, [01]\.\d{3}\]", row["win rate after [95% CI]"])
        assert all(exported[f"{name}_low"] != exported[f"{name}_high"] != ""
                   for name in ("score_before", "score_after", "score_delta", "win_rate"))


def test_all_ties_say_no_decisive_comparisons_never_a_certain_looking_ci(tmp_path: Path) -> None:
    """always-a: every pair flipped, so all four items are ties and the win rate is exactly 0.5;
    same-score: every score 50, so every score and every delta alike."""
    always_a, same_score = _judged("always-a", tmp_path), _judged("same-score", tmp_path)
    pair = always_a["metrics"]["pairwise"]
    assert (pair["wins"], pair["ties"], pair["losses"], pair["win_rate"]) == (0, 4, 0, 0.5)
    assert pair["ci"] == [0.5, 0.5]  # what the table used to print as "0.500 [0.500, 0.500]"
    text = judge_markdown(judge_table([always_a, same_score]), judge_notes([always_a, same_score]))
    assert not ZERO_WIDTH.search(text), text
    assert "| no decisive comparisons |" in text
    alike = "(every item alike: no CI)"
    assert f"| 50.0 {alike} | 50.0 {alike} | +0.0 {alike} |" in text
    assert text.count(UNUSABLE) == 2
    rows = list(csv.DictReader(io.StringIO(judge_csv([always_a, same_score]))))
    assert float(rows[0]["win_rate"]) == 0.5 and rows[0]["win_rate_low"] == rows[0]["win_rate_high"] == ""
    assert rows[0]["ci_note"] == "win_rate: no decisive comparisons"
    assert all(rows[1][f"{name}_low"] == rows[1][f"{name}_high"] == ""
               for name in ("score_before", "score_after", "score_delta"))
    assert rows[1]["ci_note"] == ("score_before: every item alike: no CI; score_after: every item alike: no CI; "
                                  "score_delta: every item alike: no CI")


def test_agreement_between_repeats(tmp_path: Path) -> None:
    """Asked twice (k=2), a judge that changes one score of item 0 between samples agrees with itself
    on 15 of its 16 questions (4 items x 2 scores + 2 verdict orders)."""
    def wavering(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        if "### Response A" in prompt:
            return Respond('{"winner": "%s"}' % _sane_verdict(prompt))
        response = _between(prompt, "### Response to rate", "Reply with").strip()
        return Respond('{"score": %d}' % (_sane_score(prompt) + (body["seed"] // 1000) * 10
                                          * (response == "plain answer 0")))

    record = _judged("wavering", tmp_path, samples=2, script=wavering)
    measured = record["metrics"]["reliability"]
    assert measured["repeats"] == 16 and measured["repeat_agreement"] == 15 / 16
    assert measured["distinct_scores"] == 5 and measured["scores"] == 16
    table = judge_table([record])
    assert dict(zip(table.columns, table.rows[0]))["repeats agree"] == "94%"
    assert float(next(csv.DictReader(io.StringIO(judge_csv([record]))))["repeat_agreement"]) == 15 / 16


# --- the CLI: a tiny alpaca run judged by two broken judges, then every format that shows the table --------

def _judge_part(text: str, heading: str) -> str:
    assert heading in text, text
    return text.split(heading, 1)[1]


def test_every_judge_table_calls_out_a_judge_that_cannot_judge(bench: Any, alpaca_run: tuple[Path, str],
                                                               data_dir: Path) -> None:
    """What a new user met with `bench judge <alpaca run> --judge hf:smollm2`: every verdict "A"
    (so a 100% flip rate and win rate 0.500 [0.500, 0.500]); and a judge with one score for all."""
    results, run_id = alpaca_run
    broken = {"always-a": _judge(lambda prompt: "A", lambda prompt: len(prompt) % 101),
              "one-score": _judge(lambda prompt: "tie", lambda prompt: 50)}
    for name, script in broken.items():
        with JudgeServer(script) as server:
            code, out, err = bench("judge", run_id, "--judge", f"openai:{server.url}/v1#{name}", "--results",
                                   results, "--data-dir", data_dir)
        assert code == 0, err
        part = _judge_part(out, "## LLM judge")
        assert f"warning: {UNUSABLE}: judge openai:{server.url}/v1#{name} on {run_id}" in part
        assert "no decisive comparisons" in part and not ZERO_WIDTH.search(part), part
    code, md, err = bench("report", "--format", "md", "--results", results)
    assert code == 0, err
    code, latex, err = bench("report", "--format", "latex", "--results", results)
    assert code == 0, err
    code, _, err = bench("report", "--format", "html", "--results", results)
    assert code == 0, err
    html = next((results / "reports").glob("*.html")).read_text()
    code, _, err = bench("export", "--to", results / "x", "--results", results)
    assert code == 0, err
    shown = {"md": _judge_part(md, "## LLM judge"), "latex": _judge_part(latex, r"\caption{LLM judge}"),
             "html": _judge_part(html, 'id="judge"').split("</section>")[0],
             "export": (results / "x" / "judge.md").read_text(),
             "terminal file": next((results / "tables").glob("*__judge.md")).read_text()}
    for where, text in shown.items():
        assert text.count(UNUSABLE) == 2, where
        assert "every pairwise verdict (8) is" in text and "got the same score (50)" in text, where
        assert "no decisive comparisons" in text and not ZERO_WIDTH.search(text), (where, text)
    with open(results / "x" / "judge.csv", newline="") as handle:
        rows = {row["judge"].rsplit("#", 1)[1]: row for row in csv.DictReader(handle)}
    assert {name: row["usable"] for name, row in rows.items()} == {"always-a": "no", "one-score": "no"}
    assert rows["always-a"]["unusable_reason"].startswith(FLIP_REASON.format("100%"))
    assert rows["one-score"]["unusable_reason"].startswith("every response of every item got the same score (50)")
    for row in rows.values():
        assert row["win_rate_low"] == row["win_rate_high"] == ""
        assert "win_rate: no decisive comparisons" in row["ci_note"]
