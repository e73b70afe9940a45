"""The router's own view of one request, and its validation: plain data, no transport.

Front doors (the gRPC Router service, Envoy external processing) translate what they receive into the
arguments of `route_input`, which validates them against the limits; a bad request raises
InvalidRequest naming the field, which each front door answers in its own terms (INVALID_ARGUMENT, 400).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from switchpoint.router.refusals import InvalidRequest
from switchpoint.router.signals.tokens import estimate_tokens

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
    """A chat message: anything with a role and a text content (a ChatTurn, or a stored message)."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str


@dataclass(frozen=True)
class Sampling:
    """The sampling parameters the frontend sends upstream; None / empty / 0 mean "not given"."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: str = ""  # "text", "json_object", or a JSON schema's text
    n: int = 0


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
    sampling: Sampling | None = None  # None when the frontend sent none
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

    def scan_view(self, text_of: Callable[[], str], key: tuple, max_chars: int, lower: bool) -> str:
        """What a keyword or regex signal reads of a text: all of it up to `max_chars`, else its first and last
        max_chars / 2 characters (joined by a newline), lower-cased if asked; memoised under `key` (a short
        tuple naming the text), so a long text is neither copied nor hashed again by the next signal."""
        memo = self.__dict__.setdefault("_scan_views", {})
        found = memo.get((key, max_chars, lower))
        if found is None:
            text = text_of()
            if len(text) > max_chars:
                half = max_chars // 2
                text = f"{text[:half]}\n{text[-half:]}"
            found = memo[(key, max_chars, lower)] = text.lower() if lower else text
        return found

    @lazy
    def context_tokens(self) -> int:
        """Estimated context the request needs: its input plus the requested completion."""
        return self.input_tokens + (self.max_tokens or 0)

    @lazy
    def user_turns(self) -> int:
        return sum(1 for m in self.messages if m.role == "user")


def route_input(*, model: str, messages: Sequence[Turn], limits: RequestLimits, request_id: str = "",
                tenant: str = "", user: str = "", session: str = "", metadata: Mapping[str, str] | None = None,
                max_tokens: int | None = None, stream: bool = False, tools_present: bool = False,
                sampling: Sampling | None = None, tools_json: str = "") -> RouteInput:
    """A validated RouteInput; InvalidRequest naming the field otherwise.

    The cost is bounded by the number of messages, not by their size: content is measured with len()
    (constant time), and encoded to count bytes only when the characters could exceed the byte limit.
    """
    if not model:
        raise InvalidRequest("model: required (the model or alias to route)")
    for name, value in (("model", model), ("tenant", tenant), ("user", user), ("session", session),
                        ("request_id", request_id)):
        if len(value) > limits.max_id_length:
            raise InvalidRequest(f"{name}: {len(value)} characters; the limit is {limits.max_id_length}")
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    if len(messages) > limits.max_messages:
        raise InvalidRequest(f"messages: {len(messages)} messages; the limit is {limits.max_messages}")
    size = 0
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            expected = ", ".join(ROLES)
            raise InvalidRequest(f"messages[{i}].role: unknown role '{m.role[:40]}' (expected one of {expected})")
        size += len(m.content)  # characters; bytes are at most 4x, checked below only when close
    if size * 4 > limits.max_prompt_bytes:
        size = sum(len(t.content.encode("utf-8", "surrogatepass")) for t in messages)
        if size > limits.max_prompt_bytes:
            raise InvalidRequest(
                f"messages: {size:,} bytes of content; the limit is {limits.max_prompt_bytes:,} bytes"
            )
    if max_tokens is not None and max_tokens < 0:
        raise InvalidRequest(f"max_tokens: must be a positive number, got {max_tokens}")
    checked = _metadata(metadata or {}, limits)
    if sampling is not None:
        _check_sampling(sampling, limits)
    if len(tools_json) > limits.max_tools_bytes:
        raise InvalidRequest(f"tools_json: {len(tools_json):,} characters; the limit is {limits.max_tools_bytes:,}")
    return RouteInput(
        request_id=request_id or os.urandom(12).hex(),
        model=model,
        messages=messages,
        tenant=tenant,
        user=user,
        session=session,
        metadata=checked,
        max_tokens=max_tokens or None,
        stream=stream,
        tools_present=tools_present or bool(tools_json),
        sampling=sampling,
        tools_json=tools_json,
    )


def _check_sampling(sampling: Sampling, limits: RequestLimits) -> None:
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = getattr(sampling, name)
        if value is not None and not low <= value <= high:
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


def _metadata(raw: Mapping[str, str], limits: RequestLimits) -> dict[str, str]:
    if len(raw) > limits.max_metadata_entries:
        raise InvalidRequest(f"metadata: {len(raw)} entries; the limit is {limits.max_metadata_entries}")
    total = sum(len(k) + len(v) for k, v in raw.items())
    if total > limits.max_metadata_bytes:
        raise InvalidRequest(f"metadata: {total:,} characters; the limit is {limits.max_metadata_bytes:,}")
    return {k.lower(): v for k, v in raw.items()}
