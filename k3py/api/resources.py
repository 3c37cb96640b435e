"""The resource table: every kind the API server serves, as discovery describes it.

One `ResourceInfo` per (group, version, plural) says what `kubectl api-resources` and
aggregated discovery show for it — scope, verbs, short names, categories, singular name,
subresources — and the API server builds its routes from the same entries, so what discovery
advertises is exactly what is served.

The built-in entries mirror an upstream Kubernetes 1.32 API server for the GA groups k3py
serves (the REST storage of each kind upstream decides its verbs: a storage that cannot be
listed has no `list`; namespaces have no `deletecollection`; bindings are create-only).
CustomResourceDefinitions add and remove entries at run time, hence a mutable table; they
can also attach their versions' schemas (`set_schema`), which the OpenAPI documents publish.

Versions of one group that share stored objects (autoscaling/v1 and v2 HPAs; core/v1 and
events.k8s.io/v1 Events) say so with `storage_resource`, written `group/plural` (the core
group is the empty string, so core Events are `/events`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The verbs of an ordinary, fully-featured REST storage, in discovery's (alphabetical) order.
FULL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
# Namespaces cannot be deleted in bulk upstream.
NO_COLLECTION_DELETE_VERBS: tuple[str, ...] = tuple(v for v in FULL_VERBS if v != "deletecollection")
STATUS_VERBS: tuple[str, ...] = ("get", "patch", "update")
# Connect-style subresources (proxy) answer every HTTP method; discovery lists them like this.
PROXY_VERBS: tuple[str, ...] = ("create", "delete", "get", "patch", "update")

# Upstream's group order in discovery (kube-aggregator priorities); groups not listed here
# (CRD groups) come after these, alphabetically.
BUILTIN_GROUP_ORDER: tuple[str, ...] = (
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
)


@dataclass(frozen=True)
class SubresourceInfo:
    """One subresource of a resource, e.g. deployments/scale."""

    name: str  # "status", "scale", "binding", "eviction", "log", "exec", ...
    group: str  # the responseKind's group ("autoscaling" for scale)
    version: str
    kind: str  # "Deployment" for status, "Scale" for scale, "Binding", ...
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class ResourceInfo:
    """One served resource in one group-version."""

    group: str  # "" for core
    version: str  # "v1"
    kind: str  # "Deployment"
    plural: str  # "deployments"
    singular: str  # "deployment"
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[SubresourceInfo, ...] = ()
    storage_resource: str = ""  # "group/plural" whose store keys this version shares ("" = own)

    @property
    def api_version(self) -> str:
        """The apiVersion field of objects of this resource: "v1" or "apps/v1"."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def storage_group(self) -> str:
        """The group under whose keys objects of this resource are stored."""
        if self.storage_resource:
            return self.storage_resource.split("/", 1)[0]
        return self.group

    @property
    def storage_plural(self) -> str:
        """The plural under whose keys objects of this resource are stored."""
        if self.storage_resource:
            return self.storage_resource.split("/", 1)[1]
        return self.plural

    def subresource(self, name: str) -> SubresourceInfo | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority_key(version: str) -> tuple[int, int, int, str]:
    """Sort key putting versions in Kubernetes' preference order (ascending = preferred first).

    GA before beta before alpha, higher numbers first; versions that do not look like
    Kubernetes versions come last, alphabetically.
    """
    m = _VERSION_RE.match(version)
    if m is None:
        return (3, 0, 0, version)
    major = int(m.group(1))
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor, "")


