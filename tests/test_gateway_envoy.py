"""The gateway end to end: the real Envoy binary, the router's ext_proc service, the official openai SDK,
simulated vLLM replicas (switchpoint sim, the project's stand-in for GPUs) and a real Redis."""

from __future__ import annotations

import http.client
import json
import re
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from switchpoint.bench.gateway import FastFleet
from switchpoint.gateway import EnvoyProcess, GatewayConfig, Identity, envoy_config
from switchpoint.localredis import RedisServer, free_port
from switchpoint.router.budget.lease import LEASE_PERIOD_S
from tests.conftest import ThreadedRouter

KEYS = {"sk-acme-0000001": Identity("acme"), "sk-globex-00001": Identity("globex"),
        "sk-trial-000001": Identity("trial", "trial-user")}
SMALL = "meta-llama/Llama-3.1-8B-Instruct"
LARGE = "Qwen/Qwen2.5-72B-Instruct"


def manifests(chat: list[int], prefill: int, decode: int, bulk: int) -> str:
    static = ", ".join(f'{{address: "127.0.0.1:{p}"}}' for p in chat)
    return textwrap.dedent(f"""\
        apiVersion: switchpoint.dev/v1alpha1
        kind: ModelPool
        metadata: {{name: chat, namespace: default}}
        spec:
          models: [{{name: {SMALL}}}]
          contextTokens: 8192
          pricing: {{inputPerMillionTokens: 0.2, outputPerMillionTokens: 0.2}}
          replicas: {{static: [{static}]}}
        ---
        apiVersion: switchpoint.dev/v1alpha1
        kind: ModelPool
        metadata: {{name: bulk, namespace: default}}
        spec:
          models: [{{name: {SMALL}}}]
          contextTokens: 200000
          replicas: {{static: [{{address: "127.0.0.1:{bulk}"}}]}}
        ---
        apiVersion: switchpoint.dev/v1alpha1
        kind: ModelPool
        metadata: {{name: pd, namespace: default}}
        spec:
          models: [{{name: {LARGE}}}]
          contextTokens: 32768
          pricing: {{inputPerMillionTokens: 0.9, outputPerMillionTokens: 0.9}}
          replicas:
            static:
              - {{address: "127.0.0.1:{prefill}", role: prefill}}
              - {{address: "127.0.0.1:{decode}", role: decode}}
        ---
        apiVersion: switchpoint.dev/v1alpha1
        kind: RoutingPolicy
        metadata: {{name: auto, namespace: default}}
        spec:
          aliases: [auto]
          signals:
            - {{name: agent, tools: {{present: true}}}}
            - name: faq
              keywords: {{terms: [faq]}}
            - {{name: huge, contextTokens: {{min: 50000}}}}
          decisions:
            - name: bulk
              priority: 300
              when: {{signal: huge}}
              pools: [{{pool: bulk}}]
            - name: agentic
              priority: 200
              when: {{signal: agent}}
              pools: [{{pool: pd}}]
            - name: faq
              priority: 100
              when: {{signal: faq}}
              pools: [{{pool: chat}}]
              cache: {{enabled: true, ttl: 10m, storeTruncated: true}}
          default:
            pools: [{{pool: chat}}]
        ---
        apiVersion: switchpoint.dev/v1alpha1
        kind: Budget
        metadata: {{name: trial-tokens, namespace: default}}
        spec:
          scope: {{type: Tenant, name: trial}}
          window: {{duration: 1h}}
          limit: {{tokens: 100}}
          onExhausted: {{action: Reject}}
        ---
        apiVersion: switchpoint.dev/v1alpha1
        kind: Budget
        metadata: {{name: globex-tokens, namespace: default}}
        spec:
          scope: {{type: Tenant, name: globex}}
          window: {{duration: 1h}}
          limit: {{tokens: 1000000}}
          onExhausted: {{action: Reject}}
        """)


