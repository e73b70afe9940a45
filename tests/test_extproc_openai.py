"""The ext_proc front door's pure parts: OpenAI request parsing and rewriting, response usage, immediate answers."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchpoint.router.frontdoors.extproc import immediate
from switchpoint.router.frontdoors.extproc.openai import OpenAIError, endpoint_of, parse_request, rewrite_body
from switchpoint.router.frontdoors.extproc.usage import ResponseReader
from switchpoint.router.refusals import BudgetExhausted, NotFound, Unavailable
from switchpoint.router.request import ChatTurn, Sampling


def chat(**fields: object) -> bytes:
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


@pytest.mark.parametrize("path, endpoint", [
    ("/v1/chat/completions", "chat"), ("/v1/chat/completions?x=1", "chat"), ("/v1/completions", "completions"),
    ("/v1/models", "models"), ("/v1/models/", "models"), ("/v1/embeddings", ""), ("/", "")])
def test_endpoints(path: str, endpoint: str) -> None:
    assert endpoint_of(path) == endpoint


def test_a_full_chat_request() -> None:
    tools = [{"type": "function", "function": {"name": "book", "parameters": {}}}]
    parsed = parse_request("chat", json.dumps({
        "model": "smart", "stream": True, "stream_options": {"include_usage": True}, "max_completion_tokens": 64,
        "max_tokens": 999, "temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["\n\n"], "n": 1,
        "response_format": {"type": "json_object"}, "tools": tools,
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "look"},
                                                  {"type": "image_url", "image_url": {"url": "data:,"}},
                                                  {"type": "text", "text": "here"}]},
                     {"role": "assistant", "content": None, "tool_calls": []}]}).encode())
    assert parsed.model == "smart" and parsed.stream and parsed.include_usage
    assert parsed.turns == (ChatTurn("system", "be brief"), ChatTurn("user", "look\nhere"), ChatTurn("assistant", ""))
    assert parsed.max_tokens == 64  # max_completion_tokens wins
    assert parsed.sampling == Sampling(temperature=0.2, top_p=0.9, seed=7, stop=("\n\n",),
                                       response_format="json_object", n=1)
    assert json.loads(parsed.tools_json) == tools


def test_a_completions_request_is_one_user_turn() -> None:
    parsed = parse_request("completions", b'{"model": "m", "prompt": "Once upon", "max_tokens": 5}')
    assert parsed.turns == (ChatTurn("user", "Once upon"),) and parsed.max_tokens == 5 and parsed.sampling is None


@pytest.mark.parametrize("endpoint, body, param, needle", [
    ("chat", b"", None, "empty"),
    ("chat", b"{not json", None, "not valid JSON"),
    ("chat", b"[1, 2]", None, "JSON object"),
    ("chat", b'{"messages": [{"role": "user", "content": "x"}]}', "model", "model: required"),
    ("chat", b'{"model": "m"}', "messages", "messages: required"),
    ("chat", b'{"model": "m", "messages": []}', "messages", "non-empty"),
    ("chat", b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', "messages[0].role", "robot"),
    ("chat", b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "messages[0].content", "string"),
    ("chat", b'{"model": "m", "messages": [{"role": "user"}]}', "messages[0].content", "required"),
    ("chat", b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}',
     "messages[0].content[0].text", "string"),
    ("chat", chat(max_tokens=0), "max_tokens", ">= 1"),
    ("chat", chat(max_tokens=True), "max_tokens", "integer"),
    ("chat", chat(temperature=3), "temperature", "[0, 2]"),
    ("chat", chat(top_p="x"), "top_p", "number"),
    ("chat", chat(stop=[1]), "stop", "strings"),
    ("chat", chat(stream="yes"), "stream", "boolean"),
    ("chat", chat(stream_options={"include_usage": True}), "stream_options", "stream is true"),
    ("chat", chat(tools={}), "tools", "array"),
    ("chat", chat(seed=1.5), "seed", "integer"),
    ("chat", chat(response_format="json"), "response_format", "type"),
    ("completions", b'{"model": "m", "prompt": [1, 2, 3]}', "prompt", "prompt: required"),
])
def test_bad_requests_name_the_cause(endpoint: str, body: bytes, param: str | None, needle: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        parse_request(endpoint, body)
    assert caught.value.status == 400 and caught.value.param == param and needle in caught.value.message


def test_rewrite_sets_the_model_and_asks_a_stream_for_usage() -> None:
    parsed = parse_request("chat", chat(stream=True, stream_options={"x": 1}))
    body = json.loads(rewrite_body(parsed, "meta-llama/Llama-3.1-8B-Instruct"))
    assert body["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert body["stream_options"] == {"x": 1, "include_usage": True}
    plain = json.loads(rewrite_body(parse_request("chat", chat()), "m2"))
    assert plain["model"] == "m2" and "stream_options" not in plain


def test_a_300kb_prompt_parses_and_rewrites_whole() -> None:
    prompt = "word " * 60_000
    parsed = parse_request("chat", chat(messages=[{"role": "user", "content": prompt}]))
    assert json.loads(rewrite_body(parsed, "m"))["messages"][0]["content"] == prompt


# -- the response ---------------------------------------------------------------------------------------------

def sse(*chunks: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


STREAM = sse({"choices": [{"delta": {"role": "assistant"}}]},
             {"choices": [{"delta": {"content": "Hello"}}]},
             {"choices": [{"delta": {"content": " world"}, "finish_reason": "stop"}]},
             {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2,
                                       "prompt_tokens_details": {"cached_tokens": 8}}})


@given(st.lists(st.integers(1, len(STREAM) - 1), max_size=12, unique=True))
def test_sse_usage_and_text_whatever_the_chunking(cuts: list[int]) -> None:
    reader = ResponseReader()
    edges = [0, *sorted(cuts), len(STREAM)]
    firsts = [reader.feed(STREAM[a:b]) for a, b in itertools.pairwise(edges)]
    usage = reader.finish()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (12, 2, 8)
    assert usage.text == "Hello world" and usage.reported and usage.complete and not usage.error
    assert firsts.count(True) == 1  # the first token is noticed once, in the chunk that holds it


def test_json_usage_chat_and_completions() -> None:
    body = json.dumps({"choices": [{"message": {"content": "yes"}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()
    reader = ResponseReader()
    reader.feed(body[:10])
    reader.feed(body[10:])
    usage = reader.finish()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.text, usage.complete) == (3, 1, "yes", True)
    reader = ResponseReader()
    reader.feed(b'{"choices": [{"text": "ok"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}')
    assert reader.finish().text == "ok"


def test_errors_and_missing_usage_are_reported() -> None:
    reader = ResponseReader()
    reader.feed(b'{"error": {"message": "The model `x` does not exist.", "type": "NotFoundError"}}')
    usage = reader.finish()
    assert usage.error.startswith("The model") and not usage.reported
    reader = ResponseReader()
    reader.feed(b'data: {"choices": [{"delta": {"content": "cut"}}]}\n\n')
    usage = reader.finish()
    assert not usage.complete and not usage.reported and usage.text == "cut"


def test_a_body_over_the_limit_overflows_but_a_streams_usage_is_still_read() -> None:
    reader = ResponseReader(max_bytes=64)
    reader.feed(b'{"choices": [{"message": {"content": "' + b"x" * 100 + b'"}}]}')
    assert reader.finish().overflow
    reader = ResponseReader(max_bytes=8)
    reader.feed(sse({"choices": [{"delta": {"content": "a long answer"}, "finish_reason": "stop"}]},
                    {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 3}}))
    usage = reader.finish()
    assert usage.overflow and usage.completion_tokens == 3


# -- immediate responses --------------------------------------------------------------------------------------

def test_refusals_map_to_http_statuses_with_openai_bodies() -> None:
    spent = immediate.refusal(BudgetExhausted("budget default/trial-tenant-tokens is spent", retry_after_s=41.2))
    answer = spent.immediate_response
    headers = {h.header.key: h.header.raw_value.decode() for h in answer.headers.set_headers}
    assert answer.status.code == 429 and headers["retry-after"] == "42"
    assert json.loads(answer.body)["error"]["message"] == "budget default/trial-tenant-tokens is spent"
    assert immediate.refusal(BudgetExhausted("spent")).immediate_response.headers.set_headers[0].header.key \
        == "content-type"  # no Retry-After when the window's end is unknown
    assert immediate.refusal(Unavailable("no ready replica")).immediate_response.status.code == 503
    assert immediate.refusal(NotFound("unknown model 'x'")).immediate_response.status.code == 404


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_cached_answer_in_the_clients_format(endpoint: str, stream: bool) -> None:
    answer = immediate.cached_answer(endpoint, "smart", "Cached text.", stream, True, "r1",
                                     {"x-switchpoint-cache": "hit"}).immediate_response
    assert answer.status.code == 200
    if not stream:
        body = json.loads(answer.body)
        text = body["choices"][0]["message"]["content"] if endpoint == "chat" else body["choices"][0]["text"]
        assert text == "Cached text."
        return
    assert answer.body.endswith(b"data: [DONE]\n\n")
    reader = ResponseReader()
    reader.feed(answer.body)
    usage = reader.finish()
    assert usage.text == "Cached text." and usage.complete and usage.reported
