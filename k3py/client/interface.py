"""The one client interface every component uses to read and write API objects.

Controllers, the scheduler, simulated nodes and (later) the kubelet talk to the cluster only
through :class:`Client`. It works on plain ``dict`` objects, exactly the JSON the API serves,
addressed by ``(group, version, plural, namespace, name)`` — a :class:`Resource` names the first
three. Every failure is raised as :class:`k3py.api.errors.ApiError` carrying the HTTP code and the
Kubernetes ``reason`` (``NotFound``, ``Conflict``, ``AlreadyExists``, ``Expired``...), so callers
branch on ``err.code`` the same way whatever the transport.

The client itself holds no connection logic: it turns each call into a :class:`Request` and
hands it to a :class:`Transport`. Two transports exist:

- HTTPS (:mod:`k3py.client.https`): aiohttp against any Kubernetes API server, for agents and
  for the server's own components until the in-process transport exists;
- in-process: provided by the API server (``k3py.server.apiserver``), which serves a
  ``Request`` by calling its REST machinery directly — same validation, admission and watch
  semantics, no HTTP. ``k3py.client`` never imports the server; the server's wiring passes the
  transport in. The protocol is documented in docs/internal-interfaces.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from k3py.api.errors import ApiError

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = {"json": JSON_PATCH, "merge": MERGE_PATCH, "strategic": STRATEGIC_MERGE_PATCH}


@dataclass(frozen=True)
class Resource:
    """A served resource: ``Resource("apps", "v1", "deployments")``; core group is ``""``."""

    group: str
    version: str
    plural: str
    kind: str = ""
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# The resources the control plane works with, named once.
PODS = Resource("", "v1", "pods", "Pod")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
EVENTS = Resource("", "v1", "events", "Event")
SERVICES = Resource("", "v1", "services", "Service")
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet")
CONTROLLERREVISIONS = Resource("apps", "v1", "controllerrevisions", "ControllerRevision")
JOBS = Resource("batch", "v1", "jobs", "Job")
CRONJOBS = Resource("batch", "v1", "cronjobs", "CronJob")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
PVCS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")


@dataclass(frozen=True)
class Request:
    """One API call, transport-neutral.

    ``verb`` is one of get, list, watch, create, update, patch, delete, deletecollection.
    ``subresource`` is "" or e.g. "status", "scale", "binding", "eviction", "finalize".
    ``query`` holds the URL query parameters exactly as Kubernetes names them
    (labelSelector, fieldSelector, resourceVersion, allowWatchBookmarks, timeoutSeconds,
    limit, continue, propagationPolicy, dryRun, fieldManager...).
    ``content_type`` is set for patches (one of the three patch media types).
    """

    verb: str
    resource: Resource
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    body: Any = None
    query: Mapping[str, str] = field(default_factory=dict)
    content_type: str = ""

    def path(self) -> str:
        """The REST path this request addresses (what the HTTPS transport requests)."""
        r = self.resource
        base = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
        if self.namespace:
            base += f"/namespaces/{self.namespace}"
        base += f"/{r.plural}"
        if self.name:
            base += f"/{self.name}"
        if self.subresource:
            base += f"/{self.subresource}"
        return base


class Transport(Protocol):
    """What carries a :class:`Request` to an API server.

    ``call`` performs any verb but watch and returns the decoded JSON response body (the
    object, the list, or the Status a delete may answer); failures raise ``ApiError`` with
    the server's Status (code, reason, message, details). Connection failures raise
    ``ApiError(503, "ServiceUnavailable", ...)``.

    ``watch`` performs a watch request (``verb == "watch"``) and yields each watch event as
    the decoded dict ``{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR",
    "object": {...}}`` until the server ends the stream; an ``ERROR`` event is yielded as is
    (the client turns it into an ``ApiError``). Refusing the watch outright raises
    ``ApiError`` (e.g. 410 Expired for a too-old resourceVersion).
    """

    async def call(self, request: Request) -> Any: ...

    def watch(self, request: Request) -> AsyncIterator[dict[str, Any]]: ...

    async def close(self) -> None: ...


def status_error(status: Mapping[str, Any], fallback_code: int = 500) -> ApiError:
    """An ``ApiError`` from a ``v1 Status`` body (as the server or an ERROR event sends it)."""
    code = status.get("code") if isinstance(status.get("code"), int) else fallback_code
    return ApiError(
        int(code),
        str(status.get("reason") or "Unknown"),
        str(status.get("message") or f"request failed with HTTP {code}"),
        status.get("details") if isinstance(status.get("details"), dict) else None,
    )


def _selector_query(
    label_selector: str | Mapping[str, str] | None, field_selector: str | None
) -> dict[str, str]:
    query: dict[str, str] = {}
    if label_selector:
        if isinstance(label_selector, Mapping):
            label_selector = ",".join(f"{k}={v}" for k, v in sorted(label_selector.items()))
        query["labelSelector"] = label_selector
    if field_selector:
        query["fieldSelector"] = field_selector
    return query


class Client:
    """Async Kubernetes client over a :class:`Transport`; every method raises ``ApiError``."""

    def __init__(self, transport: Transport, field_manager: str = "k3py") -> None:
        self.transport = transport
        self.field_manager = field_manager

    async def close(self) -> None:
        await self.transport.close()

    def _write_query(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        query = {"fieldManager": self.field_manager} if self.field_manager else {}
        if extra:
            query.update(extra)
        return query

    async def get(self, resource: Resource, name: str, namespace: str = "") -> dict[str, Any]:
        return await self.transport.call(Request("get", resource, namespace, name))

    async def list(
        self,
        resource: Resource,
        namespace: str = "",
        *,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """The list object (``items`` and ``metadata.resourceVersion``), following ``continue``."""
        query = _selector_query(label_selector, field_selector)
        if resource_version is not None:
            query["resourceVersion"] = resource_version
        if limit:
            query["limit"] = str(limit)
        result: dict[str, Any] = await self.transport.call(
            Request("list", resource, namespace, query=query)
        )
        items = list(result.get("items") or [])
        while limit and (result.get("metadata") or {}).get("continue"):
            page_query = dict(query, **{"continue": result["metadata"]["continue"]})
            page_query.pop("resourceVersion", None)
            result = await self.transport.call(Request("list", resource, namespace, query=page_query))
            items.extend(result.get("items") or [])
        result["items"] = items
        return result

    async def watch(
        self,
        resource: Resource,
        namespace: str = "",
        *,
        resource_version: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        bookmarks: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ``{"type", "object"}``; an ERROR event is raised as ``ApiError``."""
        query = _selector_query(label_selector, field_selector)
        query["watch"] = "true"
        if resource_version is not None:
            query["resourceVersion"] = resource_version
        if bookmarks:
            query["allowWatchBookmarks"] = "true"
        if timeout_seconds is not None:
            query["timeoutSeconds"] = str(timeout_seconds)
        async for event in self.transport.watch(Request("watch", resource, namespace, query=query)):
            if event.get("type") == "ERROR":
                raise status_error(event.get("object") or {})
            yield event

    async def create(
        self, resource: Resource, obj: dict[str, Any], namespace: str = ""
    ) -> dict[str, Any]:
        if resource.namespaced:
            namespace = namespace or (obj.get("metadata") or {}).get("namespace", "")
        else:
            namespace = ""
        return await self.transport.call(
            Request("create", resource, namespace, body=obj, query=self._write_query())
        )

    async def update(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        return await self.transport.call(
            Request("update", resource, meta.get("namespace", "") if resource.namespaced else "",
                    meta.get("name", ""), body=obj, query=self._write_query())
        )

    async def update_status(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        return await self.transport.call(
            Request("update", resource, meta.get("namespace", "") if resource.namespaced else "",
                    meta.get("name", ""), "status", body=obj, query=self._write_query())
        )

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str = "",
        *,
        patch_type: str = "merge",
        subresource: str = "",
    ) -> dict[str, Any]:
        """Patch with ``patch_type`` "json" (a list of ops), "merge" or "strategic"."""
        if patch_type not in PATCH_TYPES:
            raise ValueError(f"unknown patch type {patch_type!r}: use json, merge or strategic")
        return await self.transport.call(
            Request("patch", resource, namespace, name, subresource, body=patch,
                    query=self._write_query(), content_type=PATCH_TYPES[patch_type])
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str = "",
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Delete; returns what the server answers (the object if still finalizing, or a Status)."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            body["preconditions"] = dict(preconditions)
        return await self.transport.call(Request("delete", resource, namespace, name, body=body))

    async def bind(self, namespace: str, pod_name: str, node_name: str, pod_uid: str = "") -> None:
        """POST pods/binding: assign a pod to a node (the scheduler's only write to a pod)."""
        binding: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod_name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        }
        if pod_uid:
            binding["metadata"]["uid"] = pod_uid
        await self.transport.call(
            Request("create", PODS, namespace, pod_name, "binding", body=binding, query=self._write_query())
        )

    async def evict(self, namespace: str, pod_name: str, grace_period_seconds: int | None = None) -> None:
        """POST pods/eviction (policy/v1), which PodDisruptionBudgets may refuse with 429."""
        eviction: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod_name, "namespace": namespace},
        }
        if grace_period_seconds is not None:
            eviction["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
        await self.transport.call(Request("create", PODS, namespace, pod_name, "eviction", body=eviction))

    async def get_scale(self, resource: Resource, name: str, namespace: str) -> dict[str, Any]:
        return await self.transport.call(Request("get", resource, namespace, name, "scale"))

    async def set_scale(self, resource: Resource, name: str, namespace: str, replicas: int) -> dict[str, Any]:
        return await self.patch(resource, name, {"spec": {"replicas": replicas}}, namespace,
                                subresource="scale")

    async def finalize_namespace(self, namespace_obj: dict[str, Any]) -> dict[str, Any]:
        """PUT namespaces/<name>/finalize with ``spec.finalizers`` already trimmed."""
        name = namespace_obj["metadata"]["name"]
        return await self.transport.call(
            Request("update", NAMESPACES, "", name, "finalize", body=namespace_obj)
        )
