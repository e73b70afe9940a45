"""The simulated replicas over real HTTP: OpenAI API, SSE streaming, vLLM metrics, disaggregated prefill."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from switchpoint.localproc import SimProcess
from switchpoint.localredis import free_port

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    ports = {name: free_port() for name in ("agg", "legacy", "prefill", "decode")}
    spec = {"replicas": [
        {"port": ports["agg"], "model": MODEL},
        {"port": ports["legacy"], "model": MODEL, "legacy_metrics": True},
        {"port": ports["prefill"], "model": MODEL, "role": "prefill"},
        {"port": ports["decode"], "model": MODEL, "role": "decode"},
    ]}
    path = tmp_path_factory.mktemp("sim") / "fleet.json"
    path.write_text(json.dumps(spec))
    with SimProcess(path):
        yield ports


def post(port: int, path: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


def test_chat_completion_has_the_openai_shape_and_usage(fleet):
    status, body = post(fleet["agg"], "/v1/chat/completions",
                        {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 40}], "max_tokens": 7})
    reply = json.loads(body)
    assert status == 200 and reply["object"] == "chat.completion" and reply["model"] == MODEL
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["usage"]["completion_tokens"] == 7 and reply["usage"]["prompt_tokens"] > 40


def test_streaming_sends_one_chunk_per_token_then_usage_and_done(fleet):
    status, body = post(fleet["agg"], "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True}})
    events = [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) == 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["usage"]["completion_tokens"] == 4


def test_completions_and_models(fleet):
    status, body = post(fleet["agg"], "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 3})
    assert status == 200 and json.loads(body)["object"] == "text_completion"
    assert json.loads(get(fleet["agg"], "/v1/models"))["data"][0]["id"] == MODEL


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"{not json", 400, "not valid JSON"),
    ({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
    ({"messages": []}, 400, "messages must be"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, 400, "max_tokens"),
])
def test_bad_requests_get_openai_style_errors(fleet, body, status, fragment):
    code, reply = post(fleet["agg"], "/v1/chat/completions", body)
    assert code == status and fragment in json.loads(reply)["error"]["message"]


def test_metrics_use_vllm_names_including_the_older_kv_spelling(fleet):
    post(fleet["agg"], "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2})
    text = get(fleet["agg"], "/metrics")
    for name in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                 "vllm:cache_config_info", "vllm:prefix_cache_hits_total"):
        assert name in text
    legacy = get(fleet["legacy"], "/metrics")
    assert "vllm:gpu_cache_usage_perc" in legacy and "vllm:kv_cache_usage_perc" not in legacy


def test_a_prefill_replica_refuses_to_decode(fleet):
    code, reply = post(fleet["prefill"], "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
    assert code == 400 and "only prefills" in json.loads(reply)["error"]["message"]


def test_disaggregated_requests_prefill_remotely_then_decode(fleet):
    prompt = "Summarise this report. " * 300
    before = get(fleet["prefill"], "/metrics")
    status, body = post(fleet["decode"], "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": prompt}], "max_tokens": 5},
                        headers={"x-prefiller-host-port": f"127.0.0.1:{fleet['prefill']}"})
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 5
    after = get(fleet["prefill"], "/metrics")
    assert after != before  # the prefill replica did the prompt's work
    missing = post(fleet["decode"], "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]},
                   headers={"x-prefiller-host-port": "127.0.0.1:1"})
    assert missing[0] == 502 and "unreachable" in json.loads(missing[1])["error"]["message"]
