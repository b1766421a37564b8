"""The contract between the judging engine and a judge backend, and the judge spec parser.

A backend turns one prompt into one reply. It raises `TransientJudgeError` for what may pass
(rate limits, server errors, timeouts, garbled transport) and `BenchError` for what will not (bad
key, unknown model); the engine owns retries, caching and parsing, so backends stay small.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence
from urllib.parse import urlsplit, urlunsplit

from harness.errors import BenchError


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


def secret_from_env(*names: str) -> tuple[str, str] | None:
    """(variable name, value) of the first of `names` set and non-empty in the environment."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def redact(text: str, *secrets: str) -> str:
    """`text` with every secret replaced, and anything shaped like a bearer token or key= query
    masked: error bodies may echo a request back, and those end up in logs and the store."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(?i)(bearer\s+|key=|api[_-]?key\"?\s*[:=]\s*\"?)[A-Za-z0-9._\-]{6,}", r"\1***", text)


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
