"""`switchpoint operator`: run the kopf operator.

Only the standard library is imported at module level, so that wiring these flags into
the `switchpoint` CLI costs nothing to commands that do not run the operator.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchpoint.operator.kube import Connection

log = logging.getLogger("switchpoint.operator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", action="append", default=[], metavar="NS",
                        help="watch only this namespace (repeatable); default: the whole cluster")
    parser.add_argument("--router-settings", default=os.environ.get("SWITCHPOINT_ROUTER_SETTINGS"), metavar="FILE",
                        help="YAML with the router image, replicas, resources, Redis, OTLP (the chart renders it)")
    parser.add_argument("--server", default=None, metavar="URL",
                        help="API server URL without auth (e.g. kubectl proxy); default: in-cluster, then kubeconfig")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument("--no-nudge", dest="nudge", action="store_false",
                        help="do not annotate router pods after a config change (then the kubelet refreshes their "
                             "ConfigMap volume at its next sync, up to about a minute; needs no 'patch pods')")
    parser.add_argument("--resync-seconds", type=float, default=60.0, help="full re-check of every namespace")
    parser.add_argument("--debounce-seconds", type=float, default=0.2,
                        help="how long a burst of watch events is coalesced into one pass")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", metavar="URL",
                        help="kopf liveness endpoint ('' to disable)")


def run(args: argparse.Namespace) -> int:
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # one line per watch event is noise
    # kopf handles SIGTERM and SIGINT itself in the main thread. A stop flag of ours would never be set (kopf's
    # handlers replace any we add), and kopf would wait 5 s for its waiter on every shutdown.
    return asyncio.run(serve(args, None))


async def serve(args: argparse.Namespace, stop: asyncio.Event | None) -> int:
    """Run until `stop` is set (None: until SIGTERM or SIGINT)."""
    from switchpoint.operator.kube import find_connection

    return await serve_with(find_connection(args.server, args.context), args, stop)


async def serve_with(connection: Connection, args: argparse.Namespace, stop: asyncio.Event | None) -> int:
    """Run against the cluster `connection` names (args.server and args.context are not read)."""
    import kopf

    from switchpoint.operator.handlers import register
    from switchpoint.operator.kube import KubeApi
    from switchpoint.operator.reconciler import Reconciler
    from switchpoint.operator.settings import load_settings

    try:
        settings = load_settings(args.router_settings)
    except ValueError as exc:
        log.error("switchpoint operator: cannot start: %s (%s)", exc, args.router_settings)
        return 2
    api = KubeApi(connection)
    reconciler = Reconciler(api, settings, nudge=args.nudge, resync_s=args.resync_seconds,
                            debounce_s=args.debounce_seconds)
    registry = kopf.OperatorRegistry()
    register(registry, reconciler, connection)
    log.info("switchpoint operator: API %s, namespaces %s", connection.server, ", ".join(args.namespace) or "all")
    await kopf.operator(registry=registry, standalone=True, clusterwide=not args.namespace,
                        namespaces=args.namespace, liveness_endpoint=args.liveness or None, stop_flag=stop)
    return 0
