"""A deterministic scripted model behind a real OpenAI-compatible HTTP server.

Tests point litellm at it (`openai/scripted`, api_base http://127.0.0.1:PORT/v1), so the real
client path runs: HTTP, JSON, tool calls, token usage. Each request gets the next scripted
reply: a string (assistant text), a dict {"tool": name, "arguments": {...}} (one tool call),
or a callable(request_json) -> either of those. Every request is kept for assertions.

With `context_window` it refuses, as llama.cpp's server does, a request whose messages (by
agent/llm/window.py's estimate, the count the client fits its prompts to) and max_tokens
together exceed it: HTTP 400 with that server's error body, kept in `refused`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.llm.window import message_tokens

Reply = str | dict | Any


class ScriptedLLM:
    def __init__(self, replies: list[Reply] | None = None, default: Reply | None = None,
                 context_window: int | None = None):
        self.replies = list(replies or [])
        self.default = default
        self.context_window = context_window
        self.requests: list[dict] = []
        self.refused: list[dict] = []  # requests refused as longer than the context window
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    model = "openai/scripted"

    def start(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next(self, request: dict) -> Reply:
        with self._lock:
            self.requests.append(request)
            reply = self.replies.pop(0) if self.replies else self.default
        if reply is None:
            raise LookupError("the script has no reply left")
        return reply(request) if callable(reply) else reply

    def _too_long(self, request: dict) -> dict | None:
        """llama.cpp's error body for a request over the window (None: it fits)."""
        if self.context_window is None:
            return None
        messages = message_tokens(request.get("messages", []), request.get("tools"))
        completion = int(request.get("max_tokens") or 0)
        if messages + completion <= self.context_window:
            return None
        with self._lock:
            self.refused.append(request)
        return {"error": {
            "message": f"This model's maximum context length is {self.context_window} tokens. "
                       f"However, you requested {messages + completion} tokens ({messages} in "
                       f"the messages, {completion} in the completion). Please reduce the "
                       "length of the messages or completion.",
            "type": "invalid_request_error", "param": "messages",
            "code": "context_length_exceeded"}}

    def _handler(self):
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "scripted",
                                                             "object": "model"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                too_long = llm._too_long(request)
                if too_long is not None:
                    self._send(400, too_long)
                    return
                try:
                    reply = llm._next(request)
                except LookupError as e:
                    self._send(500, {"error": {"message": str(e)}})
                    return
                self._send(200, completion(request, reply))

        return Handler


def completion(request: dict, reply: Reply) -> dict:
    """An OpenAI chat.completion body for `reply`, with token counts from the text sizes."""
    prompt_chars = sum(len(str(m.get("content") or "")) for m in request.get("messages", []))
    message: dict = {"role": "assistant", "content": None}
    if isinstance(reply, dict) and "tool" in reply:
        arguments = json.dumps(reply.get("arguments", {}))
        message["tool_calls"] = [{"id": "call_1", "type": "function",
                                  "function": {"name": reply["tool"], "arguments": arguments}}]
        finish, out_chars = "tool_calls", len(arguments)
    else:
        message["content"] = str(reply)
        finish, out_chars = "stop", len(str(reply))
    prompt_tokens, completion_tokens = max(1, prompt_chars // 4), max(1, out_chars // 4)
    return {
        "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion",
        "created": int(time.time()), "model": request.get("model", "scripted"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
