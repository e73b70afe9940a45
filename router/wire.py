"""Lenient request decoding: a malformed message becomes a clear INVALID_ARGUMENT, not INTERNAL.

grpcio answers a request whose deserializer raises with INTERNAL and a generic
text. The router's deserializers never raise: they return the message, or a
MalformedRequest that names the field at fault (for example a string that is not
valid UTF-8), which the service turns into INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message


@dataclass(frozen=True)
class MalformedRequest:
    message: str


M = TypeVar("M", bound=Message)


def lenient_deserializer(message_type: type[M]) -> Callable[[bytes], M | MalformedRequest]:
    def decode(data: bytes) -> M | MalformedRequest:
        msg = message_type()
        try:
            msg.ParseFromString(data)
        except DecodeError:
            return MalformedRequest(_explain(data, message_type.DESCRIPTOR))
        return msg

    return decode


def _explain(data: bytes, descriptor: Descriptor) -> str:
    try:
        problem = _first_problem(memoryview(data), descriptor, "")
    except _Truncated:
        problem = None
    return problem or "the request is not a valid protobuf message"


class _Truncated(Exception):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Truncated
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _first_problem(buf: memoryview, descriptor: Descriptor, prefix: str) -> str | None:
    """Walk the wire format and name the first string field that is not UTF-8."""
    pos = 0
    counts: dict[int, int] = {}
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(buf, pos)
            continue
        if wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
            continue
        if wire_type != 2:
            return f"{prefix or 'request'}: unsupported wire type {wire_type}"
        length, pos = _varint(buf, pos)
        chunk = buf[pos : pos + length]
        pos += length
        field = descriptor.fields_by_number.get(number)
        if field is None:
            continue
        index = counts.get(number, 0)
        counts[number] = index + 1
        name = f"{prefix}{field.name}"
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.is_repeated and not is_map:
            name = f"{name}[{index}]"
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                bytes(chunk).decode("utf-8")
            except UnicodeDecodeError:
                return f"{name}: not valid UTF-8"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            found = _first_problem(chunk, field.message_type, f"{name}.")
            if found:
                return found
    return None
