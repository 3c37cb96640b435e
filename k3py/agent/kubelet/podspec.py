"""Pure Pod-spec semantics the kubelet applies when it turns a container into a runtime spec
(``containerspec`` composes them into the ``ContainerSpec``).

No I/O here: the pod manager fetches the ConfigMaps and Secrets a container references
(``referenced_config``) and hands them in, so every rule below is unit-tested in milliseconds.

- ``container_env``: the container's environment in Kubernetes order — the Services' link
  variables first (``pod_service_env``: the ``kubernetes`` Service, and the pod namespace's
  Services unless ``enableServiceLinks`` is false), then ``envFrom`` sources in order, then ``env`` entries in
  order, each ``value`` with ``$(VAR)`` expanded against what came before. A missing ConfigMap,
  Secret or key that is not ``optional`` raises ``ContainerConfigError`` (the kubelet's
  ``CreateContainerConfigError``).
- ``expand``: ``$(VAR)`` expansion as the kubelet does it: ``$$`` is a literal ``$``, an unknown
  ``$(VAR)`` stays as written.
- ``qos_class``, ``runtime_resources`` (requests/limits → cgroup shares, quota, memory limit);
  the cgroup layout per QoS class (``pod_cgroup_path``: ``kubepods/pod<uid>`` for Guaranteed,
  ``kubepods/burstable/pod<uid>``, ``kubepods/besteffort/pod<uid>`` with the minimum CPU
  weight), the pod group's limits (``pod_cgroup_resources``) and ``oom_score_adj``;
  the restart back-off lives in ``backoff`` (``crash_loop_backoff`` is re-exported here).
- ``active_deadline_left``: what remains of the pod's ``activeDeadlineSeconds``.
- ``seccomp_profile``: the container's seccomp profile (its own ``seccompProfile``, else the
  pod's, else RuntimeDefault with ``--seccomp-default``, else Unconfined; privileged containers
  are unconfined); a Localhost profile is a file below the kubelet's seccomp dir.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from k3py.agent.kubelet.backoff import crash_loop_backoff as crash_loop_backoff  # re-exported
from k3py.api.meta import parse_rfc3339
from k3py.api.quantity import parse_quantity
from k3py.runtime.spec import Resources, SecurityProfile

Obj = dict[str, Any]



class ContainerConfigError(ValueError):
    """The container cannot be configured (a missing ConfigMap/Secret/key): CreateContainerConfigError."""


# As the kubelet reads them: "$$" is an escaped "$"; "$(" up to the next ")" names a variable
# (any characters; an unknown name, or "$(" without a ")", stays as written).
_VAR = re.compile(r"\$\$|\$\(([^)]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` from ``env``; ``$$`` escapes a ``$``; unknown references stay as they are."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR.sub(replace, text)


def referenced_config(container: Obj) -> tuple[set[str], set[str]]:
    """The ConfigMap names and Secret names ``env``/``envFrom`` of ``container`` read."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for source in container.get("envFrom") or []:
        if source.get("configMapRef"):
            config_maps.add(source["configMapRef"].get("name", ""))
        if source.get("secretRef"):
            secrets.add(source["secretRef"].get("name", ""))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if value_from.get("configMapKeyRef"):
            config_maps.add(value_from["configMapKeyRef"].get("name", ""))
        if value_from.get("secretKeyRef"):
            secrets.add(value_from["secretKeyRef"].get("name", ""))
    return config_maps, secrets


def config_map_data(config_map: Obj) -> dict[str, str]:
    return dict(config_map.get("data") or {})


def secret_data(secret: Obj) -> dict[str, str]:
    """A Secret's values decoded (data is base64; stringData is plain, when a server keeps it)."""
    values = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def pod_field(pod: Obj, path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath`` of ``pod``."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.hostIPs": ",".join(i.get("ip", "") for i in status.get("hostIPs") or []),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(i.get("ip", "") for i in status.get("podIPs") or []),
    }
    if path in simple:
        return simple[path]
    match = _FIELD_LABEL.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ContainerConfigError(f"unsupported fieldPath {path!r}")


def _container_named(pod: Obj, name: str) -> Obj:
    spec = pod.get("spec") or {}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if container.get("name") == name:
            return container
    raise ContainerConfigError(f"resourceFieldRef names an unknown container {name!r}")


