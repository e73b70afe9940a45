"""`switchpoint sim`: a fleet of simulated replicas on 127.0.0.1, one HTTP port each.

A fleet is described as JSON or YAML: {"replicas": [{"port": 8101, "model": "...", "role":
"both"|"prefill"|"decode", "legacy_metrics": false}, ...]}; or with --replicas N --base-port P.
Every replica runs in this one process on its own port (the engine loops are cheap: they
sleep through simulated GPU time).
"""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiohttp import web

from switchpoint.sim.server import SimReplica


@dataclass(frozen=True)
class ReplicaSpec:
    port: int
    model: str
    role: str = "both"
    legacy_metrics: bool = False


def load_fleet(path: Path) -> list[ReplicaSpec]:
    raw = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    specs = []
    for i, r in enumerate(raw.get("replicas") or []):
        if r.get("role", "both") not in ("both", "prefill", "decode"):
            raise ValueError(f"{path}: replicas[{i}].role must be both, prefill or decode")
        specs.append(ReplicaSpec(int(r["port"]), str(r["model"]), r.get("role", "both"),
                                 bool(r.get("legacy_metrics", False))))
    if not specs:
        raise ValueError(f"{path}: no replicas")
    return specs


async def serve_fleet(specs: list[ReplicaSpec], host: str = "127.0.0.1", ready: Path | None = None) -> None:
    runners = []
    for spec in specs:
        runner = web.AppRunner(SimReplica(spec.model, spec.role, legacy_metrics=spec.legacy_metrics).app(),
                               access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, spec.port).start()
        runners.append(runner)
    print(f"switchpoint sim: {len(specs)} replica(s) on {host}: "
          + ", ".join(f"{s.port} ({s.role})" for s in specs), flush=True)
    if ready is not None:
        ready.write_text("ready")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()
