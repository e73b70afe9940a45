"""The kopf side, kept thin: watch events only queue a namespace for the reconciler.

Handlers are `on.event` handlers, which keep no per-object state (no
finalizers, no progress annotations), so nothing the operator writes into
users' objects can go stale across restarts; the reconciler is level-triggered.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from switchpoint.operator.kube import CUSTOM, OWNED, PODS, Connection, KubeApi
from switchpoint.operator.labels import MANAGED_BY, MANAGER
from switchpoint.operator.reconciler import TRANSIENT, Reconciler

log = logging.getLogger("switchpoint.operator")


def connection_info(connection: Connection) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=connection.server, ca_path=connection.ca_path, insecure=connection.insecure,
                               token=connection.current_token(), certificate_path=connection.cert_path,
                               private_key_path=connection.key_path)


async def report_missing_crds(api: KubeApi) -> list[str]:
    """Log, naming them, the switchpoint.dev resources the API does not serve (their CRDs are missing)."""
    try:
        missing = [r.plural for r in CUSTOM if not await api.served(r)]
    except TRANSIENT as exc:
        log.warning("cannot check the switchpoint.dev CRDs yet (%s); kopf keeps retrying", exc)
        return []
    if missing:
        log.error("the switchpoint.dev/v1alpha1 CRDs for %s are not installed: nothing can be reconciled until "
                  "they are (kubectl apply -f crds/, or helm install the chart); the operator keeps running and "
                  "starts serving them as soon as they appear", ", ".join(missing))
    return missing


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler, connection: Connection) -> None:
    """Attach the operator's handlers to a kopf registry (a fresh one per operator, so tests can run several)."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(connection)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # conditions carry the story; no Event per handled watch event
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        await report_missing_crds(reconciler.api)
        reconciler.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await reconciler.stop()
        await reconciler.api.close()

    def custom_changed(namespace: str | None, **_: Any) -> None:
        reconciler.enqueue(namespace)

    def pod_changed(namespace: str | None, **_: Any) -> None:
        if namespace in reconciler.pod_namespaces:
            reconciler.enqueue(namespace)

    for resource in CUSTOM:
        kopf.on.event(resource.group, resource.version, resource.plural, registry=registry,
                      id=f"queue-{resource.plural}")(custom_changed)
    kopf.on.event(PODS.group, PODS.version, PODS.plural, registry=registry, id="queue-pods")(pod_changed)
    for resource in OWNED:  # router objects: readiness for status, and repair when someone edits or deletes them
        kopf.on.event(resource.group, resource.version, resource.plural, labels={MANAGED_BY: MANAGER},
                      registry=registry, id=f"queue-{resource.plural}")(custom_changed)
