"""A local OpenAI-compatible chat-completions server for tests, scripted per test.

``POST /v1/chat/completions`` answers in OpenAI's shape (``choices[0].message.content``,
``usage.prompt_tokens``/``completion_tokens``) or with an OpenAI-style error
(``{"error": {"message", "type", "code"}}``), one scripted step per request (the last one
repeats). Every request is recorded (headers, JSON body) for the test to inspect.

    with llm_server() as llm:
        llm.script(fail(429, "slow down"), reply("hello", tokens_in=12, tokens_out=3))
        ... settings.llm_base_url = llm.base_url ...
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from support import http_server


@dataclass(frozen=True)
class Step:
    status: int = 200
    content: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    error: str = ""
    delay_s: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    raw_body: bytes | None = None  # sent as is instead of a JSON answer


def reply(content: str, tokens_in: int = 10, tokens_out: int = 5, delay_s: float = 0.0) -> Step:
    return Step(content=content, tokens_in=tokens_in, tokens_out=tokens_out, delay_s=delay_s)


def reply_json(data: Any, tokens_in: int = 10, tokens_out: int = 5) -> Step:
    return reply(json.dumps(data, ensure_ascii=False), tokens_in, tokens_out)


def fail(status: int, message: str, retry_after: str | None = None) -> Step:
    headers = (("Retry-After", retry_after),) if retry_after is not None else ()
    return Step(status=status, error=message, headers=headers)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.time)  # when it arrived (epoch s)


@dataclass
class LlmServer:
    base_url: str = ""
    steps: list[Step] = field(default_factory=lambda: [reply("ok")])
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *steps: Step) -> None:
        with self.lock:
            self.steps = list(steps)

    def next_step(self) -> Step:
        with self.lock:
            return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]


def _completion(step: Step, model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": step.content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": step.tokens_in,
                "completion_tokens": step.tokens_out,
                "total_tokens": step.tokens_in + step.tokens_out,
            },
        },
        ensure_ascii=False,
    ).encode()


def _error(step: Step) -> bytes:
    kind = "invalid_request_error" if step.status < 500 else "server_error"
    return json.dumps({"error": {"message": step.error, "type": kind, "code": step.status}}).encode()


@contextmanager
def llm_server() -> Iterator[LlmServer]:
    llm = LlmServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path != "/v1/chat/completions":
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode(), ())
                return
            body = json.loads(raw)
            with llm.lock:
                llm.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            step = llm.next_step()
            if step.delay_s:
                time.sleep(step.delay_s)
            if step.raw_body is not None:
                answer = step.raw_body
            elif step.status == 200:
                answer = _completion(step, str(body.get("model", "")))
            else:
                answer = _error(step)
            self._send(step.status, answer, step.headers)

        def _send(self, status: int, answer: bytes, headers: tuple[tuple[str, str], ...]) -> None:
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the client gave up (timeout)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as base:
        llm.base_url = base + "/v1"
        yield llm