def resource_field(
    pod: Obj, container: Obj, ref: Obj, node_allocatable: Mapping[str, str]
) -> str:
    """A ``resourceFieldRef`` value: limits default to the node's allocatable, CPU rounds up."""
    if ref.get("containerName"):
        container = _container_named(pod, ref["containerName"])
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise ContainerConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = node_allocatable.get(name, "0") if kind == "limits" else "0"
    value = parse_quantity(raw)
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        raise ContainerConfigError("resourceFieldRef divisor must not be zero")
    return str(math.ceil(value / divisor))


def kubernetes_service_env(host: str, port: int) -> dict[str, str]:
    """The variables every container gets for the ``kubernetes`` Service (as docker links name them)."""
    if not host:
        return {}
    url = f"tcp://{host}:{port}"
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": url,
        f"KUBERNETES_PORT_{port}_TCP": url,
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def service_link_env(service: Obj) -> dict[str, str]:
    """The docker-link style variables of one Service (``<NAME>_SERVICE_HOST``, ``<NAME>_PORT``...);
    none for headless Services or ones without a ClusterIP."""
    spec = service.get("spec") or {}
    host = spec.get("clusterIP") or ""
    ports = spec.get("ports") or []
    if not host or host == "None" or not ports:
        return {}
    prefix = (service.get("metadata") or {}).get("name", "").upper().replace("-", "_")
    first = ports[0]
    env = {f"{prefix}_SERVICE_HOST": host, f"{prefix}_SERVICE_PORT": str(first.get("port", ""))}
    for port in ports:
        if port.get("name"):
            env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port.get("port", ""))
    env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{host}:{first.get('port', '')}"
    for port in ports:
        protocol = port.get("protocol", "TCP")
        base = f"{prefix}_PORT_{port.get('port', '')}_{protocol.upper()}"
        env[base] = f"{protocol.lower()}://{host}:{port.get('port', '')}"
        env[f"{base}_PROTO"] = protocol.lower()
        env[f"{base}_PORT"] = str(port.get("port", ""))
        env[f"{base}_ADDR"] = host
    return env


def pod_service_env(pod: Obj, services: list[Obj]) -> dict[str, str]:
    """Service variables a container of ``pod`` starts with: the ``kubernetes`` Service of the
    default namespace always, and (unless ``enableServiceLinks`` is false) every Service of the
    pod's namespace."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    links = (pod.get("spec") or {}).get("enableServiceLinks", True) is not False
    env: dict[str, str] = {}
    for service in sorted(services, key=lambda s: (s.get("metadata") or {}).get("name", "")):
        meta = service.get("metadata") or {}
        is_master = meta.get("namespace") == "default" and meta.get("name") == "kubernetes"
        if is_master or (links and meta.get("namespace") == namespace):
            env.update(service_link_env(service))
    return env


def container_env(
    pod: Obj,
    container: Obj,
    *,
    config_maps: Mapping[str, Obj | None],
    secrets: Mapping[str, Obj | None],
    service_env: Mapping[str, str] | None = None,
    node_allocatable: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's final environment; see the module docstring for the order."""
    env: dict[str, str] = dict(service_env or {})
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if source.get("configMapRef"):
            ref = source["configMapRef"]
            found = config_maps.get(ref.get("name", ""))
            if found is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'configmap "{ref.get("name", "")}" not found')
            values = config_map_data(found)
        elif source.get("secretRef"):
            ref = source["secretRef"]
            found = secrets.get(ref.get("name", ""))
            if found is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'secret "{ref.get("name", "")}" not found')
            values = secret_data(found)
        else:
            continue
        for key, value in values.items():
            env[prefix + key] = value
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        value_from = var["valueFrom"] or {}
        value: str | None
        if value_from.get("fieldRef"):
            value = pod_field(pod, value_from["fieldRef"].get("fieldPath", ""))
        elif value_from.get("resourceFieldRef"):
            value = resource_field(pod, container, value_from["resourceFieldRef"], node_allocatable or {})
        elif value_from.get("configMapKeyRef"):
            value = _keyed(value_from["configMapKeyRef"], config_maps, "configmap", config_map_data, namespace)
        elif value_from.get("secretKeyRef"):
            value = _keyed(value_from["secretKeyRef"], secrets, "secret", secret_data, namespace)
        else:
            value = ""
        if value is not None:
            env[name] = value
    return env


