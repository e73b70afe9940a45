"""Parsing and validating a Route request into the router's own view of it.

Validation is a pure function of the proto message and the limits; a bad
request raises InvalidRequest naming the field, which the service answers
with INVALID_ARGUMENT.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from switchpoint.router.signals.tokens import estimate_tokens
from switchpoint.v1 import router_pb2

ROLES = ("system", "developer", "user", "assistant", "tool")
MESSAGE_OVERHEAD_TOKENS = 4  # chat templates add a few tokens per message (role markers, separators)


T = TypeVar("T")


class lazy(Generic[T]):
    """A computed-once attribute without cached_property's per-instance lock (Python 3.11).

    A non-data descriptor: the first access stores the value in the instance's
    __dict__, and every later access finds it there without calling anything.
    """

    def __init__(self, compute: Callable[[Any], T]):
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, instance: Any, owner: type | None = None) -> T:
        value = self.compute(instance)
        instance.__dict__[self.name] = value
        return value


class InvalidRequest(Exception):
    """A request the router refuses; the message names the field."""


@dataclass(frozen=True)
class RequestLimits:
    max_prompt_bytes: int = 4 * 1024 * 1024  # content of all messages together (~1M tokens)
    max_messages: int = 10_000
    max_metadata_entries: int = 256
    max_metadata_bytes: int = 64 * 1024
    max_id_length: int = 253
    max_tools_bytes: int = 1024 * 1024
    max_stop_sequences: int = 16
    max_sampling_text: int = 64 * 1024  # each stop sequence, and response_format


class Turn(Protocol):
    """A chat message: the proto ChatMessage on the server, a ChatTurn where requests are built in Python."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str


@dataclass
class RouteInput:
    """A validated Route request, with the derived values signals share (computed once)."""

    request_id: str
    model: str
    messages: Sequence[Turn]
    tenant: str = ""
    user: str = ""
    session: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    max_tokens: int | None = None
    stream: bool = False
    tools_present: bool = False
    sampling: router_pb2.Sampling | None = None  # None when the frontend sent none
    tools_json: str = ""

    @lazy
    def last_user_text(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    @lazy
    def user_text(self) -> str:
        return "\n".join(m.content for m in self.messages if m.role == "user")

    @lazy
    def all_text(self) -> str:
        return "\n".join(m.content for m in self.messages)

    @lazy
    def message_tokens(self) -> tuple[int, ...]:
        return tuple(estimate_tokens(m.content) for m in self.messages)

    @lazy
    def prompt_tokens(self) -> int:
        """Estimated tokens of the latest user message."""
        last_user = next((i for i in range(len(self.messages) - 1, -1, -1) if self.messages[i].role == "user"), None)
        return 0 if last_user is None else self.message_tokens[last_user]

    @lazy
    def input_tokens(self) -> int:
        """Estimated tokens of every message, with per-message template overhead: what prefill must process."""
        return sum(self.message_tokens) + MESSAGE_OVERHEAD_TOKENS * len(self.messages)

    def lowered(self, text: str) -> str:
        """text.lower(), computed once per distinct text of this request."""
        cache = self.__dict__.setdefault("_lowered", {})
        if text not in cache:
            cache[text] = text.lower()
        return cache[text]

    @lazy
    def context_tokens(self) -> int:
        """Estimated context the request needs: its input plus the requested completion."""
        return self.input_tokens + (self.max_tokens or 0)

    @lazy
    def user_turns(self) -> int:
        return sum(1 for m in self.messages if m.role == "user")


def parse_route_request(msg: router_pb2.RouteRequest, limits: RequestLimits) -> RouteInput:
    if not msg.model:
        raise InvalidRequest("model: required (the model or alias to route)")
    for name in ("model", "tenant", "user", "session", "request_id"):
        value = getattr(msg, name)
        if len(value) > limits.max_id_length:
            raise InvalidRequest(f"{name}: {len(value)} characters; the limit is {limits.max_id_length}")
    if not msg.messages:
        raise InvalidRequest("messages: at least one message is required")
    if len(msg.messages) > limits.max_messages:
        raise InvalidRequest(f"messages: {len(msg.messages)} messages; the limit is {limits.max_messages}")
    size = 0
    turns = msg.messages  # the proto messages themselves: no copy on the hot path
    for i, m in enumerate(turns):
        if m.role not in ROLES:
            expected = ", ".join(ROLES)
            raise InvalidRequest(f"messages[{i}].role: unknown role '{m.role[:40]}' (expected one of {expected})")
        size += len(m.content)  # characters; bytes are at most 4x, checked below only when close
    if size * 4 > limits.max_prompt_bytes:
        size = sum(len(t.content.encode("utf-8")) for t in turns)
        if size > limits.max_prompt_bytes:
            raise InvalidRequest(
                f"messages: {size:,} bytes of content; the limit is {limits.max_prompt_bytes:,} bytes"
            )
    metadata = _metadata(msg.metadata, limits)
    sampling = msg.sampling if msg.HasField("sampling") else None
    if sampling is not None:
        _check_sampling(sampling, limits)
    if len(msg.tools_json) > limits.max_tools_bytes:
        raise InvalidRequest(f"tools_json: {len(msg.tools_json):,} characters; the limit is {limits.max_tools_bytes:,}")
    return RouteInput(
        request_id=msg.request_id or os.urandom(12).hex(),
        model=msg.model,
        messages=turns,
        tenant=msg.tenant,
        user=msg.user,
        session=msg.session,
        metadata=metadata,
        max_tokens=msg.max_tokens or None,
        stream=msg.stream,
        tools_present=msg.tools_present or bool(msg.tools_json),
        sampling=sampling,
        tools_json=msg.tools_json,
    )


def _check_sampling(sampling: router_pb2.Sampling, limits: RequestLimits) -> None:
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        if sampling.HasField(name) and not low <= getattr(sampling, name) <= high:
            raise InvalidRequest(f"sampling.{name}: {getattr(sampling, name)} is outside [{low:g}, {high:g}]")
    if len(sampling.stop) > limits.max_stop_sequences:
        raise InvalidRequest(f"sampling.stop: {len(sampling.stop)} sequences; the limit is {limits.max_stop_sequences}")
    for i, stop in enumerate(sampling.stop):
        if len(stop) > limits.max_sampling_text:
            raise InvalidRequest(
                f"sampling.stop[{i}]: {len(stop):,} characters; the limit is {limits.max_sampling_text:,}")
    if len(sampling.response_format) > limits.max_sampling_text:
        raise InvalidRequest(f"sampling.response_format: {len(sampling.response_format):,} characters; "
                             f"the limit is {limits.max_sampling_text:,}")


def _metadata(raw: dict[str, str], limits: RequestLimits) -> dict[str, str]:
    if len(raw) > limits.max_metadata_entries:
        raise InvalidRequest(f"metadata: {len(raw)} entries; the limit is {limits.max_metadata_entries}")
    total = sum(len(k) + len(v) for k, v in raw.items())
    if total > limits.max_metadata_bytes:
        raise InvalidRequest(f"metadata: {total:,} characters; the limit is {limits.max_metadata_bytes:,}")
    return {k.lower(): v for k, v in raw.items()}
