"""A loopback HTTP server that records every request and answers from a script.

Stands in for the X, Mastodon and webhook servers: tests read back exactly
what a client sent (method, path, headers, body) and choose the answers.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = dataclasses.field(default_factory=dict)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


class RecordingServer:
    """Records requests; answers with queued :class:`Answer` s, then ``default``."""

    def __init__(self, default: Answer | None = None) -> None:
        self.requests: list[Recorded] = []
        self.answers: deque[Answer] = deque()
        self.default = default or Answer()
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with recorder._lock:
                    recorder.requests.append(
                        Recorded(
                            self.command, self.path, dict(self.headers.items()), body
                        )
                    )
                    answer = (
                        recorder.answers.popleft()
                        if recorder.answers
                        else recorder.default
                    )
                payload = (
                    answer.body
                    if isinstance(answer.body, bytes)
                    else json.dumps(answer.body).encode()
                )
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def queue(self, *answers: Answer) -> None:
        self.answers.extend(answers)