class ResourceTable:
    """All served resources, indexed by (group, version, plural) and by kind.

    Mutable (CRDs come and go); callers that cache derived data (OpenAPI documents, discovery
    answers) can compare `generation`, which grows on every change.
    """

    def __init__(self, infos: list[ResourceInfo] | None = None) -> None:
        self._by_plural: dict[tuple[str, str, str], ResourceInfo] = {}
        self._by_kind: dict[tuple[str, str, str], ResourceInfo] = {}
        # Explicit version order per group for built-ins (upstream's order, e.g. autoscaling
        # v2 before v1); other groups are ordered by version priority.
        self._version_order: dict[str, list[str]] = {}
        # OpenAPI v3 schemas of custom resources (a CRD version's openAPIV3Schema), by GVK.
        self._schemas: dict[tuple[str, str, str], dict] = {}
        self.generation = 0
        for info in infos or []:
            self.add(info)

    def add(self, info: ResourceInfo) -> None:
        """Add (or replace) one resource."""
        old = self._by_plural.get((info.group, info.version, info.plural))
        if old is not None:
            self._by_kind.pop((old.group, old.version, old.kind), None)
        self._by_plural[(info.group, info.version, info.plural)] = info
        self._by_kind[(info.group, info.version, info.kind)] = info
        self.generation += 1

    def remove(self, group: str, version: str, plural: str) -> None:
        """Remove one resource; removing a resource that is not there does nothing."""
        info = self._by_plural.pop((group, version, plural), None)
        if info is not None:
            self._by_kind.pop((info.group, info.version, info.kind), None)
            self._schemas.pop((info.group, info.version, info.kind), None)
            self.generation += 1

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_plural.get((group, version, plural))

    def by_kind(self, group: str, version: str, kind: str) -> ResourceInfo | None:
        return self._by_kind.get((group, version, kind))

    def set_schema(self, group: str, version: str, kind: str, schema: dict | None) -> None:
        """Attach (or with None drop) the structural schema of a custom resource version, so
        OpenAPI documents describe it (`kubectl explain`). Built-in kinds need none."""
        if schema is None:
            self._schemas.pop((group, version, kind), None)
        else:
            self._schemas[(group, version, kind)] = schema
        self.generation += 1

    def schema(self, group: str, version: str, kind: str) -> dict | None:
        """The schema set with `set_schema`, if any."""
        return self._schemas.get((group, version, kind))

    def set_version_order(self, group: str, versions: list[str]) -> None:
        """Fix the order (preferred first) of a group's versions, as upstream lists them."""
        self._version_order[group] = list(versions)
        self.generation += 1

    def groups(self) -> list[tuple[str, list[str]]]:
        """[(group, [versions, preferred first])] with the core group ("") first."""
        versions: dict[str, set[str]] = {}
        for group, version, _plural in self._by_plural:
            versions.setdefault(group, set()).add(version)
        result: list[tuple[str, list[str]]] = []
        builtin_rank = {g: i for i, g in enumerate(BUILTIN_GROUP_ORDER)}
        ordered = sorted(versions, key=lambda g: (builtin_rank.get(g, len(builtin_rank)), g))
        for group in ordered:
            fixed = self._version_order.get(group, [])
            present = versions[group]
            listed = [v for v in fixed if v in present]
            rest = sorted((v for v in present if v not in listed), key=version_priority_key)
            result.append((group, listed + rest))
        return result

    def resources(self, group: str, version: str) -> list[ResourceInfo]:
        """The resources of one group-version, sorted by plural as discovery lists them."""
        found = [i for (g, v, _p), i in self._by_plural.items() if g == group and v == version]
        return sorted(found, key=lambda i: i.plural)

    def all(self) -> list[ResourceInfo]:
        """Every resource, in discovery order (group, preferred version first, plural)."""
        out: list[ResourceInfo] = []
        for group, versions in self.groups():
            for version in versions:
                out.extend(self.resources(group, version))
        return out

    def preferred(self, group: str, plural: str) -> ResourceInfo | None:
        """The resource in the group's preferred version that has this plural, if any."""
        for g, versions in self.groups():
            if g != group:
                continue
            for version in versions:
                info = self.lookup(group, version, plural)
                if info is not None:
                    return info
        return None


def _status(group: str, version: str, kind: str) -> SubresourceInfo:
    return SubresourceInfo("status", group, version, kind, STATUS_VERBS)


_SCALE = SubresourceInfo("scale", "autoscaling", "v1", "Scale", STATUS_VERBS)


def _res(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    verbs: tuple[str, ...] = FULL_VERBS,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    status: bool = False,
    scale: bool = False,
    extra: tuple[SubresourceInfo, ...] = (),
    storage: str = "",
) -> ResourceInfo:
    subs: list[SubresourceInfo] = list(extra)
    if scale:
        subs.append(_SCALE)
    if status:
        subs.append(_status(group, version, kind))
    return ResourceInfo(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs=verbs,
        short_names=short,
        categories=categories,
        subresources=tuple(sorted(subs, key=lambda s: s.name)),
        storage_resource=storage,
    )


_ALL = ("all",)


