"""API keys of odd shapes, and keys a server echoes back, through the real CLI against the real
local judge server (OpenAI protocol, and Gemini through Google's SDK): a malformed key stops with
one `error:` line naming the variable, before any request; no key, nor any 8 characters of one,
ever reaches stdout, stderr, the results store, the run folders, the judge cache or an export."""
from __future__ import annotations

import json
import random
import shutil
import sqlite3
import string
import traceback
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.cli import main
from harness.task import registry
from harness.errors import BenchError
from harness.judging.backend import JudgeBackendError, JudgeRequest, Reply, TransientJudgeError
from harness.judging.cache import JudgeCache
from harness.judging.engine import EngineSettings, ask_all
from harness.judging.grading import Item, plan_queries
from harness.judging.retry import RetryPolicy
from harness.judging.templates import SINGLE
from judge_server import JudgeServer, Respond

KEY_VARIABLES = ("BENCH_JUDGE_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
FRAGMENT = 8  # no run of this many characters of a key may show anywhere
FAST = EngineSettings(samples=1, parse_retries=0, retry=RetryPolicy(attempts=4, base_seconds=0.01, cap_seconds=0.05))


def _random(length: int, seed: int) -> str:
    return "".join(random.Random(seed).choices(string.ascii_letters + string.digits, k=length))


BODY = _random(40, 1)
GOOD_KEY = "sk-proj-" + _random(48, 2)
# name -> (the key, the words its error must say)
ODD_KEYS = {
    "newline": (f"sk-{BODY[:20]}\n{BODY[20:]}", "contains a newline"),
    "typographic-quotes": (f"\u201csk-{BODY}\u201d", "contains a non-ASCII character (typographic quotes?"),
    "non-ascii": (f"sk-{BODY[:20]}\u00e9\u00df{BODY[20:]}", "contains a non-ASCII character"),
    "tab": (f"sk-{BODY[:20]}\t{BODY[20:]}", "contains a tab"),
    "10k-characters": ("sk-" + _random(10_000, 3), "is 10003 characters long"),
}
SCHEMES = {"BENCH_JUDGE_API_KEY": "openai", "OPENAI_API_KEY": "openai", "GEMINI_API_KEY": "gemini",
           "GOOGLE_API_KEY": "gemini"}


def _fragments(key: str) -> set[bytes]:
    """Every run of FRAGMENT characters of the key, as a file would hold it (UTF-8)."""
    return {key[i:i + FRAGMENT].encode() for i in range(len(key) - FRAGMENT + 1)}


def _leaks(data: bytes, fragments: set[bytes]) -> bool:
    return any(data[i:i + FRAGMENT] in fragments for i in range(len(data) - FRAGMENT + 1))


def assert_never_written(key: str, results: Path, *texts: str) -> None:
    fragments = _fragments(key)
    for text in texts:
        assert not _leaks(text.encode(), fragments), f"the key shows in the output: {text[-2000:]}"
    leaked = [path for path in results.rglob("*") if path.is_file() and _leaks(path.read_bytes(), fragments)]
    assert leaked == [], f"the key is in {leaked}"


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, tiny_model: Any) -> tuple[Path, str]:
    """A finished alpaca run (baseline and fine-tuned generations stored), built once for the module."""
    results = tmp_path_factory.mktemp("keys") / "results"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("BENCH_DATA_DIR", raising=False)
        env.setenv("BENCH_CACHE", str(results.parent / "cache"))
        code = main([str(a) for a in (
            "run", "alpaca", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", results,
            "--train-samples", 8, "--eval-samples", 3, "--validation-samples", 2, "--max-new-tokens", 4,
            "--epochs", 1, "--max-length", 192)])
    assert code == 0
    run_id = sqlite3.connect(results / "bench.sqlite").execute("SELECT run_id FROM runs").fetchone()[0]
    return results, run_id


