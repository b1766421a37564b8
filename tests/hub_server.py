"""A real local HTTP server speaking enough of the Hugging Face Hub API for `HfApi.create_repo` and
`HfApi.upload_folder` with small files: whoami, repo creation, preupload (every file "regular",
so its bytes travel base64 inside the commit) and the NDJSON commit. Uploaded files are kept in
memory; every request is recorded (method, path, headers, body) for assertions."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HubServer:
    def __init__(self, token: str, user: str = "tester", echo_token: bool = False):
        """`echo_token`: the server quotes the token it was sent back in its replies (whoami's
        name, the repo URL), as a careless or hostile server might; bench must not print it."""
        self.token, self.user, self.echo_token = token, user, echo_token
        self.requests: list[dict[str, Any]] = []
        self.repos: dict[str, dict[str, Any]] = {}
        self.validated: list[str] = []  # README contents sent to /api/validate-yaml  # repo id -> {"private": bool, "files": {path: bytes}}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                with server._lock:
                    server.requests.append({"method": method, "path": self.path, "headers": dict(self.headers),
                                            "body": raw})
                sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if sent != server.token:
                    self._reply(401, {"error": f"Invalid credentials in Authorization header: {sent}"})
                    return
                self._reply(*server.answer(method, self.path.split("?")[0], raw, sent))

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, method: str, path: str, raw: bytes, sent: str) -> tuple[int, Any]:
        echo = f" ({sent})" if self.echo_token else ""
        if method == "GET" and path == "/api/whoami-v2":
            return 200, {"type": "user", "name": self.user + echo, "orgs": []}
        if method == "POST" and path == "/api/repos/create":
            body = json.loads(raw)
            repo = f"{body.get('organization') or self.user}/{body['name']}"
            with self._lock:
                self.repos.setdefault(repo, {"private": body.get("visibility") == "private" or bool(body.get("private")),
                                             "files": {}})
            return 200, {"url": f"{self.url}/{repo}", "name": repo}
        if method == "POST" and path == "/api/validate-yaml":  # the hub checks a README's metadata first
            content = json.loads(raw).get("content", "")
            with self._lock:
                self.validated.append(content)
            return 200, {"errors": [], "warnings": []}
        parts = path.split("/")  # /api/models/{org}/{name}/{preupload|commit}/{revision}
        if method == "POST" and len(parts) == 7 and parts[:3] == ["", "api", "models"]:
            repo, action = f"{parts[3]}/{parts[4]}", parts[5]
            if repo not in self.repos:
                return 404, {"error": f"Repository {repo} not found"}
            if action == "preupload":
                files = json.loads(raw)["files"]
                return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                       for f in files]}
            if action == "commit":
                for line in raw.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        value = item["value"]
                        with self._lock:
                            self.repos[repo]["files"][value["path"]] = base64.b64decode(value["content"])
                return 200, {"commitUrl": f"{self.url}/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40}
        return 404, {"error": f"no route {method} {path}"}

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
