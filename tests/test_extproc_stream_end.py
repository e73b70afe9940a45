"""When the ext_proc front door ends a stream itself: a filter that says it sends the request phases only
(PHASES_METADATA, as `switchpoint gateway`'s split-mode route filter does) gets its stream ended with the body
answer, so Envoy's end of stream is not waited for (one write and one wakeup less per request). Any other stream
waits for Envoy, as before: one without the metadata, and one whose filter sees the response body (it settles)."""

from __future__ import annotations

import asyncio
import json

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from switchpoint.router.core.offline import offline_core
from switchpoint.router.frontdoors.extproc.service import ExtProcFrontDoor
from switchpoint.router.frontdoors.extproc.settings import PHASES_METADATA
from switchpoint.router.frontdoors.h2grpc import Context
from tests.conftest import EXAMPLES

Mode = processing_mode_pb2.ProcessingMode
PHASE = PHASES_METADATA.encode()  # as the request header of the ext_proc call carries it
BODY = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "Hi there, how are you?"}]}).encode()


def _messages(response_body_mode: int) -> list[pb.ProcessingRequest]:
    config = pb.ProtocolConfiguration(request_body_mode=Mode.BUFFERED, response_body_mode=response_body_mode)
    headers = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in (
        (":method", "POST"), (":path", "/v1/chat/completions"), ("content-type", "application/json"))])
    return [pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=headers), protocol_config=config),
            pb.ProcessingRequest(request_body=pb.HttpBody(body=BODY, end_of_stream=True))]


async def _answers(metadata: dict[bytes, bytes], response_body_mode: int) -> tuple[list[str], bool]:
    """The answers' kinds, and whether the stream ended before Envoy ended its side (which it never does here)."""
    core, close = await offline_core([EXAMPLES])
    door = ExtProcFrontDoor(core)
    held = asyncio.Event()  # never set: Envoy keeps its side open

    async def envoy():  # type: ignore[no-untyped-def]
        for msg in _messages(response_body_mode):
            yield msg
        await held.wait()

    kinds: list[str] = []

    async def stream() -> None:
        async for answer in door.Process(envoy(), Context(metadata)):
            kinds.append(answer.WhichOneof("response"))

    task = asyncio.create_task(stream())
    try:
        await asyncio.wait_for(asyncio.shield(task), 2.0)
        ended = True
    except TimeoutError:
        ended = False
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await door.stop()
    await close()
    return kinds, ended


@pytest.mark.parametrize(("metadata", "response_body_mode", "ends"), [
    ({PHASE: b"request"}, Mode.NONE, True),  # the split-mode route filter
    ({}, Mode.NONE, False),  # a filter that did not say: its response headers may still come
    ({PHASE: b"both"}, Mode.NONE, False),  # only "request" means request phases only
    ({PHASE: b"request"}, Mode.STREAMED, False),  # it sees the response body: it settles at the end
])
def test_a_stream_ends_with_its_body_answer_only_when_its_filter_sends_no_response_phase(metadata, response_body_mode,
                                                                                         ends):
    kinds, ended = asyncio.run(_answers(metadata, response_body_mode))
    assert kinds == ["request_headers", "request_body"]  # the same answers either way
    assert ended is ends
