"""Gemini through Google's SDK. `gemini:gemini-2.5-flash`.

google-genai is Google's maintained SDK and the one used. google-generativeai, which the seeds used,
is deprecated (its import says so, support ended 2025, and offline it keeps retrying for ten
minutes before failing), so it is not supported; its generate calls map one to one onto
google-genai's. The key comes from GEMINI_API_KEY or GOOGLE_API_KEY, GEMINI_BASE_URL points the SDK
at a proxy or a local test server, and the SDK's own retries are off: the engine retries (backoff,
jitter, Retry-After) for every backend alike. Answers are asked for as JSON with a schema.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from harness.credentials import redact, secret_from_env
from harness.errors import BenchError
from harness.judging.backend import (
    JudgeOptions,
    JudgeRequest,
    JudgeSpec,
    Reply,
    TransientJudgeError,
    cut_off,
    http_failure,
    retry_after_seconds,
)
from harness.task.registry import judge

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Timeouts and dropped connections of whichever httpx the SDK runs on."""
    found: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for name in ("httpx", "httpx2"):
        try:
            module = __import__(name)
            found.append(module.TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


class GeminiJudge:
    def __init__(self, spec: JudgeSpec, options: JudgeOptions):
        found = secret_from_env(*KEY_VARIABLES)  # a malformed key stops here, before the SDK sees it
        if found is None:
            raise BenchError("--judge gemini needs an API key: export GEMINI_API_KEY (or GOOGLE_API_KEY)")
        self._key = found[1]
        self.model = spec.model.removeprefix("models/")
        self.id = f"gemini:{self.model}"
        self.concurrency, self.timeout = options.concurrency, options.timeout
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._key,)

    def _sdk(self) -> Any:
        with self._lock:  # one client for all worker threads (a dropped client closes its connections)
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> Any:
        try:
            from google import genai
            from google.genai import types
        except ImportError:
            raise BenchError("--judge gemini needs Google's SDK: pip install google-genai") from None
        # milliseconds, at least 1: a sub-millisecond --judge-timeout must not round to 0
        http = types.HttpOptions(timeout=max(1, round(self.timeout * 1000)), base_url=os.environ.get("GEMINI_BASE_URL"),
                                 retry_options=types.HttpRetryOptions(attempts=1))
        return genai.Client(api_key=self._key, http_options=http)

    def complete(self, request: JudgeRequest) -> Reply:
        from google.genai import errors, types

        config = types.GenerateContentConfig(
            temperature=request.temperature, seed=request.seed, max_output_tokens=request.answer.max_tokens,
            response_mime_type="application/json", response_json_schema=request.answer.schema)
        try:
            response = self._sdk().models.generate_content(model=self.model, contents=request.prompt, config=config)
        except errors.APIError as exc:
            headers = getattr(getattr(exc, "response", None), "headers", None) or {}
            raise http_failure(self.id, exc.code, redact(str(exc), self._key),
                               retry_after_seconds(headers.get("retry-after")), TRANSIENT_STATUS, KEY_VARIABLES) from None
        except _transport_errors() as exc:
            raise TransientJudgeError(f"{type(exc).__name__}: {redact(str(exc), self._key)[:200]}") from None
        except ValueError as exc:  # the SDK could not read the reply body (garbage from a proxy)
            raise TransientJudgeError(f"unreadable reply: {redact(str(exc), self._key)[:200]}") from None
        text = redact(_text(response), self._key)  # cached and stored as the raw reply: an echoed key is masked
        if _finish_reason(response) == "MAX_TOKENS":
            text = cut_off(text)
        usage = getattr(response, "usage_metadata", None)
        return Reply(text, getattr(usage, "prompt_token_count", None), getattr(usage, "candidates_token_count", None))


def _finish_reason(response: Any) -> str | None:
    candidates = getattr(response, "candidates", None) or []
    reason = getattr(candidates[0], "finish_reason", None) if candidates else None
    return getattr(reason, "name", reason)


def _text(response: Any) -> str:
    """The reply text; a blocked or empty candidate gives "" (unparseable, so asked again)."""
    try:
        return response.text or ""
    except (ValueError, AttributeError):
        return ""


@judge("gemini")
def gemini(spec: JudgeSpec, options: JudgeOptions) -> GeminiJudge:
    return GeminiJudge(spec, options)
