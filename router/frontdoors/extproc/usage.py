"""What a response says about itself: usage, the answer's text, its first token, as the bytes stream past.

A ResponseReader is fed the upstream's response body chunk by chunk, in whatever pieces Envoy cuts it
into, and reads either a JSON completion or server-sent events (`data:` lines; `[DONE]` skipped; the
usage of the chunk that carries it, which the router makes sure is there by setting
`stream_options.include_usage`). Chat (`message.content`, `delta.content`) and completions (`text`).
It keeps at most `max_bytes` of a JSON body and of the answer's text: past that the answer is not
cached (the settlement says truncated) but usage is still read from a stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

EVENT_END = (b"\n\n", b"\r\n\r\n")


@dataclass(frozen=True)
class ResponseUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    text: str
    reported: bool  # the response carried a usage object
    complete: bool  # a JSON body parsed whole, or a stream that ended with [DONE] or a finish_reason
    error: str  # an error object in the body ("" when none)
    overflow: bool  # the body or its text passed max_bytes: the text is not all there


class ResponseReader:
    def __init__(self, max_bytes: int = 8 * 1024 * 1024, sse: bool | None = None):
        self.max_bytes = max_bytes
        self.sse = sse  # None: decided by the first bytes (a JSON body starts with '{')
        self._buf = bytearray()
        self._pieces: list[str] = []
        self._text_len = 0
        self._usage: dict[str, Any] | None = None
        self._done = False
        self._error = ""
        self._overflow = False
        self.first_token = False  # set once the first piece of the answer has been read

    def feed(self, chunk: bytes) -> bool:
        """Read a chunk; True when it held the answer's first text (for time to first token)."""
        if not chunk:
            return False
        if self.sse is None:
            start = chunk.lstrip()[:1]
            if not start:
                return False
            self.sse = start != b"{"
        if not self.sse:
            if len(self._buf) + len(chunk) > self.max_bytes:
                self._overflow = True
                return False
            self._buf += chunk
            return False
        self._buf += chunk
        had = self.first_token
        while True:
            cut, size = _event_end(self._buf)
            if cut < 0:
                break
            event = bytes(self._buf[:cut])
            del self._buf[:cut + size]
            self._event(event)
        if len(self._buf) > self.max_bytes:  # one event larger than the limit: not a stream we can read
            self._overflow = True
            self._buf.clear()
        return self.first_token and not had

    def _event(self, event: bytes) -> None:
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self._done = True
                continue
            try:
                obj = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                self._chunk(obj)

    def _chunk(self, obj: dict[str, Any]) -> None:
        if isinstance(obj.get("usage"), dict):
            self._usage = obj["usage"]
        if isinstance(obj.get("error"), dict | str):
            self._error = _error_text(obj["error"])
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(piece, str) and piece:
                self.first_token = True
                self._keep(piece)
            if choice.get("finish_reason"):
                self._done = True

    def _keep(self, piece: str) -> None:
        if self._text_len + len(piece) > self.max_bytes:
            self._overflow = True
            return
        self._pieces.append(piece)
        self._text_len += len(piece)

    def finish(self) -> ResponseUsage:
        if not self.sse and self._buf and not self._overflow:
            self._json_body()
        usage = self._usage or {}
        details = usage.get("prompt_tokens_details") or {}
        return ResponseUsage(
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            cached_tokens=_count(details.get("cached_tokens") if isinstance(details, dict) else 0),
            text="".join(self._pieces),
            reported=self._usage is not None,
            complete=self._done,
            error=self._error,
            overflow=self._overflow,
        )

    def _json_body(self) -> None:
        try:
            obj = json.loads(bytes(self._buf))
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._error = self._error or "the response body is not JSON"
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            self._error = _error_text(obj["error"])
        if isinstance(obj.get("usage"), dict):
            self._usage = obj["usage"]
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            message = choice.get("message")
            piece = message.get("content") if isinstance(message, dict) else choice.get("text")
            if isinstance(piece, str):
                self.first_token = self.first_token or bool(piece)
                self._keep(piece)
            self._done = True


def _event_end(buf: bytearray) -> tuple[int, int]:
    """The first event boundary in buf and its length, or (-1, 0)."""
    best, size = -1, 0
    for sep in EVENT_END:
        i = buf.find(sep)
        if i >= 0 and (best < 0 or i < best):
            best, size = i, len(sep)
    return best, size


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)[:500]
    return str(error)[:500]
