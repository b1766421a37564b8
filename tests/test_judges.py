"""LLM judges against a real local HTTP server (OpenAI protocol and Gemini's REST API through
Google's SDK) and a real tiny local model: retries, Retry-After, timeouts, garbage, missing-not-zero,
the cache, both-order pairwise logic, and that an API key never reaches a file bench writes."""
from __future__ import annotations

import csv
import json
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from harness.errors import BenchError
from harness.judging.backend import JudgeOptions, parse_judge_spec, redact, retry_after_seconds
from harness.judging.cache import JudgeCache
from harness.judging.engine import EngineSettings, ask_all
from harness.judging.grading import Item, plan_queries, summarize
from harness.judging.parse import parse_score, parse_verdict
from harness.judging.retry import RetryPolicy
from harness.judging.templates import PAIRWISE, SINGLE, Template, checked, single_template
from harness.task.registry import get_judge
from judge_server import JudgeServer, Respond

FAST = EngineSettings(samples=1, parse_retries=2, retry=RetryPolicy(attempts=4, base_seconds=0.01, cap_seconds=0.05))
FAKE_KEY = "sk-bench-test-5f3c9a1e7d2b4c68"


@pytest.mark.parametrize("text, expected", [
    ('{"score": 85}', 85.0), ('```json\n{"score": 70}\n```', 70.0), ("Score: 60", 60.0), ("85", 85.0),
    ("85/100", 85.0), ('{"score": "90"}', 90.0), ('{"score": "85/100"}', 85.0), ('{"score": "85 / 100"}', 85.0),
    ('The answer is fine. {"score": 55}', 55.0),
    ('{"score": 150}', None), ('{"score": -5}', None), ("I would say 70 or 80", None), ("garbage", None),
    ('{"score": 80} but really score: 40', None), ('{"score": true}', None), ("", None), ('{"score": 100}', 100.0),
    ('{"score": 0}', 0.0), ('{"score": 7', 7.0),
    # a score out of another total is not a 0-100 score
    ("Score: 8/10", None), ('{"score": "8/10"}', None), ("score: 7.5/10", None), ("Score: 8 out of 10", None),
    ("Score: 85 out of 100", 85.0)])
def test_parse_score_is_strict(text: str, expected: float | None) -> None:
    assert parse_score(text) == expected


@pytest.mark.parametrize("text, expected", [
    ('{"winner": "A"}', "A"), ('{"winner":"b"}', "B"), ("tie", "tie"), ("[[A]]", "A"), ('{"winner": "tie"}', "tie"),
    ("A or B", None), ('{"winner": "C"}', None), ("Response A is better", None), ('{"winner": "A', "A")])
def test_parse_verdict_is_strict(text: str, expected: str | None) -> None:
    assert parse_verdict(text) == expected


def test_backoff_honours_retry_after_and_caps_it() -> None:
    policy = RetryPolicy(base_seconds=1.0, cap_seconds=8.0, max_retry_after=30.0)
    rng = random.Random(0)
    assert all(0.0 <= policy.delay(retry, None, rng) <= min(8.0, 2 ** retry) for retry in range(8))
    assert policy.delay(0, 5.0, rng) >= 5.0           # the server's floor
    assert policy.delay(0, 3600.0, rng) == 30.0       # never hang on a huge Retry-After
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now
    assert retry_after_seconds("soon") is None


def _openai(server: JudgeServer, **options: Any) -> Any:
    return get_judge(f"openai:{server.url}/v1#judge-model", JudgeOptions(**{"timeout": 5.0, **options}))


def _items(n: int, good_after: bool = True) -> list[Item]:
    return [Item(str(i), f"task {i}", f"reference {i}", f"before answer {i}",
                 f"{'GOOD' if good_after else 'after'} answer {i}") for i in range(n)]


def _ask(backend: Any, cache_path: Path, items: list[Item], *, pairwise: bool = False,
         settings: EngineSettings = FAST) -> tuple[dict[str, Any], list[Any]]:
    planned = plan_queries(backend.id, SINGLE, PAIRWISE if pairwise else None, items, settings.samples)
    cache = JudgeCache(cache_path)
    try:
        answers = ask_all(backend, [q for _, q in planned], cache, settings)
    finally:
        cache.close()
    metrics, _ = summarize(items, settings.samples, [s for s, _ in planned], answers, seed=0)
    return metrics, answers


