"""Classifier isolation: the p99 of rules-only Routes alone, and while classifier-heavy requests arrive.

One router process serves the example aliases, among them `auto` (rules only), and `heavy` (every
built-in head plus a similarity signal, checked for every request). A client measures sequential
rules-only Route calls; in the loaded phases, paced senders add classifier-heavy requests at a fixed
rate, on the default encoder and then on the transformer (whose inference takes tens of ms per
request). Phases alternate (alone, default, transformer, repeated) so drift on a shared machine hits
them alike. If inference ran on the event loop, each heavy request would hold up every rules-only
request queued behind it: the p99 would grow by the inference time.

The router runs on one core and the load generator on another (where the machine has two): what is
measured is the router sharing its own core between routing and inference, not the client's threads
competing with it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import grpc

from switchpoint.bench.router import percentile
from switchpoint.localproc import RouterProcess, separate_cores
from switchpoint.v1 import router_pb2, router_pb2_grpc

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
ROUNDS = 2
HEAVY = """
apiVersion: switchpoint.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  aliases: [{name}]
  signals:
    - {{name: jailbreak, classifier: {{name: jailbreak}}}}
    - {{name: science, classifier: {{name: domain, labels: [math, physics, chemistry]}}}}
    - {{name: hard, classifier: {{name: difficulty, above: 0.9}}}}
    - name: billing
      similarity:
        encoder: {encoder}
        threshold: 0.99
        examples: ["I was charged twice for my subscription", "How do I get a refund for my last invoice?"]
  decisions:
    - {{name: guarded, priority: 400, when: {{signal: jailbreak}}, pools: [{{pool: small-chat}}]}}
    - {{name: support, priority: 300, when: {{signal: billing}}, pools: [{{pool: small-chat}}]}}
    - {{name: science-hard, priority: 200, when: {{all: [{{signal: science}}, {{signal: hard}}]}},
       pools: [{{pool: large-reasoning}}]}}
  default: {{pools: [{{pool: small-chat}}]}}
