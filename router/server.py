"""A router process: the gRPC server (Router, health, reflection), metrics endpoint and config watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server

from switchpoint.config.model import Replica, RouterConfig
from switchpoint.operator.kube import KubeApi
from switchpoint.router.budget.enforcer import BudgetEnforcer
from switchpoint.router.budget.gate import BudgetGate
from switchpoint.router.budget.ledger import RedisLedger
from switchpoint.router.cache import SemanticCache, open_store
from switchpoint.router.cache.redis_store import RedisStore
from switchpoint.router.caching import CacheStage
from switchpoint.router.classifiers.bank import ModelBank
from switchpoint.router.core import Preparer, RouterCore, Snapshot
from switchpoint.router.discovery import NoCredentials, ReplicaDiscovery, router_connection
from switchpoint.router.frontdoors.extproc.service import ExtProcFrontDoor
from switchpoint.router.frontdoors.extproc.settings import ExtProcSettings
from switchpoint.router.frontdoors.grpc_router import SERVICE_NAME, RouterService
from switchpoint.router.frontdoors.h2grpc import H2GrpcServer
from switchpoint.router.handoff import Handoff
from switchpoint.router.inflight import InflightLedger
from switchpoint.router.metrics import RouterMetrics
from switchpoint.router.passive_health import PassiveHealth
from switchpoint.router.peering import CHANNEL, PeerChannel
from switchpoint.router.pipeline import RoutePipeline
from switchpoint.router.reload import ConfigWatcher
from switchpoint.router.request import RequestLimits
from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.scheduler import Scheduler
from switchpoint.router.scheduling.scraper import Scraper
from switchpoint.router.selecting import SelectorBank, Selectors, close_retired, sync_forever
from switchpoint.router.signals.neural import SignalInference
from switchpoint.router.telemetry import otlp_tracer_provider, tracer_from
from switchpoint.router.tickets import TicketSigner, settle_key_from_env

log = logging.getLogger("switchpoint.router")

EXPIRY_SWEEP_S = 1.0  # in-flight expiry, and queued budget settlements


class StartError(RuntimeError):
    """The router cannot start as configured (a port taken, pods it cannot list); the message says why."""


class RouterServer:
    def __init__(
        self,
        config_paths: list[str | Path],
        host: str = "127.0.0.1",
        port: int = 0,
        metrics_port: int | None = None,
        limits: RequestLimits | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        reload_interval: float = 1.0,
        inflight_ttl_s: float | None = None,
        redis_url: str | None = None,
        redis_timeout_s: float = 0.25,
        otlp_endpoint: str | None = None,
        models_dir: Path | None = None,
        classifier_threads: int = 2,
        extproc_port: int | None = None,
        extproc_settings: ExtProcSettings | None = None,
        kubeconfig: str | None = None,
        peer_channel: str | None = CHANNEL,
        budget_leases: bool = True,
    ):
        self.config_paths = list(config_paths)
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self.limits = limits or RequestLimits()
        self.tracer_provider = tracer_provider
        self.otlp_endpoint = otlp_endpoint
        self._owns_provider = False
        self.ledger = InflightLedger(ttl_s=inflight_ttl_s if inflight_ttl_s is not None else inflight_ttl_from_env())
        self.fleet = FleetState(PassiveHealth())
        self.metrics = RouterMetrics(self.ledger.loads, self.fleet)
        self.reload_interval = reload_interval
        self.redis_url = redis_url
        self.redis_timeout_s = redis_timeout_s
        self.budget_ledger: RedisLedger | None = None
        self.peer_channel = peer_channel  # where the routers on this Redis tell each other what they place
        self.peering: PeerChannel | None = None
        self.budget_leases = budget_leases  # router/budget/lease.py
        self.core: RouterCore | None = None
        self.server: grpc.aio.Server | None = None
        self.health = HealthServicer()
        self._tasks: list[asyncio.Task] = []
        self._metrics_http = None
        self.bank = ModelBank(models_dir)
        self.preparer = Preparer(self.bank, SelectorBank(redis_url))
        self.classifier_threads = classifier_threads
        self.extproc_port = extproc_port  # the Envoy ext_proc front door's own port (None: off)
        self.extproc_settings = extproc_settings
        self.extproc: ExtProcFrontDoor | None = None
        self.extproc_server: H2GrpcServer | None = None
        self.inference: SignalInference | None = None
        self.cache: SemanticCache | None = None
        # Selector pools' replicas come from watching their pods; the client is made on the first selector pool,
        # so a router on static pools never connects to Kubernetes.
        self.discovery = ReplicaDiscovery(lambda: KubeApi(router_connection(kubeconfig)), self._replicas_changed)

    @property
    def config(self) -> RouterConfig:
        assert self.core is not None
        return self.core.snapshot.config

    async def start(self) -> int:
        """Compile and prepare the config (ConfigError if it is broken), bind, and serve. Returns the gRPC port."""
        snapshot = await asyncio.to_thread(self.preparer.load, self.config_paths)
        config = snapshot.config
        if self.tracer_provider is None and self.otlp_endpoint:
            self.tracer_provider = otlp_tracer_provider(
                self.otlp_endpoint, count=lambda stage, n: self.metrics.trace_spans.labels(stage).inc(n))
            self._owns_provider = True
        tracer = tracer_from(self.tracer_provider)
        if self.redis_url:
            self.budget_ledger = RedisLedger(self.redis_url, self.redis_timeout_s)
        elif config.budgets:
            log.warning("%d budget(s) configured but no --redis ledger: they are not enforced (each budget's "
                        "failurePolicy applies as if the ledger were unreachable)", len(config.budgets))
        # A reservation outlives the in-flight entry a little, so a Report that arrives in time always settles it.
        enforcer = BudgetEnforcer(self.budget_ledger, reservation_ttl_s=reservation_ttl_s(self.ledger.ttl_s))
        self.scheduler = Scheduler(self.ledger, self.fleet, replicas=self.discovery)
        if self.redis_url and self.peer_channel:
            self.peering = PeerChannel(self.redis_url, self.scheduler, self.peer_channel, self.redis_timeout_s,
                                       count=lambda outcome, n: self.metrics.peer_messages.labels(outcome).inc(n))
            await self.peering.start()
        self.inference = SignalInference(self.classifier_threads, tracer)
        # The cache shares the budget ledger's Redis when there is one (vector sets are built into Redis 8);
        # otherwise it lives in this process.
        self.cache = SemanticCache(open_store(self.redis_url))
        if isinstance(self.cache.backend, RedisStore):  # a cluster's slot map now, not in the first lookup's time
            with contextlib.suppress(Exception):  # Redis down at start: the cache's breaker takes it from here
                await asyncio.wait_for(self.cache.backend.connect(), 2.0)
        self.handoff = self._handoff()
        self.core = RouterCore(snapshot, RoutePipeline(self.scheduler, tracer, self.inference), self.ledger,
                               self.metrics, tracer, BudgetGate(enforcer, self.metrics, self.budget_leases),
                               CacheStage(self.cache, self.inference, self.metrics), bank=self.bank,
                               health=self.fleet.health, handoff=self.handoff)
        self.discovery.update(config)  # NoCredentials if a pool selects pods and there are none
        if not await self.discovery.listed():
            unlisted = self.discovery.unlisted()
            await self.discovery.stop()
            raise StartError(f"could not list the pods of {len(unlisted)} selector pool(s) within 10 s: "
                             + "; ".join(unlisted))
        service = RouterService(self.core, self.limits)
        # The transport limit sits above the prompt limit, so an oversized prompt gets our
        # INVALID_ARGUMENT naming the limit rather than the transport's RESOURCE_EXHAUSTED.
        transport_max = 2 * self.limits.max_prompt_bytes + (1 << 20)
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", transport_max),
            ("grpc.so_reuseport", 0),
        ])
        handlers = service.method_handlers()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        # Registered methods skip grpcio's per-call lookup by name (the generated stubs do the same).
        self.server.add_registered_method_handlers(SERVICE_NAME, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = _bind(self.server, self.host, self.port, "gRPC")
        await self.server.start()
        if self.extproc_port is not None:
            await self._start_extproc()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.metrics_port is not None:
            self._metrics_http, _ = start_http_server(self.metrics_port, addr=self.host,
                                                      registry=self.metrics.registry)
            self.metrics_port = self._metrics_http.server_port
        core = self.core
        watcher = ConfigWatcher(self.config_paths, lambda: self.preparer.load(self.config_paths, core.snapshot),
                                self._apply, self._refused, self.reload_interval)
        scraper = Scraper(lambda: self.config, self.fleet, replicas=self.discovery)
        self._tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(core.sweep_forever(EXPIRY_SWEEP_S)),
                       asyncio.create_task(scraper.run()),
                       asyncio.create_task(sync_forever(lambda: core.snapshot.selectors))]
        log.info("router serving %d policies, %d pools on %s:%d (config %s)", len(config.policies),
                 len(config.pools), self.host, self.port, config.digest)
        return self.port

    def _handoff(self) -> Handoff:
        """Settle anywhere: the deployment's settle key (the chart's Secret) lets every replica settle every ticket;
        without one, this process's own key (Reports settle only here)."""
        try:
            key = settle_key_from_env()
        except ValueError as exc:
            raise StartError(str(exc)) from None
        if key is None and self.redis_url:
            log.warning("no settle key ($SWITCHPOINT_SETTLE_KEY or $SWITCHPOINT_SETTLE_KEY_FILE): a Report settles "
                        "only on the router replica that routed its request")
        signer = TicketSigner(key) if key is not None else TicketSigner.ephemeral()
        return Handoff(signer, self.redis_url, shared=key is not None, ttl_s=self.ledger.ttl_s,
                       mark_ttl_s=reservation_ttl_s(self.ledger.ttl_s),
                       timeout_s=self.redis_timeout_s)

    async def _start_extproc(self) -> None:
        """The Envoy external processing front door on its own port (GIE's pickers use 9002), on the same core."""
        assert self.core is not None and self.extproc_port is not None
        self.extproc = ExtProcFrontDoor(self.core, self.extproc_settings, self.limits)
        # gRPC on the event loop's own thread (router/frontdoors/h2grpc.py: why not grpcio for this port)
        self.extproc_server = H2GrpcServer(self.extproc.methods(), 2 * self.extproc.settings.max_request_bytes
                                           + (1 << 20))
        try:
            self.extproc_port = await self.extproc_server.start(self.host, self.extproc_port)
        except OSError as exc:
            raise StartError(f"cannot bind the ext_proc port {self.extproc_port} on {self.host}: {exc}") from exc
        await self.extproc.start()

    async def _apply(self, snapshot: Snapshot) -> None:
        assert self.core is not None
        try:
            self.discovery.update(snapshot.config)
        except NoCredentials as exc:
            log.error("config reload refused; the previous config keeps serving: %s", exc)
            self._refused(exc)
            return
        await self.core.swap(snapshot)
        self.metrics.config_reloads.labels("applied").inc()
        log.info("config reloaded: digest %s", snapshot.digest)

    def _replicas_changed(self, pool_key: str, replicas: tuple[Replica, ...]) -> None:
        if self.core is not None:  # the scheduler keeps state only for replicas it was told about
            self.scheduler.retain(self.core.snapshot.config)

    def _refused(self, _: Exception) -> None:
        self.metrics.config_reloads.labels("refused").inc()

    async def wait(self) -> None:
        assert self.server is not None
        await self.server.wait_for_termination()

    async def stop(self, grace: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        await self.discovery.stop()
        await self.health.enter_graceful_shutdown()
        if self.extproc is not None:
            await self.extproc.stop()
        if self.extproc_server is not None:
            await self.extproc_server.stop(grace)
        if self.server is not None:
            await self.server.stop(grace)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        if self.peering is not None:
            await self.peering.close()
        if self.core is not None:  # the leases' unused budget goes back before the ledger's connection closes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.core.budgets.leases.close(), 2.0)
        if self.budget_ledger is not None:
            await self.budget_ledger.close()
        if self.core is not None:
            await self.core.handoff.close()
        if self.inference is not None:
            self.inference.close()
        if self.cache is not None:
            await self.cache.close()
        if self.core is not None:
            await close_retired(self.core.snapshot.selectors, Selectors())
        if self._owns_provider and isinstance(self.tracer_provider, TracerProvider):
            await asyncio.to_thread(self.tracer_provider.shutdown)


def reservation_ttl_s(inflight_ttl_s: float) -> float:
    """A reservation outlives its in-flight entry (and ticket) a little: a Report that arrives in time always
    settles it. The settle-once mark lives as long, so a late duplicate never finds it gone."""
    return inflight_ttl_s + min(60.0, inflight_ttl_s)


def inflight_ttl_from_env() -> float:
    """$SWITCHPOINT_INFLIGHT_TTL_S (seconds a routed request may take before its reservation expires), default 600."""
    raw = os.environ.get("SWITCHPOINT_INFLIGHT_TTL_S", "")
    try:
        ttl = float(raw) if raw else 600.0
    except ValueError:
        raise StartError(f"$SWITCHPOINT_INFLIGHT_TTL_S: a number of seconds, got {raw!r}") from None
    if not ttl > 0:
        raise StartError(f"$SWITCHPOINT_INFLIGHT_TTL_S: must be > 0, got {raw!r}")
    return ttl


def _bind(server: grpc.aio.Server, host: str, port: int, what: str) -> int:
    """The bound port (the OS's choice for 0); StartError naming the port when it is taken."""
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpcio raises where older versions returned 0
        raise StartError(f"cannot bind the {what} port {port} on {host}: {exc}") from exc
    if bound == 0:
        raise StartError(f"cannot bind the {what} port {port} on {host}")
    return bound
