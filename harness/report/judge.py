"""The LLM judge's results rendered: the judge table (markdown, CSV) and its notes, read from the
judgments stored with each run. Judging itself (asking, parsing, summarising, the reliability
numbers) is judging/'s; this module only lays out what it stored."""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

from harness.compare.paired import format_p
from harness.judging.reliability import FLIP_LIMIT, problems, tie_share, unusable_parts
from harness.report.formats import Table, csv_number, to_markdown
from harness.store import Store, atomic_write

# Said instead of a zero-width confidence interval, which would look certain while it measures nothing.
NO_DECISIVE = "no decisive comparisons"
ALIKE = "every item alike: no CI"


def judge_table(records: Sequence[dict[str, Any]]) -> Table:
    columns = ("model", "method", "judge", "k", "n", "score before [95% CI]", "score after [95% CI]",
               "Δscore [95% CI]", "p", "item sd b/a", "win rate after [95% CI]", "W/T/L", "flip rate", "ties",
               "said A/B/tie", "scores: distinct, sd", "repeats agree", "usable", "parse fail", "missing",
               "calls (cached)", "tokens in/out", "cost $")
    rows = []
    for r in records:
        m, config = r["metrics"], r["config"]
        before, after = m.get("score_before", {}), m.get("score_after", {})
        delta, pair = m.get("score_delta"), m.get("pairwise")
        rows.append((
            str(config.get("model", r["run_id"])), str(config.get("method", "")), r["judge"], str(m["samples"]),
            str(m["n"]), _score(before), _score(after),
            _ci(delta["value"], delta["ci"], signed=True) if delta else "—", format_p(delta["p"]) if delta else "—",
            f"{_num(before.get('item_sd'))}/{_num(after.get('item_sd'))}" if m["samples"] > 1 else "—",
            _win_rate(pair), f"{pair['wins']}/{pair['ties']}/{pair['losses']}" if pair else "—",
            f"{pair['flip_rate']:.0%}" if pair and not math.isnan(pair["flip_rate"]) else "—",
            *_reliability_cells(m), f"NO: {unusable_parts(found)}" if (found := problems(m)) else "yes",
            f"{m['parse_failure_rate']:.0%}" if not math.isnan(m["parse_failure_rate"]) else "—",
            str(m["missing_answers"]), f"{m['calls']} ({m['cache_hits']})",
            f"{m['input_tokens']}/{m['output_tokens']}" if m["input_tokens"] else "—",
            f"{m['cost_usd']:.4f}" if "cost_usd" in m else "—"))
    return Table(columns, tuple(rows))


def _win_rate(pair: dict[str, Any] | None) -> str:
    if not pair or not pair["n_judged"]:
        return "—"
    if not pair["wins"] and not pair["losses"]:  # all ties: 0.5 with a zero-width CI would look certain
        return NO_DECISIVE
    return _ci(pair["win_rate"], pair["ci"], digits=3)


def _reliability_cells(m: dict[str, Any]) -> tuple[str, str, str, str]:
    """ties, said A/B/tie, scores: distinct, sd, repeats agree (— where not measured: judgments
    stored before these numbers existed, or a mode without that kind of answer)."""
    measured = m.get("reliability") or {}
    ties = tie_share(m.get("pairwise"))
    said = measured.get("said")
    return (f"{ties:.0%}" if ties is not None else "—",
            "/".join(f"{said[v]:.0%}" for v in ("A", "B", "tie")) if said else "—",
            f"{measured['distinct_scores']}, sd {measured['score_sd']:.1f}" if "distinct_scores" in measured else "—",
            f"{measured['repeat_agreement']:.0%}" if "repeat_agreement" in measured else "—")


def judge_csv(records: Sequence[dict[str, Any]]) -> str:
    """The judge table as plain numbers, one row per judgment (a CI becomes `_low`/`_high` columns,
    as in comparisons.csv), for `bench export`."""
    def summary(prefix: str, part: dict[str, Any] | None, fields: Sequence[str]) -> dict[str, Any]:
        part = part or {}
        row = {f"{prefix}_{f}" if f != "value" else prefix: part.get(f) for f in fields}
        low, high = part.get("ci") or (None, None)
        return {**row, f"{prefix}_low": low, f"{prefix}_high": high}

    rows = []
    for r in records:
        m, config = r["metrics"], r["config"]
        pair = m.get("pairwise") or {}
        measured = m.get("reliability") or {}
        said, unusable = measured.get("said") or {}, problems(m)
        rows.append({
            "run_id": r["run_id"], "task": config.get("task"), "model": config.get("model"),
            "method": config.get("method"), "judge": r["judge"], "setup": r["setup"], "samples": m["samples"],
            "n": m["n"], **summary("score_before", m.get("score_before"), ("value", "n_scored", "item_sd")),
            **summary("score_after", m.get("score_after"), ("value", "n_scored", "item_sd")),
            **summary("score_delta", m.get("score_delta"), ("value", "p")),
            **summary("win_rate", {**pair, "value": pair.get("win_rate")}, ("value",)),
            **{k: pair.get(k) for k in ("wins", "ties", "losses", "flip_rate")}, "tie_share": tie_share(pair),
            **{f"said_{v.lower()}": said.get(v) for v in ("A", "B", "tie")},
            **{k: measured.get(k) for k in ("distinct_scores", "score_min", "score_max", "score_sd",
                                            "repeat_agreement")},
            "usable": "no" if unusable else "yes", "unusable_reason": "; ".join(p.reason for p in unusable),
            **{k: m.get(k) for k in ("parse_failure_rate", "missing_answers", "calls", "cache_hits",
                                     "input_tokens", "output_tokens", "cost_usd")}})
        _drop_flat_cis(rows[-1])
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: _plain(v) for k, v in row.items()} for row in rows])
    return out.getvalue()


