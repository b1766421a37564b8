"""The contract between the judging engine and a judge backend, and the judge spec parser.

A backend turns one prompt into one reply. It raises `TransientJudgeError` for what may pass
(rate limits, server errors, timeouts, garbled transport) and `BenchError` for what will not (bad
key, unknown model); the engine owns retries, caching and parsing, so backends stay small.

A backend that holds a key lists it in a `secrets` property. The engine calls backends only
through `ask`/`ask_batch`, which mask those secrets out of every reply and every exception that
leaves the backend, whatever raised it: nothing a backend call returns or raises can carry its key
into a traceback, a log, the cache, the store or an export.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

from harness.credentials import redact
from harness.errors import BenchError

T = TypeVar("T")


@dataclass(frozen=True)
class AnswerFormat:
    """What a judgment must look like: a JSON schema for backends with structured output, and the
    start of that JSON, which a local model is made to continue (`{"score": `)."""

    schema: dict[str, Any]
    prefill: str
    max_tokens: int


@dataclass(frozen=True)
class JudgeRequest:
    prompt: str
    answer: AnswerFormat
    temperature: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Reply:
    text: str
    input_tokens: int | None = None  # as reported by the API; None when it reports nothing
    output_tokens: int | None = None


class TransientJudgeError(Exception):
    """A failure worth retrying; `retry_after` is the server's Retry-After in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class JudgeBackend(Protocol):
    id: str          # printable and stored: never contains a key
    model: str       # the judging model's name, to warn when a model judges itself
    concurrency: int  # requests in flight at once (1 for a local model)

    def complete(self, request: JudgeRequest) -> Reply: ...


class JudgeBackendError(Exception):
    """An unexpected exception from inside a judge backend, raised in its place with its text
    masked of the backend's secrets and with its frames (a bug still shows where it happened): the
    original may quote the key, as a transport library's error quotes the request's headers."""


def ask(backend: JudgeBackend, request: JudgeRequest) -> Reply:
    """`backend.complete(request)`, its secrets masked out of the reply and of any exception."""
    secrets = backend_secrets(backend)
    return _masked_reply(_masked_call(lambda: backend.complete(request), secrets, backend.id), secrets)


def ask_batch(backend: BatchJudgeBackend, requests: Sequence[JudgeRequest]) -> list[Reply]:
    """`backend.complete_batch(requests)`, masked as `ask` is."""
    secrets = backend_secrets(backend)
    replies = _masked_call(lambda: backend.complete_batch(requests), secrets, backend.id)
    return [_masked_reply(reply, secrets) for reply in replies]


def backend_secrets(backend: Any) -> tuple[str, ...]:
    """The values a backend holds that must never leave it (none for a local model)."""
    return tuple(secret for secret in getattr(backend, "secrets", ()) if secret)


def _masked_reply(reply: Reply, secrets: Sequence[str]) -> Reply:
    # the raw reply is cached and stored (when unparseable): a server that echoes the key gets it masked
    return replace(reply, text=redact(reply.text, *secrets)) if secrets else reply


def _masked_call(call: Callable[[], T], secrets: Sequence[str], judge_id: str) -> T:
    """call(), with any exception it raises replaced by one whose text is masked of `secrets`:
    the engine's two kinds keep their kind (and Retry-After), anything else becomes a
    JudgeBackendError. The replacement is raised outside the `except` and `from None`, so the
    original, its arguments and its chained causes are never printed with it."""
    if not secrets:
        return call()  # nothing to mask: a local model's errors keep their type
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - every exception leaves masked; Ctrl-C passes through
        text = redact(str(exc), *secrets)
        failure: Exception
        if isinstance(exc, TransientJudgeError):
            failure = TransientJudgeError(text, exc.retry_after)
        elif isinstance(exc, BenchError):
            failure = BenchError(text)
        else:
            failure = JudgeBackendError(f"judge {judge_id}: {type(exc).__name__}: {text}")
        failure = failure.with_traceback(exc.__traceback__)  # frames show source lines, never values
    raise failure from None


class BatchJudgeBackend(JudgeBackend, Protocol):
    """A backend that answers many prompts in one call (a local model batching on its device)."""

    def complete_batch(self, requests: Sequence[JudgeRequest]) -> list[Reply]: ...


@dataclass(frozen=True)
class JudgeSpec:
    scheme: str
    model: str
    url: str = ""
    options: dict[str, Any] = field(default_factory=dict)


SPEC_HELP = "gemini:MODEL, openai:URL#MODEL or hf:MODEL_ID_OR_ALIAS"


def parse_judge_spec(text: str) -> JudgeSpec:
    scheme, sep, rest = text.partition(":")
    if not sep or not rest.strip():
        raise BenchError(f"--judge {text!r}: expected {SPEC_HELP}")
    scheme = scheme.strip().lower()
    if scheme == "openai":
        url, hash_sign, model = rest.rpartition("#")
        if not hash_sign or not url or not model:
            raise BenchError(f"--judge {text!r}: an OpenAI-compatible judge is openai:URL#MODEL, e.g. "
                             "openai:http://localhost:8000/v1#Qwen2.5-7B-Instruct")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BenchError(f"--judge {text!r}: the URL must start with http:// or https://")
        if parts.username or parts.password or parts.query:
            raise BenchError("--judge: put no credentials or query string in the URL; the key comes from "
                             "BENCH_JUDGE_API_KEY or OPENAI_API_KEY in the environment")
        return JudgeSpec("openai", model.strip(), urlunsplit(parts._replace(fragment="")).rstrip("/"))
    return JudgeSpec(scheme, rest.strip())


def cut_off(text: str) -> str:
    """A reply the server cut at its token limit, with a number it may have cut mid-way marked
    ('{"score": 8' of 85 -> '{"score": [cut off]8'): that reply is unparseable (asked again, or
    missing with its raw text), never a smaller score."""
    return re.sub(r"[-+]?\d+(?:\.\d*)?$", lambda m: "[cut off]" + m.group(0), text)


@dataclass(frozen=True)
class JudgeOptions:
    timeout: float = 60.0   # seconds per HTTP request
    concurrency: int = 4    # HTTP requests in flight
    batch_size: int = 8     # prompts per forward pass of a local judge


def http_failure(judge_id: str, status: int, text: str, retry_after: float | None, transient: frozenset[int],
                 key_variables: tuple[str, ...]) -> Exception:
    """What an HTTP error status means for a judge: worth retrying, a key problem, or a refusal.
    `text` must already be redacted."""
    if status in transient:
        return TransientJudgeError(f"HTTP {status}: {text[:200]}", retry_after)
    if status in (401, 403):
        return BenchError(f"judge {judge_id}: HTTP {status} (not authorized); set {' or '.join(key_variables)} to a "
                          "valid key")
    return BenchError(f"judge {judge_id} refused the request (HTTP {status}): {text[:300]}")


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