def _keyed(ref: Obj, objects: Mapping[str, Obj | None], what: str, decode: Any, namespace: str) -> str | None:
    """A ``configMapKeyRef``/``secretKeyRef`` value; None when it is optional and missing. The
    errors read as the kubelet's (``secret "x" not found``, ``couldn't find key k in Secret ns/x``)."""
    name, key = ref.get("name", ""), ref.get("key", "")
    found = objects.get(name)
    if found is None:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(f'{what} "{name}" not found')
    values = decode(found)
    if key not in values:
        if ref.get("optional"):
            return None
        kind = "ConfigMap" if what == "configmap" else "Secret"
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return values[key]


def command_and_args(container: Obj, env: Mapping[str, str]) -> tuple[list[str] | None, list[str] | None]:
    """``command`` and ``args`` with ``$(VAR)`` expanded (None where the spec leaves the image's)."""
    command = container.get("command")
    args = container.get("args")
    return (
        [expand(str(c), env) for c in command] if command else None,
        [expand(str(a), env) for a in args] if args is not None else None,
    )


def _requests_limits(container: Obj) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    resources = container.get("resources") or {}
    limits = {k: parse_quantity(v) for k, v in (resources.get("limits") or {}).items()}
    requests = {k: parse_quantity(v) for k, v in (resources.get("requests") or {}).items()}
    for name, value in limits.items():
        requests.setdefault(name, value)  # a limit alone implies an equal request
    return requests, limits