@dataclass
class Stack:
    router: ThreadedRouter
    extproc: str
    envoy: EnvoyProcess
    duplex: EnvoyProcess
    sim_ports: dict[str, int]

    def client(self, key: str = "sk-acme-0000001", envoy: EnvoyProcess | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://{(envoy or self.envoy).address}/v1", api_key=key, max_retries=0,
                             timeout=30)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.router.metrics_text().splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def reserved(self, tenant: str) -> float:
        standing = self.router.call(self.router.server.core.budget_status(tenant))
        return sum(state.reserved for _, state in standing.budgets if state is not None)

    def served(self, port: int) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return float(re.search(r"vllm:request_success_total\{[^}]*\} (\S+)", text).group(1))

    def wait_for(self, what: str, check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                reports = [ln for ln in self.router.metrics_text().splitlines() if ln.startswith("switchpoint_reports")]
                raise AssertionError(f"timed out waiting for {what}; reports: {reports}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gateway")
    ports = {name: free_port() for name in ("chat1", "chat2", "prefill", "decode", "bulk")}
    # The project's replica simulator (the engine model behind an OpenAI API) in one process: the chat and P/D
    # replicas in real time (streams take time to abort), the bulk one spending no time (the 300 KB prompt's 75k
    # tokens of simulated prefill would take 15 s).
    fleet = [{"port": ports["chat1"], "model": SMALL, "realtime": True},
             {"port": ports["chat2"], "model": SMALL, "realtime": True},
             {"port": ports["prefill"], "model": LARGE, "role": "prefill", "realtime": True},
             {"port": ports["decode"], "model": LARGE, "role": "decode", "realtime": True},
             {"port": ports["bulk"], "model": SMALL}]
    config = tmp / "config"
    config.mkdir()
    (config / "fleet.yaml").write_text(manifests([ports["chat1"], ports["chat2"]], ports["prefill"], ports["decode"],
                                                 ports["bulk"]))
    extproc = free_port()
    with FastFleet([{"role": "both", **spec} for spec in fleet]), RedisServer() as redis, \
            ThreadedRouter(config_paths=[config], redis_url=redis.url, extproc_port=extproc) as router:
        address = f"127.0.0.1:{extproc}"
        with EnvoyProcess(envoy_config(GatewayConfig(address, port=0, admin_port=0, api_keys=KEYS))) as envoy, \
                EnvoyProcess(envoy_config(GatewayConfig(address, port=0, admin_port=0, mode="duplex",
                                                        api_keys=KEYS))) as duplex:
            yield Stack(router, address, envoy, duplex, ports)


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def post(address: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["split", "duplex"])
def test_streamed_and_plain_completions_settle_with_usage(stack: Stack, mode: str) -> None:
    client = stack.client(envoy=stack.envoy if mode == "split" else stack.duplex)
    before = stack.metric("switchpoint_reports_total", outcome="success")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=chat("Hello there"), max_tokens=6)
    reply = raw.parse()
    assert raw.headers["x-switchpoint-decision"] == "default" and raw.headers["x-switchpoint-pool"] == "chat"
    assert raw.headers["x-switchpoint-model"] == SMALL and raw.headers["x-switchpoint-cache"] == "off"
    assert reply.model == SMALL and reply.usage.completion_tokens == 6 and reply.choices[0].message.content
    text, usage = "", None
    for chunk in client.chat.completions.create(model="auto", messages=chat("Hello again"), max_tokens=5,
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert len(text.split()) == 5
    assert usage is not None and usage.completion_tokens == 5  # include_usage set by the router
    done = client.completions.create(model="auto", prompt="Once upon a time", max_tokens=3)
    assert done.usage.completion_tokens == 3
    stack.wait_for("three settlements", lambda: stack.metric("switchpoint_reports_total", outcome="success")
                   >= before + 3)
    assert stack.metric("switchpoint_tokens_total", type="output") >= 14


def test_models_and_refusals_in_openai_shape(stack: Stack) -> None:
    client = stack.client()
    assert {m.id for m in client.models.list()} >= {"auto", SMALL, LARGE}
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=chat("hi"))
    assert "no-such-model" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="auto", messages=[{"role": "robot", "content": "hi"}])
    assert bad.value.body["param"] == "messages[0].role"
    status, _, body = post(stack.envoy.address, b"{not json", {"authorization": "Bearer sk-acme-0000001"})
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        stack.client("sk-unknown-key-1").models.list()


@pytest.mark.parametrize("stream", [False, True])
def test_a_cache_hit_is_answered_by_envoy_without_a_replica(stack: Stack, stream: bool) -> None:
    client = stack.client("sk-globex-00001")
    question = f"faq: how do I reset my password? ({'stream' if stream else 'json'})"
    stored = stack.metric("switchpoint_cache_writes_total", result="stored")
    first = client.chat.completions.with_raw_response.create(model="auto", messages=chat(question), max_tokens=8)
    assert first.headers["x-switchpoint-cache"] == "miss"
    answer = first.parse().choices[0].message.content
    stack.wait_for("the cache write", lambda: stack.metric("switchpoint_cache_writes_total", result="stored")
                   > stored)
    served = stack.served(stack.sim_ports["chat1"]) + stack.served(stack.sim_ports["chat2"])
    if stream:
        with client.chat.completions.with_streaming_response.create(model="auto", messages=chat(question),
                                                                    stream=True) as hit:
            assert hit.headers["x-switchpoint-cache"] == "hit"
            body = hit.read().decode()
        assert body.endswith("data: [DONE]\n\n")
        pieces = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
        assert "".join(p["choices"][0]["delta"].get("content") or "" for p in pieces if p["choices"]) == answer
    else:
        hit = client.chat.completions.with_raw_response.create(model="auto", messages=chat(question))
        assert hit.headers["x-switchpoint-cache"] == "hit" and hit.parse().choices[0].message.content == answer
    assert stack.served(stack.sim_ports["chat1"]) + stack.served(stack.sim_ports["chat2"]) == served