def _core() -> list[ResourceInfo]:
    v = "v1"
    pod_subs = (
        SubresourceInfo("attach", "", v, "PodAttachOptions", ("create", "get")),
        SubresourceInfo("binding", "", v, "Binding", ("create",)),
        SubresourceInfo("ephemeralcontainers", "", v, "Pod", STATUS_VERBS),
        SubresourceInfo("eviction", "policy", "v1", "Eviction", ("create",)),
        SubresourceInfo("exec", "", v, "PodExecOptions", ("create", "get")),
        SubresourceInfo("log", "", v, "Pod", ("get",)),
        SubresourceInfo("portforward", "", v, "PodPortForwardOptions", ("create", "get")),
        SubresourceInfo("proxy", "", v, "PodProxyOptions", PROXY_VERBS),
    )
    return [
        _res("", v, "Binding", "bindings", verbs=("create",)),
        _res(
            "", v, "ComponentStatus", "componentstatuses",
            namespaced=False, verbs=("get", "list"), short=("cs",),
        ),
        _res("", v, "ConfigMap", "configmaps", short=("cm",)),
        _res("", v, "Endpoints", "endpoints", short=("ep",)),
        _res("", v, "Event", "events", short=("ev",)),
        _res("", v, "LimitRange", "limitranges", short=("limits",)),
        _res(
            "", v, "Namespace", "namespaces",
            namespaced=False, verbs=NO_COLLECTION_DELETE_VERBS, short=("ns",), status=True,
            extra=(SubresourceInfo("finalize", "", v, "Namespace", ("update",)),),
        ),
        _res(
            "", v, "Node", "nodes", namespaced=False, short=("no",), status=True,
            extra=(SubresourceInfo("proxy", "", v, "NodeProxyOptions", PROXY_VERBS),),
        ),
        _res("", v, "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), status=True),
        _res(
            "", v, "PersistentVolume", "persistentvolumes",
            namespaced=False, short=("pv",), status=True,
        ),
        _res("", v, "Pod", "pods", short=("po",), categories=_ALL, status=True, extra=pod_subs),
        _res("", v, "PodTemplate", "podtemplates"),
        _res(
            "", v, "ReplicationController", "replicationcontrollers",
            short=("rc",), categories=_ALL, status=True, scale=True,
        ),
        _res("", v, "ResourceQuota", "resourcequotas", short=("quota",), status=True),
        _res("", v, "Secret", "secrets"),
        _res(
            "", v, "ServiceAccount", "serviceaccounts", short=("sa",),
            extra=(SubresourceInfo("token", "authentication.k8s.io", "v1", "TokenRequest", ("create",)),),
        ),
        _res(
            "", v, "Service", "services", short=("svc",), categories=_ALL, status=True,
            extra=(SubresourceInfo("proxy", "", v, "ServiceProxyOptions", PROXY_VERBS),),
        ),
    ]


def _apps() -> list[ResourceInfo]:
    g, v = "apps", "v1"
    return [
        _res(g, v, "ControllerRevision", "controllerrevisions"),
        _res(g, v, "DaemonSet", "daemonsets", short=("ds",), categories=_ALL, status=True),
        _res(g, v, "Deployment", "deployments", short=("deploy",), categories=_ALL, status=True, scale=True),
        _res(g, v, "ReplicaSet", "replicasets", short=("rs",), categories=_ALL, status=True, scale=True),
        _res(g, v, "StatefulSet", "statefulsets", short=("sts",), categories=_ALL, status=True, scale=True),
    ]


def _others() -> list[ResourceInfo]:
    hpa_storage = "autoscaling/horizontalpodautoscalers"
    return [
        _res("events.k8s.io", "v1", "Event", "events", short=("ev",), storage="/events"),
        *(
            _res(
                "autoscaling", v, "HorizontalPodAutoscaler", "horizontalpodautoscalers",
                short=("hpa",), categories=_ALL, status=True, storage=hpa_storage,
            )
            for v in ("v2", "v1")
        ),
        _res("batch", "v1", "CronJob", "cronjobs", short=("cj",), categories=_ALL, status=True),
        _res("batch", "v1", "Job", "jobs", categories=_ALL, status=True),
        _res("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False),
        _res("networking.k8s.io", "v1", "Ingress", "ingresses", short=("ing",), status=True),
        _res("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short=("netpol",)),
        _res("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",), status=True),
        *(
            _res("rbac.authorization.k8s.io", "v1", kind, plural, namespaced=namespaced)
            for kind, plural, namespaced in (
                ("ClusterRoleBinding", "clusterrolebindings", False),
                ("ClusterRole", "clusterroles", False),
                ("RoleBinding", "rolebindings", True),
                ("Role", "roles", True),
            )
        ),
        _res("storage.k8s.io", "v1", "CSIDriver", "csidrivers", namespaced=False),
        _res("storage.k8s.io", "v1", "CSINode", "csinodes", namespaced=False),
        _res("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities"),
        _res("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False, short=("sc",)),
        _res("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", namespaced=False, status=True),
        _res(
            "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
            namespaced=False, short=("crd", "crds"), categories=("api-extensions",), status=True,
        ),
        _res("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False, short=("pc",)),
        _res("coordination.k8s.io", "v1", "Lease", "leases"),
        _res("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    ]


def builtin_resources() -> ResourceTable:
    """A new table holding every built-in kind the server serves."""
    table = ResourceTable(_core() + _apps() + _others())
    table.set_version_order("autoscaling", ["v2", "v1"])
    return table