def _drop_flat_cis(row: dict[str, Any]) -> None:
    """Empties a zero-width CI (every item alike, all ties) and says why in `ci_note`: [0.5, 0.5]
    from a judge that only ever tied would read as a certain result."""
    notes = []
    for name in ("score_before", "score_after", "score_delta", "win_rate"):
        low, high = row[f"{name}_low"], row[f"{name}_high"]
        if low is None or high is None or math.isnan(low) or low != high:
            continue
        row[f"{name}_low"] = row[f"{name}_high"] = None
        no_decisive = name == "win_rate" and not row["wins"] and not row["losses"]
        notes.append(f"{name}: {NO_DECISIVE if no_decisive else ALIKE}")
    row["ci_note"] = "; ".join(notes)


def _plain(value: Any) -> Any:
    """comparisons.csv's numbers (6 significant digits); NaN and None as empty cells."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else csv_number(value)


def _score(summary: dict[str, Any]) -> str:
    if not summary or summary.get("n_scored", 0) == 0:
        return "—"
    return _ci(summary["value"], summary["ci"])


def _ci(value: float, ci: Sequence[float], signed: bool = False, digits: int = 1) -> str:
    sign = "+" if signed else ""
    if ci[0] == ci[1]:  # a zero-width interval: every item had the same value, which proves nothing
        return f"{value:{sign}.{digits}f} ({ALIKE})"
    return f"{value:{sign}.{digits}f} [{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def judge_notes(records: Sequence[dict[str, Any]]) -> list[str]:
    # A judge that cannot judge comes first, right under the table, before anything reads its numbers.
    notes = [f"warning: UNUSABLE judgment: judge {r['judge']} on {r['run_id']} cannot judge these outputs: "
             f"{'; '.join(p.reason for p in found)}. Read its {unusable_parts(found)} above as a measure of the "
             "judge, not of the models; judge again with a stronger judge"
             for r in records if (found := problems(r["metrics"]))]
    for r in records:
        templates = ", ".join(f"{k} {v}" for k, v in r["info"]["templates"].items() if v)
        notes.append(f"{r['run_id']}: {r['info']['before_stage']} vs {r['info']['after_stage']}; templates {templates}")
        notes += [f"warning: {w}" for w in r["info"]["warnings"]]
    notes.append("score: 0-100 against the reference, mean over items (missing answers left out, counted); "
                 "win rate: fine-tuned vs baseline, ties count 1/2; a verdict that flips with the order is a tie")
    notes.append("can the judge judge: flip rate: pairs whose verdict changes when the two responses swap places; "
                 "ties: share of judged items tied; said A/B/tie: the pairwise verdicts as given; scores: distinct "
                 "values and sd over every score given; repeats agree: questions whose samples gave the same answer; "
                 f"usable: no (win rate) when the flip rate is over {FLIP_LIMIT:.0%} or every verdict names one "
                 "position, no (scores) when every response got one score")
    if any(r["metrics"].get("input_tokens") for r in records):
        notes.append("tokens in/out and cost $: every reply these judgments use, cached ones included (what the "
                     "judgments cost when first asked); calls (cached): requests sent (answers from the cache)")
    return notes


def judge_section(store: Store, run_ids: Sequence[str]) -> tuple[Table, list[str]] | None:
    """The stored judgments of these runs as one table and its notes (how to read it, warnings such
    as a judge judging itself), the same in every report format; None when none was judged."""
    records = stored_judgments(store, run_ids)
    return (judge_table(records), judge_notes(records)) if records else None


def stored_judgments(store: Store, run_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The judge records of these runs, as `judge_table` takes them (for `bench report`)."""
    records = []
    for run_id in dict.fromkeys(run_ids):
        config = store.run_config(run_id) or {}
        records += [{**record, "config": config} for record in store.judgments(run_id)]
    return records


def judge_markdown(table: Table, notes: Sequence[str]) -> str:
    """The judge table in markdown with its notes under it (terminal, table files, reports, export)."""
    return to_markdown(table) + "".join(f"- {note}\n" for note in notes)


def print_judge_table(records: Sequence[dict[str, Any]], store: Store, name: str) -> None:
    def body(shown: Sequence[dict[str, Any]]) -> str:
        return judge_markdown(judge_table(shown), judge_notes(shown))

    if not records:
        return
    print("\n## LLM judge\n")
    print(body(records))
    # The file keeps every judgment stored for these runs, so judging again with another judge or
    # mode adds rows instead of replacing the table.
    stored = stored_judgments(store, [record["run_id"] for record in records])
    atomic_write(store.root / "tables" / f"{name}__judge.md", f"# {name}: LLM judge\n\n{body(stored)}")