def qos_class(pod: Obj) -> str:
    """Guaranteed, Burstable or BestEffort, from cpu/memory requests and limits of all containers."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    any_set = False
    guaranteed = True
    for container in containers:
        requests, limits = _requests_limits(container)
        for name in ("cpu", "memory"):
            if requests.get(name) or limits.get(name):
                any_set = True
            if name not in limits or requests.get(name) != limits.get(name):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def runtime_resources(container: Obj) -> Resources:
    """cgroup settings: shares from the CPU request, CFS quota from the CPU limit, memory limit."""
    requests, limits = _requests_limits(container)
    resources = Resources()
    cpu_request = requests.get("cpu")
    if cpu_request is not None:
        resources.cpu_shares = max(2, min(262144, int(cpu_request * 1024)))
    else:
        resources.cpu_shares = 2  # BestEffort CPU, as the kubelet sets it
    cpu_limit = limits.get("cpu")
    if cpu_limit:
        resources.cpu_quota = max(1000, int(cpu_limit * resources.cpu_period))
    memory_limit = limits.get("memory")
    if memory_limit:
        resources.memory_limit = int(memory_limit)
    return resources


# The kubelet's cgroup layout below the runtime's parent: Guaranteed pods directly in "kubepods",
# the others in a group per QoS class, each pod in a group "pod<uid>" holding its containers.
KUBEPODS = "kubepods"
QOS_GROUPS = {"Guaranteed": KUBEPODS, "Burstable": f"{KUBEPODS}/burstable", "BestEffort": f"{KUBEPODS}/besteffort"}
GUARANTEED_OOM_SCORE_ADJ = -997
BEST_EFFORT_OOM_SCORE_ADJ = 1000


def qos_group_resources(qos: str, pods: Sequence[Obj] = ()) -> Resources:
    """The QoS class group's own settings: BestEffort pods share the minimum CPU weight; the
    Burstable group weighs what its running ``pods`` (the node's, any class) request together,
    so under contention it gets its share next to the Guaranteed pods beside it."""
    if qos == "BestEffort":
        return Resources(cpu_shares=2)
    if qos == "Burstable":
        requested = sum(
            (_effective(p, 0)[0].get("cpu", Decimal(0)) for p in pods
             if qos_class(p) == "Burstable" and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")),
            Decimal(0),
        )
        return Resources(cpu_shares=max(2, min(262144, int(requested * 1024))))
    return Resources()


def pod_cgroup_path(pod: Obj) -> str:
    """The pod's group, relative to the runtime's cgroup parent: ``kubepods/burstable/pod<uid>``."""
    return f"{QOS_GROUPS[qos_class(pod)]}/pod{(pod.get('metadata') or {}).get('uid', '')}"


def pod_cgroup_paths_of_uid(uid: str) -> list[str]:
    """Every place a pod's group may be (to clean up after a pod the API no longer has)."""
    return [f"{group}/pod{uid}" for group in QOS_GROUPS.values()]


def _effective(pod: Obj, kind: int) -> tuple[dict[str, Decimal], set[str]]:
    """The pod's effective requests (kind 0) or limits (kind 1): per resource the larger of the
    sum over its containers and the largest init container (they run one at a time, first);
    and the resources every container sets (a pod-wide limit needs them all)."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    inits = spec.get("initContainers") or []
    total: dict[str, Decimal] = {}
    everywhere: set[str] | None = None
    for container in containers:
        values = _requests_limits(container)[kind]
        for name, value in values.items():
            total[name] = total.get(name, Decimal(0)) + value
        everywhere = set(values) if everywhere is None else everywhere & set(values)
    for container in inits:
        values = _requests_limits(container)[kind]
        for name, value in values.items():
            total[name] = max(total.get(name, Decimal(0)), value)
        everywhere = set(values) if everywhere is None else everywhere & set(values)
    return total, everywhere or set()


def pod_cgroup_resources(pod: Obj) -> Resources:
    """The pod group's limits: CPU shares from the pod's CPU requests; a CFS quota and a memory
    limit only when every container has that limit (else the pod is not bounded there)."""
    requests, _ = _effective(pod, 0)
    limits, limited = _effective(pod, 1)
    resources = Resources(cpu_shares=max(2, min(262144, int(requests.get("cpu", Decimal(0)) * 1024))))
    if "cpu" in limited and limits.get("cpu"):
        resources.cpu_quota = max(1000, int(limits["cpu"] * resources.cpu_period))
    if "memory" in limited and limits.get("memory"):
        resources.memory_limit = int(limits["memory"])
    return resources


def oom_score_adj(pod: Obj, container: Obj, memory_capacity: int) -> int:
    """The kernel's OOM preference for the container, by QoS class as the kubelet sets it:
    Guaranteed -997, BestEffort 1000, Burstable between (the larger its memory request's share
    of the node, the safer), kept within 3..999 so it ranks between the other two."""
    qos = qos_class(pod)
    if qos == "Guaranteed":
        return GUARANTEED_OOM_SCORE_ADJ
    if qos == "BestEffort" or memory_capacity <= 0:
        return BEST_EFFORT_OOM_SCORE_ADJ
    request = _requests_limits(container)[0].get("memory", Decimal(0))
    score = 1000 - int(1000 * request / memory_capacity)
    return max(1000 + GUARANTEED_OOM_SCORE_ADJ, min(BEST_EFFORT_OOM_SCORE_ADJ - 1, score))


SECCOMP_PROFILE_TYPES = ("RuntimeDefault", "Unconfined", "Localhost")


def seccomp_profile(pod: Obj, container: Obj, *, seccomp_default: bool, profile_root: str) -> SecurityProfile:
    """The seccomp profile the runtime applies to ``container`` (see the module docstring).

    A Localhost ``localhostProfile`` names a file relative to ``profile_root`` (the kubelet's
    ``<data dir>/seccomp``); one that would leave it (absolute, or with ``..``) is refused, as
    the API server refuses it too.
    """
    security = container.get("securityContext") or {}
    if security.get("privileged"):
        return SecurityProfile("Unconfined")
    field = security.get("seccompProfile") or ((pod.get("spec") or {}).get("securityContext") or {}).get("seccompProfile")
    if not field:
        return SecurityProfile("RuntimeDefault" if seccomp_default else "Unconfined")
    kind = field.get("type")
    if kind not in SECCOMP_PROFILE_TYPES:
        raise ContainerConfigError(f"unsupported seccomp profile type {kind!r}")
    if kind != "Localhost":
        return SecurityProfile(kind)
    name = str(field.get("localhostProfile") or "")
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts:
        raise ContainerConfigError(
            f"invalid seccomp localhostProfile {name!r}: must be a relative path below the kubelet's seccomp dir"
        )
    return SecurityProfile("Localhost", f"{profile_root.rstrip('/')}/{name}")


def active_deadline_left(pod: Obj, start_time: str, now: float) -> float | None:
    """Seconds until the pod's ``activeDeadlineSeconds`` runs out, counted from its startTime
    (RFC 3339) at epoch time ``now`` (negative once it has); None without a deadline."""
    deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
    if not deadline:
        return None
    return parse_rfc3339(start_time).timestamp() + float(deadline) - now