"""
RULES_PROMPTS = ["hello there", "Refactor this Python class for me, please", "What is 17 * 23?",
                 "Summarise the plot of Hamlet in two sentences."]
HEAVY_PROMPTS = [
    "Explain why the sky is blue, with the physics of Rayleigh scattering and a worked example.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle, in about 200 words.",
    "What are the main differences between contract law in common-law and civil-law countries?",
    "A train leaves at 3 pm at 80 km/h; another at 4 pm at 100 km/h. When does the second catch up?",
]


def _config(root: Path) -> Path:
    config = root / "config"
    shutil.copytree(EXAMPLES, config)
    (config / "heavy.yaml").write_text(HEAVY.format(name="heavy", encoder="minilm-static") + "---\n"
                                       + HEAVY.format(name="heavy-transformer", encoder="minilm-l6-v2"))
    return config


def _request(prompt: str, model: str) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(model=model, messages=[router_pb2.ChatMessage(role="user", content=prompt)],
                                   max_tokens=100)


def _call(stub: router_pb2_grpc.RouterStub, req: router_pb2.RouteRequest) -> None:
    d = stub.Route(req, timeout=30)
    stub.Report(router_pb2.ReportRequest(request_id=d.request_id, outcome=router_pb2.OUTCOME_SUCCESS,
                                         prompt_tokens=20, completion_tokens=50), timeout=30)


def _rules_latencies(address: str, calls: int) -> list[float]:
    out = []
    with grpc.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        for i in range(calls):
            req = _request(RULES_PROMPTS[i % len(RULES_PROMPTS)], "auto")
            t0 = time.perf_counter()
            stub.Route(req, timeout=30)
            out.append(time.perf_counter() - t0)
    return out


class _PacedLoad:
    """Classifier-heavy requests at a fixed rate (open loop, several senders), until stopped."""

    def __init__(self, address: str, model: str, rate: float, senders: int = 4):
        self.address, self.model, self.rate, self.senders = address, model, rate, senders
        self.stop = threading.Event()
        self.sent = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(senders)]

    def __enter__(self) -> _PacedLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _send(self, index: int) -> None:
        interval = self.senders / self.rate
        next_at = time.perf_counter() + index * interval / self.senders
        with grpc.insecure_channel(self.address) as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            i = index
            while not self.stop.is_set():
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
                try:
                    _call(stub, _request(HEAVY_PROMPTS[i % len(HEAVY_PROMPTS)] + f" (#{i})", self.model))
                    self.sent += 1
                except grpc.RpcError as exc:
                    self.errors.append(f"{exc.code().name}: {exc.details()}")
                i += self.senders


def isolation(models: Path, calls: int = 4000, rate: float = 50.0, transformer_rate: float = 15.0,
              ) -> dict[str, object]:
    """{"rules_p99_ms_alone", "rules_p99_ms_with_classifiers", "rules_p99_ms_with_transformer", ...}."""
    samples: dict[str, list[float]] = {"alone": [], "classifiers": [], "transformer": []}
    sent = {"classifiers": 0, "transformer": 0}
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="switchpoint-isolation-") as tmp:
        config = _config(Path(tmp))
        with RouterProcess([config], metrics=False, extra=["--models", str(models)]) as router, \
                separate_cores(router.pid):
            _rules_latencies(router.address, 100)  # warm-up (the first classifier calls load sessions too)
            with _PacedLoad(router.address, "heavy", 20), _PacedLoad(router.address, "heavy-transformer", 5):
                time.sleep(1.0)
            for _ in range(ROUNDS):
                samples["alone"] += _rules_latencies(router.address, calls // ROUNDS)
                for phase, model, r in (("classifiers", "heavy", rate),
                                        ("transformer", "heavy-transformer", transformer_rate)):
                    with _PacedLoad(router.address, model, r) as load:
                        time.sleep(0.2)
                        samples[phase] += _rules_latencies(router.address, calls // ROUNDS)
                    sent[phase] += load.sent
                    errors += load.errors
    ms = {phase: (round(percentile(v, 0.5) * 1e3, 3), round(percentile(v, 0.99) * 1e3, 3))
          for phase, v in samples.items()}
    return {
        "rules_p99_ms_alone": ms["alone"][1],
        "rules_p99_ms_with_classifiers": ms["classifiers"][1],
        "rules_p99_ms_with_transformer": ms["transformer"][1],
        "rules_p50_ms": {phase: v[0] for phase, v in ms.items()},
        "classifier_rate_per_s": {"classifiers": rate, "transformer": transformer_rate},
        "classifier_requests": sent,
        "classifier_errors": errors[:5],
        "rules_calls_per_phase": calls,
    }


def print_isolation(report: dict[str, object]) -> None:
    iso: dict = report["isolation"]  # type: ignore[assignment]
    alone = iso["rules_p99_ms_alone"]
    print("isolation: rules-only Route latency while classifier-heavy requests arrive (same router, same run)")
    print(f"  {'phase':<44}{'p50 ms':>10}{'p99 ms':>10}{'p99 / alone':>13}")
    rows = (("rules-only alone", "alone", alone),
            (f"+ {iso['classifier_rate_per_s']['classifiers']:g}/s on the default encoder", "classifiers",
             iso["rules_p99_ms_with_classifiers"]),
            (f"+ {iso['classifier_rate_per_s']['transformer']:g}/s on the transformer", "transformer",
             iso["rules_p99_ms_with_transformer"]))
    for label, phase, p99 in rows:
        print(f"  {label:<44}{iso['rules_p50_ms'][phase]:>10.3f}{p99:>10.3f}{p99 / alone:>12.2f}x")
    worst = max(iso["rules_p99_ms_with_classifiers"], iso["rules_p99_ms_with_transformer"]) / alone
    print(f"  target: within 2x of alone: worst {worst:.2f}x, {'met' if worst <= 2 else 'NOT met'}"
          f"  (classifier requests served: {iso['classifier_requests']})")
    if iso["classifier_errors"]:
        print(f"  classifier request errors: {iso['classifier_errors']}")
