"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for the tests.

Paths (under any prefix, e.g. ``/ok/v1/chat/completions``):

* ``/ok/...``   answers ``"echo: <last user message>"`` with usage; streams when asked.
* ``/fail/...`` answers HTTP 400 with an error body (lionagi does not retry it).
* ``/slow/...`` holds every request until :meth:`ModelServer.release` (no sleeps).

Every request is counted by (prefix, last user message), and its headers are kept.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ModelServer:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.headers: list[dict[str, str]] = []
        self.gate = threading.Event()
        self.hold: set[str] = set()  # messages /ok/ holds until release()
        self.arrived = threading.Condition()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prefix = self.path.strip("/").split("/")[0]
                text = str(body["messages"][-1]["content"])
                with server._lock:
                    server.counts[(prefix, text)] += 1
                    server.headers.append(dict(self.headers))
                with server.arrived:
                    server.arrived.notify_all()
                if prefix == "slow" or text in server.hold:
                    server.gate.wait(timeout=60)
                if prefix == "fail":
                    self._send(400, {"error": {"message": "bad request for the test"}})
                    return
                answer = f"echo: {text}"
                if body.get("stream"):
                    self._stream(body["model"], answer)
                    return
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                    },
                )

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, model: str, answer: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for word in answer.split(" "):
                    chunk = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [
                            {"index": 0, "delta": {"content": word}, "finish_reason": None}
                        ],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}/{prefix}/v1"

    def start(self) -> ModelServer:
        self._thread.start()
        return self

    def release(self) -> None:
        self.gate.set()

    def wait_for(self, prefix: str, count: int, timeout: float = 30.0) -> bool:
        """Until ``count`` requests reached ``prefix`` (False on timeout)."""
        with self.arrived:
            return self.arrived.wait_for(
                lambda: sum(n for (p, _), n in self.counts.items() if p == prefix) >= count,
                timeout=timeout,
            )

    def stop(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