def test_a_client_cannot_claim_another_tenants_budget_or_cache(stack: Stack) -> None:
    acme = stack.client("sk-acme-0000001")
    question = "faq: what are your opening hours?"
    acme.chat.completions.create(model="auto", messages=chat(question), max_tokens=8)
    stack.wait_for("acme's entry", lambda: acme.chat.completions.with_raw_response.create(
        model="auto", messages=chat(question)).headers["x-switchpoint-cache"] == "hit")
    spoof = {"x-switchpoint-tenant": "acme", "x-switchpoint-user": "root"}
    other = stack.client("sk-globex-00001").chat.completions.with_raw_response.create(
        model="auto", messages=chat(question), max_tokens=8, extra_headers=spoof)
    assert other.headers["x-switchpoint-cache"] == "miss"  # globex's key: globex's scope, whatever it claims
    trial = stack.client("sk-trial-000001")
    refused = None
    for _ in range(10):  # 100 tokens an hour; each request reserves its max_tokens and more
        try:
            trial.chat.completions.create(model="auto", messages=chat("write a poem"), max_tokens=40,
                                          extra_headers=spoof)
        except openai.RateLimitError as exc:
            refused = exc
            break
    assert refused is not None, "the trial budget was never spent: the spoofed tenant header was believed"
    assert "trial-tokens" in refused.body["message"]
    assert int(refused.response.headers["retry-after"]) > 0
    acme.chat.completions.create(model="auto", messages=chat("write a poem"), max_tokens=20)  # acme unaffected


def test_the_prefill_replica_travels_to_the_decode_replica(stack: Stack) -> None:
    before = stack.served(stack.sim_ports["prefill"])
    tools = [{"type": "function", "function": {"name": "book", "parameters": {"type": "object"}}}]
    raw = stack.client().chat.completions.with_raw_response.create(
        model="auto", messages=chat("Book a table for two at the place we talked about. " * 40), tools=tools,
        max_tokens=4)
    assert raw.headers["x-switchpoint-pool"] == "pd" and raw.parse().model == LARGE
    assert stack.served(stack.sim_ports["prefill"]) == before + 1  # the decode replica had it prefill


@pytest.mark.parametrize("mode", ["split", "duplex"])
def test_a_300kb_prompt(stack: Stack, mode: str) -> None:
    prompt = "Summarise this. " + "The quick brown fox jumps over the lazy dog. " * 6700  # ~300 KB
    assert len(prompt) > 300_000
    reply = stack.client(envoy=stack.envoy if mode == "split" else stack.duplex).chat.completions.create(
        model="auto", messages=chat(prompt), max_tokens=2)
    assert reply.usage.prompt_tokens > 70_000  # the whole prompt arrived (the simulator counts 4 characters a token)


def test_a_client_abort_mid_stream_leaves_no_reservation(stack: Stack) -> None:
    cancelled = stack.metric("switchpoint_reports_total", outcome="cancelled")
    host, port = stack.envoy.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    body = {"model": "auto", "stream": True, "max_tokens": 60, "messages": chat("count slowly to sixty")}
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"authorization": "Bearer sk-globex-00001", "content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")
    assert stack.reserved("globex") > 0  # held while the answer streams
    response.readline()
    conn.sock.close()  # the client goes away mid-stream
    conn.close()
    stack.wait_for("the cancelled settlement",
                   lambda: stack.metric("switchpoint_reports_total", outcome="cancelled") == cancelled + 1)
    assert stack.metric("switchpoint_replica_inflight") == 0
    # nothing stays held: the request's reservation (or its share of the router's budget lease) is settled, and
    # the lease's unused part goes back within its period
    stack.wait_for("no budget held", lambda: stack.reserved("globex") == 0, timeout=LEASE_PERIOD_S + 5)


@pytest.mark.parametrize("fail_open", [False, True])
def test_the_router_stopped(stack: Stack, fail_open: bool) -> None:
    """No router at the ext_proc address: closed -> 503 from Envoy; open -> served undecided by a replica."""
    dead = f"127.0.0.1:{free_port()}"
    fallback = (f"127.0.0.1:{stack.sim_ports['chat1']}",)
    cfg = GatewayConfig(dead, port=0, admin_port=0, fail_open=fail_open, fallback=fallback if fail_open else ())
    with EnvoyProcess(envoy_config(cfg)) as envoy:
        status, headers, _ = post(envoy.address, json.dumps({"model": SMALL, "messages": chat("hi"),
                                                              "max_tokens": 2}).encode())
    if fail_open:
        assert status == 200 and headers["x-switchpoint-decision"] == "failure-mode-allow"
    else:
        assert status == 503


def test_concurrent_requests_each_settle_once(stack: Stack) -> None:
    before = stack.metric("switchpoint_reports_total")
    client = stack.client()
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            if i % 2:
                client.chat.completions.create(model="auto", messages=chat(f"question {i}"), max_tokens=3)
                return
            for _ in client.chat.completions.create(model="auto", messages=chat(f"question {i}"), max_tokens=3,
                                                    stream=True):
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stack.wait_for("16 settlements", lambda: stack.metric("switchpoint_reports_total") >= before + 16)
    time.sleep(0.3)
    assert stack.metric("switchpoint_reports_total") == before + 16
