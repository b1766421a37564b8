"""Ask a judge many questions: cache first, then the backend (batched or concurrent, with
retries), then strict parsing; an unparseable reply is asked again, up to `parse_retries` times.

Every question ends as an Answer with a value, or as missing with the raw replies and the reason.
Work proceeds in rounds (attempt 0 for all, then attempt 1 for the unparsed, ...), and each reply
is cached the moment it arrives, so a crash mid-round loses nothing already paid for.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from harness.errors import BenchError
from harness.faults import reached
from harness.judging.backend import AnswerFormat, JudgeBackend, JudgeRequest, Reply, ask, ask_batch
from harness.judging.cache import JudgeCache, cache_key
from harness.judging.retry import GaveUp, RetryPolicy, call_with_retries
from harness.progress import progress, scope

Log = Callable[[str], None]
# Sampling temperature for repeated samples and for re-asking after an unparseable reply:
# asking a deterministic judge the same thing again would return the same reply.
SAMPLE_TEMPERATURE = 0.7
# A judge that has not answered once in this many questions (each retried) is down, not flaky:
# stop there with its error instead of sending every remaining question through the retries.
UNREACHABLE_AFTER = 8


@dataclass(frozen=True)
class Query:
    key: str  # hash of (judge, template version, rendered prompt, sample index); the cache key adds
    # the attempt and the temperature (`_attempt_key`)
    template: str
    prompt: str
    sample: int
    answer: AnswerFormat
    parse: Callable[[str], Any]


@dataclass
class Answer:
    value: Any = None
    raw: list[str] = field(default_factory=list)
    error: str | None = None
    calls: int = 0        # requests sent (retries included)
    cache_hits: int = 0
    unparsed: int = 0     # replies the parser rejected
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class EngineSettings:
    samples: int = 1
    parse_retries: int = 2
    retry: RetryPolicy = RetryPolicy()
    price: tuple[float, float] | None = None  # USD per million input, output tokens: the cost so far in progress


def ask_all(backend: JudgeBackend, queries: Sequence[Query], cache: JudgeCache, settings: EngineSettings,
            log: Log = lambda _: None) -> list[Answer]:
    tally = _Tally(answers=[Answer() for _ in queries], price=settings.price)
    pending = list(range(len(queries)))
    for attempt in range(settings.parse_retries + 1):
        to_fetch = _answer_from_cache(queries, pending, attempt, cache, settings, tally)
        if to_fetch:
            log(f"  judge {backend.id}: {len(to_fetch)} requests (attempt {attempt + 1}), "
                f"{len(pending) - sum(map(len, to_fetch.values()))} from the cache")
            _ask_backend(backend, queries, to_fetch, attempt, cache, settings, tally)
        answers = tally.answers
        pending = [i for i in pending if answers[i].value is None and answers[i].error is None]
        if not pending:
            break
    for i in pending:
        tally.answers[i].error = f"unparseable: {len(tally.answers[i].raw)} replies, none in the asked format"
    return tally.answers


@dataclass
class _Tally:
    """The answers of one `ask_all` call and its running counts (for the progress bar and the
    unreachable-judge check)."""

    answers: list[Answer]
    price: tuple[float, float] | None
    cached: int = 0  # replies put in the cache by this call
    replied: int = 0  # replies received in this call, from the backend or the cache
    gave_up: int = 0
    cache_hits: int = 0
    retries: int = 0
    spent: float = 0.0  # USD x 1e6 of the replies paid for in this call
    counted: set[str] = field(default_factory=set)  # replies whose tokens are counted (identical
    # questions share one reply)

    def record(self, queries: Sequence[Query], i: int, key: str, reply: Reply) -> None:
        _record(self.answers[i], queries[i], reply, count_tokens=key not in self.counted)
        self.counted.add(key)


def _answer_from_cache(queries: Sequence[Query], pending: Sequence[int], attempt: int, cache: JudgeCache,
                       settings: EngineSettings, tally: _Tally) -> dict[str, list[int]]:
    """Record the cached replies; return the rest, grouped by key (identical questions are asked once)."""
    to_fetch: dict[str, list[int]] = {}
    for i in pending:
        key = _attempt_key(queries[i], attempt, settings.samples)
        hit = cache.get(key)
        if hit is None:
            to_fetch.setdefault(key, []).append(i)
        else:
            tally.answers[i].cache_hits += 1
            tally.cache_hits += 1
            tally.replied += 1
            tally.record(queries, i, key, hit)
    return to_fetch


def _ask_backend(backend: JudgeBackend, queries: Sequence[Query], to_fetch: dict[str, list[int]], attempt: int,
                 cache: JudgeCache, settings: EngineSettings, tally: _Tally) -> None:
    """Ask each distinct question once; cache and record each reply the moment it arrives."""
    price_in, price_out = tally.price or (0.0, 0.0)
    key_of = {group[0]: key for key, group in to_fetch.items()}  # one asker per distinct question
    label = f"judge {backend.id}" + (f" (attempt {attempt + 1})" if attempt else "")
    with progress(label, total=len(key_of), unit="requests") as bar:
        for first, result, calls in _fetch(backend, queries, list(key_of), attempt, settings):
            key = key_of[first]
            tally.answers[first].calls += calls
            tally.retries += calls - 1
            if not isinstance(result, GaveUp):
                tally.spent += (result.input_tokens or 0) * price_in + (result.output_tokens or 0) * price_out
            bar.advance(1, cache_hits=tally.cache_hits, retries=tally.retries,
                        failed=tally.gave_up + isinstance(result, GaveUp),
                        cost_usd=tally.spent / 1e6 if tally.price else None)
            if isinstance(result, GaveUp):
                _gave_up(backend, result, to_fetch[key], len(key_of), tally)
                continue
            tally.replied += 1
            cache.put(key, backend.id, queries[first].template, result)
            tally.cached += 1
            reached("judge-replies", tally.cached)
            for i in to_fetch[key]:
                tally.record(queries, i, key, result)


def _gave_up(backend: JudgeBackend, result: GaveUp, indices: Sequence[int], distinct: int, tally: _Tally) -> None:
    tally.gave_up += 1
    if tally.replied == 0 and tally.gave_up >= min(UNREACHABLE_AFTER, distinct):
        raise BenchError(f"judge {backend.id} is not answering: the first {tally.gave_up} questions all "
                         f"failed ({result}); check that it is reachable, then re-run (no "
                         "judgment was stored)")
    for i in indices:
        tally.answers[i].error = str(result)


def _attempt_key(query: Query, attempt: int, samples: int) -> str:
    # The temperature is part of the question: a greedy reply (one sample) must never stand in for
    # a sampled one (several samples), nor the other way round.
    return cache_key(query.key, attempt, _request(query, attempt, samples).temperature)


def _record(answer: Answer, query: Query, reply: Reply, count_tokens: bool = True) -> None:
    answer.raw.append(reply.text)
    if count_tokens:
        answer.input_tokens += reply.input_tokens or 0
        answer.output_tokens += reply.output_tokens or 0
    try:
        value = query.parse(reply.text)
    except Exception:  # noqa: BLE001 - a parser bug on one odd reply must not end the command
        value = None  # (the reply is cached: an exception here would recur on every re-run)
    if value is None:
        answer.unparsed += 1
    else:
        answer.value = value


def _request(query: Query, attempt: int, samples: int) -> JudgeRequest:
    greedy = samples == 1 and attempt == 0
    return JudgeRequest(query.prompt, query.answer, temperature=0.0 if greedy else SAMPLE_TEMPERATURE,
                        seed=query.sample * 1000 + attempt)


def _fetch(backend: JudgeBackend, queries: Sequence[Query], indices: Sequence[int], attempt: int,
           settings: EngineSettings):
    """Yield (index, Reply or GaveUp, calls) as replies arrive."""
    requests = {i: _request(queries[i], attempt, settings.samples) for i in indices}
    if getattr(backend, "complete_batch", None) is not None:  # a local model: batched passes, nothing
        # transient to retry; a batch's replies are yielded (and cached) before the next is
        # generated, so a crash loses one batch
        size = max(1, int(getattr(backend, "batch_size", 8)))
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            with scope("judge batch", transient=True):  # the requests' bar counts them; no line per batch
                replies = ask_batch(backend, [requests[i] for i in chunk])
            for i, reply in zip(chunk, replies):
                yield i, reply, 1
        return
    with ThreadPoolExecutor(max_workers=max(1, backend.concurrency)) as pool:
        futures = {pool.submit(_one, backend, requests[i], settings.retry, i): i for i in indices}
        try:
            for future in as_completed(futures):
                yield futures[future], *future.result()
        except BaseException:
            for future in futures:  # a fatal error (bad key) or Ctrl-C: stop sending more
                future.cancel()
            raise


def _one(backend: JudgeBackend, request: JudgeRequest, policy: RetryPolicy, seed: int) -> tuple[Reply | GaveUp, int]:
    try:
        return call_with_retries(lambda: ask(backend, request), policy, seed=seed)
    except GaveUp as exc:
        return exc, policy.attempts
