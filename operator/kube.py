"""A small async Kubernetes REST client (aiohttp) and how the operator finds its cluster.

The operator needs a handful of verbs on a handful of resources; plain REST with
JSON merge patches behaves the same against a real API server and against the
kmock stand-in the tests use. The same credentials are handed to kopf (login
handler), so the watches and the writes run as one identity.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

Body = dict[str, Any]
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"
TOKEN_TTL_S = 60.0  # projected service-account tokens rotate; re-read the file this often


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if sub is not None:
            base += f"/{sub}"
        return base


POOLS = Resource("switchpoint.dev", "v1alpha1", "modelpools", "ModelPool")
POLICIES = Resource("switchpoint.dev", "v1alpha1", "routingpolicies", "RoutingPolicy")
BUDGETS = Resource("switchpoint.dev", "v1alpha1", "budgets", "Budget")
CUSTOM = (POOLS, POLICIES, BUDGETS)
PODS = Resource("", "v1", "pods", "Pod")
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
SERVICES = Resource("", "v1", "services", "Service")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
AUTOSCALERS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
# In the order a policy's objects are created: the routers' identity and its grant before the pods that use them.
OWNED = (SERVICE_ACCOUNTS, ROLES, ROLE_BINDINGS, CONFIG_MAPS, DEPLOYMENTS, SERVICES, DISRUPTION_BUDGETS, AUTOSCALERS)
BY_KIND = {r.kind: r for r in (*CUSTOM, PODS, *OWNED)}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, method: str, path: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{method} {path}: {status} {reason}: {message}")


@dataclass(frozen=True)
class Connection:
    server: str
    ca_path: str | None = None
    token: str | None = None
    token_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    insecure: bool = False

    def current_token(self) -> str | None:
        if self.token_path:
            return Path(self.token_path).read_text(encoding="utf-8").strip()
        return self.token


def in_cluster() -> Connection | None:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (SERVICE_ACCOUNT / "token").exists():
        return None
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return Connection(server, ca_path=str(SERVICE_ACCOUNT / "ca.crt"), token_path=str(SERVICE_ACCOUNT / "token"))


def from_kubeconfig(context: str | None = None, path: str | None = None) -> Connection:
    """Read `path`, else $KUBECONFIG or ~/.kube/config, with the official client's loader (exec plugins and all)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    token = None
    for key in ("BearerToken", "authorization"):
        value = (cfg.api_key or {}).get(key)
        if value:
            token = value.removeprefix("Bearer ").strip()
            break
    return Connection(cfg.host, ca_path=cfg.ssl_ca_cert, token=token, cert_path=cfg.cert_file,
                      key_path=cfg.key_file, insecure=not cfg.verify_ssl)


def find_connection(server: str | None = None, context: str | None = None) -> Connection:
    """An explicit server URL (no auth; tests and `kubectl proxy`), else in-cluster, else kubeconfig."""
    if server:
        return Connection(server.rstrip("/"), insecure=True)
    return in_cluster() or from_kubeconfig(context)


class KubeApi:
    def __init__(self, connection: Connection, timeout_s: float = 10.0):
        self.connection = connection
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[float, str | None] = (0.0, None)

    def _ssl(self) -> ssl.SSLContext | bool:
        c = self.connection
        if c.insecure or c.server.startswith("http://"):
            return False
        context = ssl.create_default_context(cafile=c.ca_path)
        if c.cert_path and c.key_path:
            context.load_cert_chain(c.cert_path, c.key_path)
        return context

    def _headers(self) -> dict[str, str]:
        read_at, token = self._token
        if time.monotonic() - read_at > TOKEN_TTL_S:
            token = self.connection.current_token()
            self._token = (time.monotonic(), token)
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=aiohttp.TCPConnector(ssl=self._ssl()))
        return self._session

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                      params: dict[str, str] | None = None) -> dict[str, Any] | None:
        """The decoded answer; None for 404 on GET and DELETE; ApiError for other failures.
        Connection failures raise aiohttp.ClientError / OSError (the caller retries)."""
        headers = {**self._headers(), "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self._client().request(method, self.connection.server + path, data=data, headers=headers,
                                          params=params) as response:
            text = await response.text()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                payload = {"message": text[:500]}
            if response.status == 404 and method in ("GET", "DELETE"):
                return None
            if response.status >= 400:
                detail = payload if isinstance(payload, dict) else {}
                raise ApiError(response.status, str(detail.get("reason") or response.reason),
                               str(detail.get("message") or ""), method, path)
            return payload if isinstance(payload, dict) else None

    async def list(self, resource: Resource, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        return (await self.list_versioned(resource, namespace, label_selector))[0]

    async def list_versioned(self, resource: Resource, namespace: str,
                             label_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """The items and the list's resourceVersion (where a watch of the same resources starts)."""
        params = {"labelSelector": label_selector} if label_selector else None
        answer = await self.request("GET", resource.path(namespace), params=params)
        if answer is None:
            raise ApiError(404, "NotFound", f"resource {resource.plural}.{resource.group or 'core'} is not served",
                           "GET", resource.path(namespace))
        items = answer.get("items") or []
        for item in items:  # list items come without apiVersion and kind
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
        return items, str((answer.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(self, resource: Resource, namespace: str, resource_version: str,
                    label_selector: str | None = None, timeout_s: int = 300) -> AsyncIterator[tuple[str, Body]]:
        """(type, object) watch events after `resource_version`, until the server ends the stream (after
        `timeout_s`). An ERROR event (410 Gone: the version is too old; list again) raises ApiError."""
        path = resource.path(namespace)
        params = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(timeout_s)}
        if label_selector:
            params["labelSelector"] = label_selector
        stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout.total, sock_read=timeout_s + 30)
        async with self._client().get(self.connection.server + path, params=params, timeout=stream_timeout,
                                      headers={**self._headers(), "Accept": "application/json"}) as response:
            if response.status >= 400:
                detail = await response.text()
                raise ApiError(response.status, str(response.reason), detail[:500], "WATCH", path)
            pending = b""
            async for chunk in response.content.iter_any():  # events are JSON lines of any length
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise ApiError(int(status.get("code") or 500), str(status.get("reason") or "Error"),
                                       str(status.get("message") or ""), "WATCH", path)
                    yield str(event.get("type")), event.get("object") or {}

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.request("GET", resource.path(namespace, name))

    async def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self.request("POST", resource.path(namespace), body)

    async def patch(self, resource: Resource, namespace: str, name: str, body: dict[str, Any],
                    sub: str | None = None) -> dict[str, Any] | None:
        return await self.request("PATCH", resource.path(namespace, name, sub), body, MERGE_PATCH)

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        await self.request("DELETE", resource.path(namespace, name), {"propagationPolicy": "Background"})

    async def served(self, resource: Resource) -> bool:
        """Whether the API serves this resource (its CRD is installed)."""
        base = f"/apis/{resource.group}/{resource.version}" if resource.group else f"/api/{resource.version}"
        answer = await self.request("GET", base)
        return bool(answer) and any(r.get("name") == resource.plural for r in answer.get("resources") or ())
