"""Any OpenAI-compatible chat-completions server: vLLM, llama.cpp server, Ollama, hosted APIs.

`openai:http://localhost:8000/v1#MODEL` posts to {URL}/chat/completions. The key, if the server
wants one, comes from BENCH_JUDGE_API_KEY or OPENAI_API_KEY; it travels only in the
Authorization header and is masked out of any error text. Structured output is asked for with
`response_format: json_schema`; a server that rejects that field is asked again without it (the
strict parser still applies), and remembered.
"""
from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import Any

from harness.credentials import redact, secret_from_env
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

KEY_VARIABLES = ("BENCH_JUDGE_API_KEY", "OPENAI_API_KEY")
TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAICompatibleJudge:
    def __init__(self, spec: JudgeSpec, options: JudgeOptions):
        self.model, self.url = spec.model, spec.url
        self.id = f"openai:{spec.url}#{spec.model}"
        self.concurrency, self.timeout = options.concurrency, options.timeout
        found = secret_from_env(*KEY_VARIABLES)  # a malformed key stops here, before any request
        self._key = found[1] if found else ""
        self._structured = True

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._key,) if self._key else ()

    def complete(self, request: JudgeRequest) -> Reply:
        body: dict[str, Any] = {
            "model": self.model, "messages": [{"role": "user", "content": request.prompt}],
            "temperature": request.temperature, "max_tokens": request.answer.max_tokens, "seed": request.seed}
        if self._structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "judgment", "schema": request.answer.schema, "strict": True}}
        try:
            payload = self._post(body)
        except _Rejected as exc:
            if "response_format" in body and "response_format" in exc.text:
                self._structured = False  # this server has no structured output: plain text + strict parser
                return self.complete(request)
            raise http_failure(self.id, exc.status, exc.text, None, TRANSIENT_STATUS, KEY_VARIABLES) from None
        try:
            message = payload["choices"][0]["message"]
            text = message["content"]
        except (KeyError, IndexError, TypeError):
            raise TransientJudgeError("reply without choices[0].message.content: "
                                      f"{redact(str(payload), self._key)[:200]}") from None
        if text is None and isinstance(message.get("refusal"), str):  # structured output declined: keep why
            text = f"refused: {message['refusal']}"
        usage = payload.get("usage") or {}
        if isinstance(text, list):  # content as parts ([{"type": "text", "text": ...}]): their text, in order
            text = "".join(part.get("text", "") for part in text if isinstance(part, dict)
                           and part.get("type") in ("text", "output_text") and isinstance(part.get("text"), str))
        text = text if isinstance(text, str) else json.dumps(text)
        if payload["choices"][0].get("finish_reason") == "length":
            text = cut_off(text)
        # the raw reply is cached and stored (when unparseable): a server that echoes the key gets it masked
        return Reply(redact(text, self._key), usage.get("prompt_tokens"), usage.get("completion_tokens"))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(f"{self.url}/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            text = redact(exc.read().decode("utf-8", "replace"), self._key)
            if exc.code in TRANSIENT_STATUS or exc.code in (401, 403):
                raise http_failure(self.id, exc.code, text, retry_after_seconds(exc.headers.get("Retry-After")),
                                   TRANSIENT_STATUS, KEY_VARIABLES) from None
            raise _Rejected(exc.code, text) from None  # a 4xx: maybe only the response_format field
        except (socket.timeout, TimeoutError) as exc:
            raise TransientJudgeError(f"timed out after {self.timeout:g} s ({exc})") from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            raise TransientJudgeError(f"cannot reach {self.url}: {redact(str(exc), self._key)}") from None
        except http.client.HTTPException as exc:  # a reply cut off mid-body, a garbled status line
            raise TransientJudgeError(f"broken reply: {type(exc).__name__}: {redact(str(exc), self._key)[:200]}"
                                      ) from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise TransientJudgeError(f"reply is not JSON: {redact(repr(raw), self._key)[:200]}") from None
        if not isinstance(payload, dict):
            raise TransientJudgeError(f"reply is not a JSON object: {redact(repr(raw), self._key)[:200]}")
        return payload


class _Rejected(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


@judge("openai")
def openai_compatible(spec: JudgeSpec, options: JudgeOptions) -> OpenAICompatibleJudge:
    return OpenAICompatibleJudge(spec, options)
