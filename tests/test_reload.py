"""Hot reload: edits take effect, broken edits are refused while the old config serves, nothing fails meanwhile."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc

from switchpoint.v1 import router_pb2

from .conftest import ThreadedRouter, chat, wait_for

INTERVAL = 0.05


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_an_edit_takes_effect_without_a_restart(config_dir: Path):
    with ThreadedRouter(config_paths=[config_dir], reload_interval=INTERVAL) as router:
        assert router.stub.Route(chat("hello there"), timeout=5).pool == "small-chat"
        edit(config_dir / "policy.yaml", "default:\n    pools: [{pool: small-chat}, {pool: large-reasoning}]",
             "default:\n    pools: [{pool: large-reasoning}]")
        assert wait_for(lambda: router.stub.Route(chat("hello there"), timeout=5).pool == "large-reasoning")
        assert 'switchpoint_config_reloads_total{result="applied"} 1.0' in router.metrics_text()


def test_a_broken_edit_is_refused_and_the_old_config_keeps_serving(config_dir: Path, caplog):
    with ThreadedRouter(config_paths=[config_dir], reload_interval=INTERVAL) as router:
        digest = router.server.config.digest
        edit(config_dir / "policy.yaml", "{pool: small-chat}, {pool: large-reasoning}]", "{pool: no-such-pool}]")
        assert wait_for(lambda: 'switchpoint_config_reloads_total{result="refused"} 1.0' in router.metrics_text())
        assert router.server.config.digest == digest
        assert router.stub.Route(chat("hello there"), timeout=5).pool == "small-chat"
        assert any("unknown ModelPool 'no-such-pool'" in r.getMessage() for r in caplog.records)
        # a later good edit is picked up again
        edit(config_dir / "policy.yaml", "{pool: no-such-pool}]", "{pool: large-reasoning}]")
        assert wait_for(lambda: router.stub.Route(chat("hello there"), timeout=5).pool == "large-reasoning")


def test_requests_keep_succeeding_while_the_config_flips(config_dir: Path):
    policy = config_dir / "policy.yaml"
    variants = [policy.read_text(), policy.read_text().replace("min: 6000", "min: 7000")]
    failures: list[str] = []
    routed = 0
    stop = threading.Event()
    with ThreadedRouter(config_paths=[config_dir], reload_interval=0.01) as router:
        def client() -> None:
            nonlocal routed
            while not stop.is_set():
                try:
                    d = router.stub.Route(chat("Please refactor this Python class for me now"), timeout=5)
                    router.stub.Report(router_pb2.ReportRequest(request_id=d.request_id,
                                                                outcome=router_pb2.OUTCOME_SUCCESS), timeout=5)
                    routed += 1
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")
        worker = threading.Thread(target=client)
        worker.start()
        for i in range(40):
            policy.write_text(variants[i % 2] + f"\n# edit {i}\n")
            time.sleep(0.02)
        assert wait_for(lambda: 'result="applied"' in router.metrics_text())
        stop.set()
        worker.join(10)
    assert failures == [] and routed > 20
