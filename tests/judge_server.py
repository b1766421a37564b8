"""A real local HTTP server speaking the OpenAI chat-completions protocol and Gemini's REST
`generateContent`, answering from a script: rate limits, server errors, slow replies, garbage
and valid judgments. Every request is recorded (path, headers, JSON body) for assertions."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Respond:
    text: str | None = None          # a judgment text, wrapped in the protocol's reply JSON
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None    # sent verbatim instead (garbage)
    delay: float = 0.0
    cut_after: int | None = None     # announce the whole body but send only this many bytes, then hang up


Script = Callable[[str, int, dict[str, Any]], Respond]  # (prompt, call number for this prompt, body) -> reply


class JudgeServer:
    def __init__(self, script: Script):
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                gemini = ":generateContent" in self.path
                prompt = (body["contents"][0]["parts"][0]["text"] if gemini
                          else body["messages"][0]["content"])
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    number = server._calls.get(prompt, 0)
                    server._calls[prompt] = number + 1
                reply = server.script(prompt, number, body)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw_body is not None:
                    payload = reply.raw_body
                elif reply.status != 200:
                    payload = json.dumps({"error": {"code": reply.status, "message": "scripted failure",
                                                    "status": "UNAVAILABLE"}}).encode()
                elif gemini:
                    payload = json.dumps({"candidates": [{"content": {"parts": [{"text": reply.text}], "role": "model"},
                                                          "finishReason": "STOP", "index": 0}],
                                          "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 5,
                                                            "totalTokenCount": 105}}).encode()
                else:
                    payload = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 5}}).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload if reply.cut_after is None else payload[:reply.cut_after])
                    if reply.cut_after is not None:
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "JudgeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