@pytest.fixture
def results(stored_run: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the stored run's results for one test, with no judge key in the environment."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    copy = tmp_path / "results"
    shutil.copytree(stored_run[0], copy)
    yield copy


def _judge(bench: Any, results: Path, run_id: str, data_dir: Path, scheme: str, server: JudgeServer,
           monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.setenv("GEMINI_BASE_URL", server.url)
    spec = f"openai:{server.url}/v1#judge-model" if scheme == "openai" else "gemini:gemini-2.5-flash"
    return bench("judge", run_id, "--judge", spec, "--results", results, "--data-dir", data_dir,
                 "--judge-mode", "single", "--judge-timeout", 5)


def _export(bench: Any, results: Path) -> tuple[str, str]:
    code, out, err = bench("export", "--to", results / "exported", "--results", results)
    assert code == 0, err
    return out, err


@pytest.mark.parametrize("shape", list(ODD_KEYS))
@pytest.mark.parametrize("variable", list(SCHEMES))
def test_a_malformed_key_is_one_error_naming_its_variable_before_any_request(
        variable: str, shape: str, bench: Any, results: Path, stored_run: tuple[Path, str], data_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key, problem = ODD_KEYS[shape]
    monkeypatch.setenv(variable, key)
    store_before = (results / "bench.sqlite").read_bytes()
    with JudgeServer(lambda prompt, number, body: Respond('{"score": 50}')) as server:
        code, out, err = _judge(bench, results, stored_run[1], data_dir, SCHEMES[variable], server, monkeypatch)
        assert server.requests == []  # stopped before the key went anywhere
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"error: {variable} {problem}"), err
    assert (results / "bench.sqlite").read_bytes() == store_before  # nothing written in the store
    assert_never_written(key, results, out, err, *_export(bench, results))


@pytest.mark.parametrize("variable", ["BENCH_JUDGE_API_KEY", "GEMINI_API_KEY"])
def test_bench_run_with_a_malformed_key_stops_before_training(variable: str, bench: Any, data_dir: Path,
                                                             tiny_model: Any, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    key = ODD_KEYS["newline"][0]
    monkeypatch.setenv(variable, key)
    with JudgeServer(lambda prompt, number, body: Respond('{"score": 50}')) as server:
        monkeypatch.setenv("GEMINI_BASE_URL", server.url)
        spec = f"openai:{server.url}/v1#judge-model" if SCHEMES[variable] == "openai" else "gemini:g"
        code, out, err = bench("run", "alpaca", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                               tmp_path / "r", "--train-samples", 8, "--eval-samples", 3, "--validation-samples", 2,
                               "--max-new-tokens", 4, "--epochs", 1, "--max-length", 192, "--judge", spec)
        assert server.requests == []
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {variable} contains a newline"), err
    assert not (tmp_path / "r").exists()  # no store, no run folder: nothing trained
    assert_never_written(key, tmp_path, out, err)


def test_a_key_file_read_with_its_trailing_newline_is_the_key(bench: Any, results: Path,
                                                             stored_run: tuple[Path, str], data_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`export BENCH_JUDGE_API_KEY=$(cat key.txt)` or a copied key with a space at its end: the
    surrounding whitespace is stripped, the key travels alone, and the judge server echoing it
    in a shortened form (as OpenAI does) shows no part of it anywhere."""
    monkeypatch.setenv("BENCH_JUDGE_API_KEY", f" {GOOD_KEY}\r\n")
    echo = f"your key {GOOD_KEY[:12]}{'*' * 30}{GOOD_KEY[-4:]} has low quota"
    with JudgeServer(lambda prompt, number, body: Respond('{"score": 50} ' + echo)) as server:
        code, out, err = _judge(bench, results, stored_run[1], data_dir, "openai", server, monkeypatch)
        assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {GOOD_KEY}"}
    assert code == 0, err
    assert_never_written(GOOD_KEY, results, out, err, *_export(bench, results))


def _echo(key: str) -> str:
    # the whole key, and the shortened form OpenAI's "Incorrect API key provided" uses
    return f"Incorrect API key provided: {key[:12]}{'*' * 30}{key[-4:]} (request: Bearer {key}, key={key})"


@pytest.mark.parametrize("where", ["error-body", "judgment-reply"])
@pytest.mark.parametrize("variable", ["BENCH_JUDGE_API_KEY", "GEMINI_API_KEY"])
def test_a_key_the_server_echoes_back_is_masked_everywhere(variable: str, where: str, bench: Any, results: Path,
                                                          stored_run: tuple[Path, str], data_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An error body (HTTP 400, shown in the error line) or a 200 reply (unparseable: cached and
    stored as the raw text of a missing answer) that quotes the key, whole or shortened."""
    monkeypatch.setenv(variable, GOOD_KEY)
    if where == "error-body":
        reply = Respond(status=400, raw_body=json.dumps({"error": {
            "code": 400, "message": _echo(GOOD_KEY), "status": "INVALID_ARGUMENT"}}).encode())
    else:
        reply = Respond(_echo(GOOD_KEY))
    with JudgeServer(lambda prompt, number, body: reply) as server:
        code, out, err = _judge(bench, results, stored_run[1], data_dir, SCHEMES[variable], server, monkeypatch)
        assert server.requests
    if where == "error-body":
        assert code == 2 and err.count("error:") == 1 and "HTTP 400" in err and "***" in err, err
    else:
        assert code == 0, err
        stored = sqlite3.connect(results / "bench.sqlite").execute("SELECT metrics FROM judgments").fetchone()[0]
        assert json.loads(stored)["missing_answers"] > 0  # the echo is no judgment
    assert_never_written(GOOD_KEY, results, out, err, *_export(bench, results))


class SDKBackend:
    """A judge backend like a plugin's over some SDK whose exceptions quote the key: in the message,
    in the arguments, in the chained cause."""

    id, model, concurrency = "sdk:model", "model", 1

    def __init__(self, key: str, failure: str):
        self._key, self.failure = key, failure

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._key,)

    def complete(self, request: JudgeRequest) -> Reply:
        if self.failure == "transient":
            raise TransientJudgeError(f"rate limited for {self._key[:16]}...")
        try:
            raise KeyError(f"header x-api-key={self._key!r}")
        except KeyError as cause:
            raise ValueError("bad request", {"headers": {"Authorization": f"Bearer {self._key}"}}) from cause


@pytest.mark.parametrize("failure", ["transient", "unexpected"])
def test_every_exception_leaving_a_backend_is_masked(failure: str, tmp_path: Path) -> None:
    """The engine calls backends only through the masking boundary: a transient error (retried,
    then quoted as the reason) and an unexpected one (a traceback) carry no key."""
    items = [Item("0", "task", "reference", "before", "after")]
    planned = plan_queries("sdk:model", SINGLE, None, items, 1)
    cache = JudgeCache(tmp_path / "c.sqlite")
    try:
        if failure == "transient":  # retried, given up, then the judge is "not answering" with that reason
            with pytest.raises(BenchError, match=r"gave up after 4 attempts: rate limited for \*\*\*") as raised:
                ask_all(SDKBackend(GOOD_KEY, failure), [q for _, q in planned], cache, FAST)
            shown = str(raised.value)
        else:
            with pytest.raises(JudgeBackendError, match=r"judge sdk:model: ValueError: \('bad request'") as raised:
                ask_all(SDKBackend(GOOD_KEY, failure), [q for _, q in planned], cache, FAST)
            shown = "".join(traceback.format_exception(raised.value))
            assert "Bearer ***" in shown and "raise ValueError" in shown  # masked, with where it happened
    finally:
        cache.close()
    assert not _leaks(shown.encode(), _fragments(GOOD_KEY)), shown
    assert_never_written(GOOD_KEY, tmp_path)


def test_a_plugin_backend_that_raises_with_its_key_ends_in_a_masked_traceback(
        bench: Any, results: Path, stored_run: tuple[Path, str], data_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry.task_names()  # discover first, so the entry below is not overwritten by discovery
    monkeypatch.setitem(registry._JUDGES, "sdk", lambda spec, options: SDKBackend(GOOD_KEY, "unexpected"))
    with pytest.raises(JudgeBackendError) as raised:  # a bug keeps its traceback, masked
        bench("judge", stored_run[1], "--judge", "sdk:model", "--results", results, "--data-dir", data_dir)
    shown = "".join(traceback.format_exception(raised.value))
    assert "raise ValueError" in shown and not _leaks(shown.encode(), _fragments(GOOD_KEY)), shown
    assert_never_written(GOOD_KEY, results, *_export(bench, results))


def test_a_crash_outside_the_backends_that_quotes_a_key_prints_its_traceback_masked(
        bench: Any, results: Path, stored_run: tuple[Path, str], data_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's last line of defence: a plugin's judge factory failing with the key of its own
    variable in the message (before any backend call) prints the traceback with the key masked."""
    monkeypatch.setenv("SDK_API_KEY", GOOD_KEY)

    def factory(spec: Any, options: Any) -> Any:
        raise RuntimeError(f"cannot set up a client for key {GOOD_KEY[:20]}")

    registry.task_names()
    monkeypatch.setitem(registry._JUDGES, "sdk", factory)
    code, out, err = bench("judge", stored_run[1], "--judge", "sdk:model", "--results", results,
                           "--data-dir", data_dir)
    assert code == 1 and "Traceback" in err and "RuntimeError: cannot set up a client for key ***" in err, err
    assert_never_written(GOOD_KEY, results, out, err)