def test_openai_retries_429_500_and_timeouts_then_scores(tmp_path: Path) -> None:
    def script(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        if "before answer 0" in prompt:
            return [Respond(status=429, headers={"Retry-After": "0"}), Respond(status=500),
                    Respond('{"score": 40}')][min(number, 2)]
        if "GOOD answer 0" in prompt:
            return Respond('{"score": 90}', delay=1.0) if number == 0 else Respond('{"score": 80}')
        return Respond('{"score": 50}')

    with JudgeServer(script) as server:
        metrics, answers = _ask(_openai(server, timeout=0.3), tmp_path / "c.sqlite", _items(2))
        values = [a.value for a in answers]
        assert values == [40.0, 80.0, 50.0, 50.0]  # the slow first reply timed out, the retry counted
        assert [a.calls for a in answers] == [3, 2, 1, 1]
        assert metrics["score_before"]["value"] == 45.0 and metrics["score_after"]["value"] == 65.0
        assert metrics["missing_answers"] == 0 and metrics["input_tokens"] == 400
        sent = server.requests[0]["body"]
        assert sent["response_format"]["type"] == "json_schema" and sent["temperature"] == 0.0


def test_a_reply_cut_off_mid_body_is_retried(tmp_path: Path) -> None:
    """A connection dropped part-way through the reply body (http.client.IncompleteRead) is a
    transient fault like a timeout, not a crash of the whole judging."""
    def script(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        return Respond('{"score": 80}', cut_after=20) if number == 0 else Respond('{"score": 80}')

    with JudgeServer(script) as server:
        metrics, answers = _ask(_openai(server), tmp_path / "c.sqlite", _items(2))
    assert [a.value for a in answers] == [80.0] * 4 and [a.calls for a in answers] == [2] * 4
    assert metrics["missing_answers"] == 0


def test_garbage_and_out_of_range_are_retried_then_missing_never_zero(tmp_path: Path) -> None:
    def script(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        if "before answer 0" in prompt:
            return Respond("I think this is quite good!")            # never parseable
        if "GOOD answer 0" in prompt:
            return [Respond('{"score": 150}'), Respond('{"score": 30}')][min(number, 1)]
        return Respond('{"score": 60}')

    with JudgeServer(script) as server:
        metrics, answers = _ask(_openai(server), tmp_path / "c.sqlite", _items(2))
    garbage, out_of_range = answers[0], answers[1]
    assert garbage.value is None and garbage.raw == ["I think this is quite good!"] * 3
    assert garbage.error and garbage.error.startswith("unparseable")
    assert out_of_range.value == 30.0 and out_of_range.unparsed == 1
    assert metrics["score_before"] == {**metrics["score_before"], "value": 60.0, "n_scored": 1, "missing": 1}
    assert metrics["missing_answers"] == 1
    assert metrics["parse_failure_rate"] == pytest.approx(4 / 7)  # 3 garbage + 1 out of range, of 7 replies


def test_a_refusal_is_missing_with_its_text(tmp_path: Path) -> None:
    """OpenAI's structured-output refusal (content null, the reason in `refusal`): missing, and the
    stored raw text is the refusal, not "null"."""
    refusal = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "refusal": "I can't help with rating that."}}]}).encode()
    with JudgeServer(lambda prompt, number, body: Respond(raw_body=refusal)) as server:
        metrics, answers = _ask(_openai(server), tmp_path / "c.sqlite", _items(1))
    assert metrics["missing_answers"] == 2 and answers[0].value is None
    assert answers[0].raw == ["refused: I can't help with rating that."] * 3


def test_content_sent_as_parts_is_read_as_its_text(tmp_path: Path) -> None:
    """Some OpenAI-protocol servers send `content` as a list of parts; the score is in their text."""
    parts = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": [
        {"type": "text", "text": '{"score": '}, {"type": "text", "text": "40}"}]}}]}).encode()
    with JudgeServer(lambda prompt, number, body: Respond(raw_body=parts)) as server:
        metrics, answers = _ask(_openai(server), tmp_path / "c.sqlite", _items(1))
    assert metrics["missing_answers"] == 0 and [a.value for a in answers] == [40.0, 40.0]


def test_a_reasoning_block_is_not_the_answer() -> None:
    """A reasoning judge weighs draft scores in <think>; only the answer after it counts, and
    thinking cut off before its end leaves no answer."""
    assert parse_score('<think>score: 30? no, better</think>\n{"score": 75}') == 75.0
    assert parse_score("<think>the score: 30 seems") is None
    assert parse_verdict('<thinking>"winner": "A" at first</thinking> {"winner": "B"}') == "B"
    assert parse_score('<think>no</think>') is None


@pytest.mark.parametrize("scheme", ["openai", "gemini"])
def test_a_reply_cut_at_the_token_limit_never_gives_a_cut_score(scheme: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """'{"score": 8' with finish_reason length (Gemini: MAX_TOKENS) may be 85 cut short: asked
    again, and missing with its raw text if it stays cut, never the score 8."""
    if scheme == "gemini":
        pytest.importorskip("google.genai")
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    cut = '{"score": 8'

    def script(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        if "contents" in body:
            return Respond(raw_body=json.dumps({"candidates": [{"content": {"parts": [{"text": cut}], "role": "model"},
                                                                "finishReason": "MAX_TOKENS", "index": 0}]}).encode())
        return Respond(raw_body=json.dumps({"choices": [{"index": 0, "finish_reason": "length", "message": {
            "role": "assistant", "content": cut}}]}).encode())

    with JudgeServer(script) as server:
        monkeypatch.setenv("GEMINI_BASE_URL", server.url)
        backend = _openai(server) if scheme == "openai" else get_judge("gemini:g", JudgeOptions(timeout=5.0))
        metrics, answers = _ask(backend, tmp_path / "c.sqlite", _items(1))
    assert [a.value for a in answers] == [None, None] and metrics["missing_answers"] == 2
    assert answers[0].raw == ['{"score": [cut off]8'] * 3


def test_persistent_failure_gives_up_is_not_cached_and_is_retried_next_time(tmp_path: Path) -> None:
    healthy = {"on": False}

    def script(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        if healthy["on"] or "GOOD answer" in prompt:
            return Respond('{"score": 70}')
        return Respond(status=503)

    with JudgeServer(script) as server:
        backend = _openai(server, concurrency=1)
        _, answers = _ask(backend, tmp_path / "c.sqlite", _items(1))
        assert answers[0].value is None and "gave up after 4 attempts" in answers[0].error
        assert answers[1].value == 70.0
        assert len(server.requests) == 4 + 1
        healthy["on"] = True
        _, answers = _ask(backend, tmp_path / "c.sqlite", _items(1))
        assert [a.value for a in answers] == [70.0, 70.0]
        assert len(server.requests) == 4 + 1 + 1  # only the failed question is asked again


def test_a_judge_that_never_answers_stops_early_with_one_error(tmp_path: Path) -> None:
    with JudgeServer(lambda prompt, number, body: Respond(status=503)) as server:
        with pytest.raises(BenchError, match=r"is not answering: the first 8 questions all failed \(gave up after 4"):
            _ask(_openai(server, concurrency=2), tmp_path / "c.sqlite", _items(20))
        # 40 questions x 4 attempts would be 160 requests; it stops after the 8th question gave up.
        assert len(server.requests) <= (8 + 2) * 4
    import socket

    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = get_judge(f"openai:http://127.0.0.1:{port}/v1#m", JudgeOptions(timeout=2.0))
    with pytest.raises(BenchError, match=f"cannot reach http://127.0.0.1:{port}"):
        _ask(down, tmp_path / "c.sqlite", _items(1))


def test_greedy_and_sampled_replies_never_stand_in_for_each_other(tmp_path: Path) -> None:
    with JudgeServer(lambda prompt, number, body: Respond('{"score": 75}')) as server:
        backend = _openai(server)
        _ask(backend, tmp_path / "c.sqlite", _items(2))  # k=1: greedy, 4 questions
        assert [r["body"]["temperature"] for r in server.requests] == [0.0] * 4
        sampled = EngineSettings(samples=3, retry=FAST.retry)
        metrics, _ = _ask(backend, tmp_path / "c.sqlite", _items(2), settings=sampled)
        assert metrics["cache_hits"] == 0 and len(server.requests) == 4 + 12  # sample 0 asked again, sampled
        assert {r["body"]["temperature"] for r in server.requests[4:]} == {0.7}
        again, _ = _ask(backend, tmp_path / "c.sqlite", _items(2))
        assert again["cache_hits"] == 4 and len(server.requests) == 16  # the greedy replies are still cached


def test_cache_means_a_rerun_pays_nothing(tmp_path: Path) -> None:
    with JudgeServer(lambda prompt, number, body: Respond('{"score": 75}')) as server:
        backend = _openai(server)
        first, _ = _ask(backend, tmp_path / "c.sqlite", _items(3), pairwise=True,
                        settings=EngineSettings(samples=2, retry=FAST.retry))
        paid = len(server.requests)
        second, answers = _ask(backend, tmp_path / "c.sqlite", _items(3), pairwise=True,
                               settings=EngineSettings(samples=2, retry=FAST.retry))
        assert paid == first["calls"] > 0 and len(server.requests) == paid
        assert second["calls"] == 0 and second["cache_hits"] == paid
        assert second["score_after"] == first["score_after"]
        assert {request["body"]["temperature"] for request in server.requests} == {0.7}  # k=2: sampled


def test_pairwise_runs_both_orders_and_counts_position_flips_as_ties(tmp_path: Path) -> None:
    def always_first(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        return Respond('{"winner": "A"}' if "Response A" in prompt else '{"score": 50}')

    def prefers_good(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        if "Response A" not in prompt:
            return Respond('{"score": 50}')
        a_part = prompt.split("### Response A")[1].split("### Response B")[0]
        return Respond('{"winner": "A"}' if "GOOD" in a_part else '{"winner": "B"}')

    with JudgeServer(always_first) as server:
        metrics, _ = _ask(_openai(server), tmp_path / "a.sqlite", _items(4), pairwise=True)
        orders = [r["body"]["messages"][0]["content"] for r in server.requests if "Response A" in
                  r["body"]["messages"][0]["content"]]
        assert len(orders) == 8  # 4 items x 2 orders
    biased = metrics["pairwise"]
    assert biased["flip_rate"] == 1.0 and biased["ties"] == 4 and biased["win_rate"] == 0.5
    with JudgeServer(prefers_good) as server:
        metrics, _ = _ask(_openai(server), tmp_path / "b.sqlite", _items(4), pairwise=True)
    fair = metrics["pairwise"]
    assert fair["flip_rate"] == 0.0 and fair["wins"] == 4 and fair["win_rate"] == 1.0


def test_repeated_samples_report_spread(tmp_path: Path) -> None:
    scores = {0: '{"score": 60}', 1: '{"score": 70}', 2: '{"score": 80}'}

    def script(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        return Respond(scores[body["seed"] // 1000])  # the sample index travels in the seed

    with JudgeServer(script) as server:
        metrics, _ = _ask(_openai(server), tmp_path / "c.sqlite", _items(3),
                          settings=EngineSettings(samples=3, retry=FAST.retry))
    after = metrics["score_after"]
    assert after["value"] == 70.0 and after["item_sd"] == pytest.approx(10.0)
    assert after["item_range_max"] == 20.0 and after["sample_mean_sd"] == pytest.approx(10.0)


def test_server_without_structured_output_is_asked_in_plain_text(tmp_path: Path) -> None:
    def script(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        if "response_format" in body:
            return Respond(status=400, raw_body=b'{"error": "response_format is not supported"}')
        return Respond("Score: 65")

    with JudgeServer(script) as server:
        _, answers = _ask(_openai(server, concurrency=1), tmp_path / "c.sqlite", _items(2))
        assert [a.value for a in answers] == [65.0] * 4
        assert sum("response_format" in r["body"] for r in server.requests) == 1  # remembered after one refusal


def test_bad_key_stops_with_a_clear_error_that_does_not_echo_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.setenv("BENCH_JUDGE_API_KEY", FAKE_KEY)
    with JudgeServer(lambda prompt, number, body: Respond(status=401, raw_body=json.dumps(
            {"error": f"bad key Bearer {FAKE_KEY}"}).encode())) as server:
        with pytest.raises(BenchError, match="not authorized.*BENCH_JUDGE_API_KEY") as failure:
            _ask(_openai(server), tmp_path / "c.sqlite", _items(1))
        assert server.requests[0]["headers"]["Authorization"] == f"Bearer {FAKE_KEY}"
    assert FAKE_KEY not in str(failure.value)
    assert FAKE_KEY not in redact(f"echo key={FAKE_KEY} and Bearer {FAKE_KEY}", FAKE_KEY)


@pytest.mark.parametrize("body", [b'{"echo": "Authorization: Bearer KEY"}', b"not json: Bearer KEY"])
def test_a_reply_that_echoes_the_key_never_stores_or_logs_it(body: bytes, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200 reply without a judgment (a proxy echoing the request, say) is an error whose text goes
    into warnings and the stored judgments: the key must be masked there too."""
    monkeypatch.setenv("BENCH_JUDGE_API_KEY", FAKE_KEY)
    reply = Respond(raw_body=body.replace(b"KEY", FAKE_KEY.encode()))
    with JudgeServer(lambda prompt, number, body: reply) as server:
        with pytest.raises(BenchError, match="is not answering") as failure:  # with the last reason
            _ask(_openai(server), tmp_path / "c.sqlite", _items(1))
    assert FAKE_KEY not in str(failure.value) and "***" in str(failure.value)


@pytest.mark.parametrize("scheme", ["openai", "gemini"])
def test_a_judgment_reply_that_echoes_the_key_is_masked_in_the_cache_and_stored_raw_text(
        scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relay that answers 200 with the key in the reply text (an over-quota notice, an echo):
    the unparseable reply is cached and kept as raw text of a missing answer, masked."""
    if scheme == "gemini":
        pytest.importorskip("google.genai")
    monkeypatch.setenv("BENCH_JUDGE_API_KEY", FAKE_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with JudgeServer(lambda prompt, number, body: Respond(f"quota exceeded for key {FAKE_KEY}")) as server:
        monkeypatch.setenv("GEMINI_BASE_URL", server.url)
        backend = _openai(server) if scheme == "openai" else get_judge("gemini:g", JudgeOptions(timeout=5.0))
        _, answers = _ask(backend, tmp_path / "c.sqlite", _items(1))
    assert answers[0].value is None and answers[0].raw[0] == "quota exceeded for key ***"
    written = [path for path in tmp_path.rglob("*") if path.is_file() and FAKE_KEY.encode() in path.read_bytes()]
    assert written == []


def test_gemini_through_googles_sdk_with_a_local_base_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("google.genai")

    def script(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        if number == 0:
            return Respond(status=429, headers={"Retry-After": "0"})
        if number == 1:
            return Respond(status=500)
        return Respond('{"score": 88}')

    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with JudgeServer(script) as server:
        monkeypatch.setenv("GEMINI_BASE_URL", server.url)
        backend = get_judge("gemini:gemini-2.5-flash", JudgeOptions(timeout=5.0))
        metrics, answers = _ask(backend, tmp_path / "c.sqlite", _items(1))
        assert [a.value for a in answers] == [88.0, 88.0] and [a.calls for a in answers] == [3, 3]
        request = server.requests[-1]
        assert ":generateContent" in request["path"] and "gemini-2.5-flash" in request["path"]
        assert request["headers"]["x-goog-api-key"] == FAKE_KEY
        assert request["body"]["generationConfig"]["responseMimeType"] == "application/json"
        assert metrics["input_tokens"] == 200 and metrics["output_tokens"] == 10


def test_gemini_without_a_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(BenchError, match="GEMINI_API_KEY"):
        get_judge("gemini:gemini-2.5-flash", JudgeOptions())


@pytest.mark.parametrize("spec, message", [
    ("nonsense", "expected gemini:MODEL"), ("foo:bar", "unknown judge 'foo'"),
    ("openai:localhost:8000#m", "http:// or https://"), ("openai:http://x/v1", "openai:URL#MODEL"),
    ("openai:http://user:pw@x/v1#m", "no credentials"), ("openai:http://x/v1?key=abc#m", "no credentials")])
def test_bad_judge_specs(spec: str, message: str) -> None:
    with pytest.raises(BenchError, match=re.escape(message)):
        get_judge(spec, JudgeOptions())


def test_judge_templates_are_versioned_and_checked(tmp_path: Path) -> None:
    assert re.fullmatch(r"reference-0-100@[0-9a-f]{8}", SINGLE.version)
    assert Template("x", SINGLE.text + " ", "single").version != Template("x", SINGLE.text, "single").version
    with pytest.raises(BenchError, match="unknown field"):
        checked(Template("t", "{prompt} {response} {answer}", "single"), ("prompt", "reference", "response"))
    with pytest.raises(BenchError, match="never shows the response"):
        single_template("Rate {prompt}")
    with pytest.raises(BenchError, match="cannot be filled in .*KeyError: 'width'"):
        checked(Template("t", "Rate {response:>{width}} vs {reference}", "single"), ("prompt", "reference", "response"))
    custom = tmp_path / "strict.txt"
    custom.write_text("Grade {response} for {prompt}; reply {{\"score\": N}}", encoding="utf-8")
    assert single_template(None, str(custom)).version.startswith("strict@")
    assert parse_judge_spec("openai:http://h:1/v1#m").url == "http://h:1/v1"


def test_local_judge_halves_its_batch_out_of_memory_and_caches_batch_by_batch(
        tmp_path: Path, tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = get_judge(f"hf:{tiny_model('gpt2')}", JudgeOptions(batch_size=4))
    monkeypatch.setenv("BENCH_FAULTS", "oom@judge-batch=4")
    _, answers = _ask(backend, tmp_path / "c.sqlite", _items(3))
    assert backend.batch_size == 2 and len(answers) == 6 and all(a.raw for a in answers)
    monkeypatch.setenv("BENCH_FAULTS", "oom@judge-batch=2,oom@judge-batch=1")
    with pytest.raises(BenchError, match="runs out of device memory even at one prompt per pass"):
        _ask(backend, tmp_path / "other.sqlite", _items(3))
    monkeypatch.delenv("BENCH_FAULTS")

    # Interrupted during its second batch, the judge keeps the first batch's replies (cached as they
    # arrive, batch by batch): a re-run pays only for the rest.
    backend = get_judge(f"hf:{tiny_model('gpt2')}", JudgeOptions(batch_size=2))
    generate, batches = backend.complete_batch, []

    def interrupted_at_the_second_batch(requests: Any) -> Any:
        batches.append(len(requests))
        if len(batches) == 2:
            raise KeyboardInterrupt
        return generate(requests)

    backend.complete_batch = interrupted_at_the_second_batch
    with pytest.raises(KeyboardInterrupt):
        _ask(backend, tmp_path / "interrupted.sqlite", _items(3))
    with sqlite3.connect(tmp_path / "interrupted.sqlite") as db:
        assert batches == [2, 2] and db.execute("SELECT count(*) FROM replies").fetchone()[0] == 2


def test_a_local_judge_answer_ends_at_its_closing_brace() -> None:
    from judges.local_hf import first_object_end

    prefill = '{"winner": "'
    assert parse_verdict(prefill + first_object_end('A"}\n{"winner": "B')) == "A"
    assert parse_verdict(prefill + 'A"}\n{"winner": "B') is None  # two verdicts: rejected, rightly
    assert first_object_end(" 85") == " 85" and parse_score('{"score": ' + first_object_end(" 85}, 90}")) == 85.0


def test_local_model_judge_parses_or_records_missing(tmp_path: Path, tiny_model: Any) -> None:
    backend = get_judge(f"hf:{tiny_model('gpt2')}", JudgeOptions(batch_size=4))
    metrics, answers = _ask(backend, tmp_path / "c.sqlite", _items(3), pairwise=True)
    assert len(answers) == 12
    for answer in answers:
        assert answer.raw and all(text.startswith(('{"score": ', '{"winner": "')) for text in answer.raw)
        assert all(text.count("}") <= 1 and (text.endswith("}") or "}" not in text) for text in answer.raw)
        assert answer.value is not None or answer.error  # a random model's babble is missing, never 0
    assert metrics["missing_answers"] == sum(a.value is None for a in answers)


# --- the CLI end to end: a tiny alpaca run judged by a scripted server ---------------------------

def _scripted_judge(prompt: str, number: int, body: dict[str, Any]) -> Respond:
    if "Response A" in prompt:
        return Respond('{"winner": "tie"}')
    return Respond('{"score": %d}' % (len(prompt) % 101))


def test_bench_judge_end_to_end_caches_and_never_writes_the_key(bench: Any, alpaca_run: tuple[Path, str],
                                                               data_dir: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    results, run_id = alpaca_run
    monkeypatch.setenv("BENCH_JUDGE_API_KEY", FAKE_KEY)
    with JudgeServer(_scripted_judge) as server:
        spec = f"openai:{server.url}/v1#judge-model"
        code, out, err = bench("judge", run_id, "--judge", spec, "--results", results, "--data-dir", data_dir,
                               "--judge-samples", 2, "--judge-price", "1,10")
        assert code == 0, err
        paid = len(server.requests)
        # the server reports 100 input and 5 output tokens per reply: $1 and $10 per million
        assert f"| {paid * 100}/{paid * 5} | {(paid * 100 * 1 + paid * 5 * 10) / 1e6:.4f} |" in out
        with sqlite3.connect(results / "judge_cache.sqlite") as cache:
            distinct = cache.execute("SELECT count(*) FROM replies").fetchone()[0]
        # 4 items x 2 samples x (2 single + 2 pairwise orders), identical questions asked once (a
        # tiny model often writes the same text before and after)
        assert paid == distinct and 0 < paid <= 4 * 2 * 4
        assert "## LLM judge" in out and "judge-model" in out and f"{paid} (0)" in out
        code, out, err = bench("judge", "alpaca", "--judge", spec, "--results", results, "--data-dir", data_dir,
                               "--judge-samples", 2)
        assert code == 0, err
        assert len(server.requests) == paid and re.search(r"\| 0 \(\d+\) \|", out)  # all from the cache
        assert "cached ones included" in out  # a re-run's tokens/cost are not new spending
        assert all(r["headers"]["Authorization"] == f"Bearer {FAKE_KEY}" for r in server.requests)
    stored = sqlite3.connect(results / "bench.sqlite").execute("SELECT metrics, info FROM judgments").fetchall()
    assert len(stored) == 1
    metrics, info = json.loads(stored[0][0]), json.loads(stored[0][1])
    assert metrics["pairwise"]["ties"] == 4 and info["templates"]["single"] == SINGLE.version
    assert (results / "runs" / run_id / info["items_file"]).is_file()
    for command in (("report", "--format", "html"), ("report", "--format", "md"), ("export", "--to", results / "x")):
        code, report_out, report_err = bench(*command, "--results", results)
        assert code == 0, report_err
        out, err = out + report_out, err + report_err
    # every format shows the judge table under its own heading, with the notes that say how to read it
    page = next((results / "reports").glob("*.html")).read_text()
    assert '<h2 id="judge">LLM judge</h2>' in page and "win rate: fine-tuned vs baseline" in page
    assert "## LLM judge" in out and "- score: 0-100 against the reference" in out
    assert (results / "x" / "judge.md").read_text().startswith("# LLM judge\n")
    with open(results / "x" / "judge.csv", newline="") as handle:
        exported = list(csv.DictReader(handle))
    assert len(exported) == 1 and exported[0]["run_id"] == run_id
    assert float(exported[0]["score_before"]) == pytest.approx(metrics["score_before"]["value"], rel=1e-5)
    assert float(exported[0]["score_before_high"]) == pytest.approx(metrics["score_before"]["ci"][1], rel=1e-5)
    low, high = metrics["score_delta"]["ci"]
    if low == high:  # every item's delta alike (the tiny model often writes the same text before and after)
        assert exported[0]["score_delta_low"] == exported[0]["score_delta_high"] == ""
        assert "score_delta: every item alike: no CI" in exported[0]["ci_note"]
    else:
        assert float(exported[0]["score_delta_high"]) == pytest.approx(high, rel=1e-5, abs=1e-9)
    assert int(exported[0]["ties"]) == 4 and int(exported[0]["calls"]) == metrics["calls"]
    leaked = [path for path in results.rglob("*") if path.is_file() and FAKE_KEY.encode() in path.read_bytes()]
    assert leaked == [] and FAKE_KEY not in out + err  # store, cache, tables, html, exports, logs


def test_bench_run_with_judge_judges_before_and_after(bench: Any, data_dir: Path, tiny_model: Any,
                                                      tmp_path: Path) -> None:
    with JudgeServer(_scripted_judge) as server:
        code, out, err = bench("run", "alpaca", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                               tmp_path / "r", "--train-samples", 8, "--eval-samples", 3, "--validation-samples", 2,
                               "--max-new-tokens", 4, "--epochs", 1, "--max-length", 192, "--judge-mode", "single",
                               "--judge", f"openai:{server.url}/v1#judge-model")
        assert code == 0, err
        assert 0 < len(server.requests) <= 3 * 2  # 3 items x before/after (identical outputs asked once)
    metrics = json.loads(sqlite3.connect(tmp_path / "r" / "bench.sqlite").execute(
        "SELECT metrics FROM judgments").fetchone()[0])
    assert metrics["score_before"]["n_scored"] == metrics["score_after"]["n_scored"] == 3
    assert "pairwise" not in metrics
    assert "## LLM judge" in out and list((tmp_path / "r" / "tables").glob("*__judge.md"))


def test_a_failing_judge_costs_the_judgments_not_the_runs(bench: Any, data_dir: Path, tiny_model: Any,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A judge that refuses the key: every model still trains and its before/after table prints; the
    judging failure is a warning per run and the exit code is 1, with the command to judge later."""
    monkeypatch.setenv("BENCH_JUDGE_API_KEY", FAKE_KEY)
    models = f"{tiny_model('gpt2')},{tiny_model('llama')}"
    with JudgeServer(lambda prompt, number, body: Respond(status=401)) as server:
        code, out, err = bench("run", "alpaca", "--models", models, "--data-dir", data_dir, "--results",
                               tmp_path / "r", "--train-samples", 8, "--eval-samples", 3, "--validation-samples", 2,
                               "--max-new-tokens", 4, "--epochs", 1, "--max-length", 192, "--judge-mode", "single",
                               "--judge", f"openai:{server.url}/v1#judge-model")
    assert code == 1 and "before / after fine-tuning" in out and out.count("| alpaca |") == 2
    assert err.count("was not judged: ") == 2 and "not authorized" in err
    assert err.strip().splitlines()[-1].startswith("error: 2 of 2 runs were not judged") and FAKE_KEY not in err
    with sqlite3.connect(tmp_path / "r" / "bench.sqlite") as db:
        assert db.execute("SELECT count(*) FROM stages WHERE stage='finetuned'").fetchone()[0] == 2


@pytest.mark.parametrize("extra, message", [
    (("--judge", "foo:bar"), "unknown judge"), (("--judge", "hf:/no/such/model"), "does not exist"),
    (("--judge", "hf:x", "--judge-samples", "0"), "--judge-samples must be between"),
    (("--judge", "hf:x", "--judge-concurrency", "0"), "--judge-concurrency"),
    (("--judge", "openai:ftp://x#m"), "http://"), (("--judge", "hf:x", "--judge-price", "free"), "--judge-price")])
def test_bad_judge_options_fail_before_any_work(bench: Any, data_dir: Path, tiny_model: Any, tmp_path: Path,
                                                extra: tuple[str, ...], message: str) -> None:
    code, out, err = bench("run", "alpaca", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                           "--results", tmp_path / "r", *extra)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "bench.sqlite").exists()


def test_judging_a_classification_task_is_refused(bench: Any, data_dir: Path, tiny_model: Any, tmp_path: Path) -> None:
    code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                         tmp_path / "r", "--judge", "hf:smollm2")
    assert code == 2 and "judging needs generated text" in err
