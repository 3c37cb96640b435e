"""Table columns and row cells, as a real API server prints each built-in kind.

`kubectl get` asks for a `meta.k8s.io/v1 Table`; the server decides the columns. Upstream's
printers (pkg/printers/internalversion) define, per kind, the column definitions and how each
cell is computed from the object; this module reproduces them for the kinds k3py serves, from
the versioned JSON objects k3py stores. The server always prints the wide (priority 1) cells
too — kubectl hides them unless `-o wide`.

Cells keep the JSON types upstream puts there (int for integer columns that upstream fills
with numbers, bool for booleans, str otherwise), because kubectl formats each cell by its
Go type. Kinds without a printer (CRDs, unknown kinds) get NAME and AGE; custom resources
whose CRD declares additionalPrinterColumns get NAME plus those, each cell found by the
column's (simple) JSONPath and typed as the column says — upstream's CRD table convertor.

Every cell function tolerates missing fields: objects straight from a client may lack
defaults, and a printer must never fail a `get`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from k3py.api.jsonpath import JSONPathError, jsonpath_values
from k3py.api.resources import ResourceInfo

Cells = list[Any]
Printer = Callable[[dict, datetime], Cells]

NONE = "<none>"
UNSET = "<unset>"
UNKNOWN = "<unknown>"


# --- time -----------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """Upstream's duration.HumanDuration: "45s", "5m12s", "3h20m", "3d4h", "2y10d"."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 (Time or MicroTime) timestamp, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def since(value: Any, now: datetime) -> str:
    """Upstream's translateTimestampSince: age of a timestamp, "<unknown>" when unset."""
    t = parse_time(value)
    if t is None:
        return UNKNOWN
    return human_duration((now - t).total_seconds())


def created_at(obj: dict) -> str:
    """The "Created At" cell: creationTimestamp in RFC 3339, UTC."""
    t = parse_time(_get(obj, "metadata", "creationTimestamp"))
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else UNKNOWN


# --- helpers --------------------------------------------------------------------------------


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
        if obj is None:
            return default
    return obj


def _name(obj: dict) -> str:
    return str(_get(obj, "metadata", "name", default=""))


def _age(obj: dict, now: datetime) -> str:
    return since(_get(obj, "metadata", "creationTimestamp"), now)


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: "k=v,k2=v2" sorted by key, "<none>" when empty."""
    items = sorted(_dict(labels).items())
    return ",".join(f"{k}={v}" for k, v in items) if items else NONE


def selector_string(selector: Any) -> str:
    """A metav1.LabelSelector as labels.Selector.String(): requirements sorted by key."""
    sel = _dict(selector)
    reqs: list[tuple[str, str]] = []
    for key, value in _dict(sel.get("matchLabels")).items():
        reqs.append((key, f"{key}={value}"))
    for expr in _list(sel.get("matchExpressions")):
        key = str(_get(expr, "key", default=""))
        op = _get(expr, "operator", default="")
        values = sorted(str(v) for v in _list(_get(expr, "values")))
        if op == "In":
            reqs.append((key, f"{key} in ({','.join(values)})"))
        elif op == "NotIn":
            reqs.append((key, f"{key} notin ({','.join(values)})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, f"!{key}"))
    return ",".join(text for _key, text in sorted(reqs, key=lambda r: r[0]))


def format_label_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: the selector string, "<none>" when it selects everything."""
    return selector_string(selector) or NONE


def _containers_cells(pod_spec: Any) -> Cells:
    containers = _list(_get(pod_spec, "containers"))
    names = ",".join(str(_get(c, "name", default="")) for c in containers)
    images = ",".join(str(_get(c, "image", default="")) for c in containers)
    return [names, images]


def _template_spec(obj: dict) -> Any:
    return _get(obj, "spec", "template", "spec")


def _lb_ingress(status_lb: Any) -> str:
    """loadBalancerStatusStringer (wide): ingress IPs or hostnames, comma-separated."""
    out: list[str] = []
    for ing in _list(_get(status_lb, "ingress")):
        if _get(ing, "ip"):
            out.append(str(ing["ip"]))
        elif _get(ing, "hostname"):
            out.append(str(ing["hostname"]))
    return ",".join(out)


def _quantity(value: Any) -> str:
    """A stored quantity as Quantity.String() would print it (empty quantity is "0")."""
    if value is None or value == "":
        return "0"
    return str(value)


def _access_modes(modes: Any) -> str:
    order = (
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    )
    present = set(_list(modes))
    return ",".join(short for mode, short in order if mode in present)


def _bool_ptr(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return UNSET


def _has_condition(obj: dict, cond_type: str) -> bool:
    return any(
        _get(c, "type") == cond_type and _get(c, "status") == "True"
        for c in _list(_get(obj, "status", "conditions"))
    )


# --- column definitions ---------------------------------------------------------------------


def _col(name: str, typ: str = "string", desc: str = "", priority: int = 0, fmt: str = "") -> dict:
    return {"name": name, "type": typ, "format": fmt, "description": desc, "priority": priority}


NAME_COL = _col("Name", fmt="name", desc="Name of the object, unique within its namespace.")
AGE_COL = _col("Age", desc="Time since the object was created (creationTimestamp).")
CREATED_AT_COL = _col("Created At", "date", "The time the object was created, RFC 3339.")
CONTAINERS_COL = _col("Containers", desc="Names of each container in the template.", priority=1)
IMAGES_COL = _col("Images", desc="Images referenced by each container in the template.", priority=1)
SELECTOR_COL = _col("Selector", desc="The label selector of the object.", priority=1)


# --- printers -------------------------------------------------------------------------------


def _pod_cells(pod: dict, now: datetime) -> Cells:
    spec = _dict(pod.get("spec"))
    status = _dict(pod.get("status"))
    containers = _list(spec.get("containers"))
    init_specs = {str(_get(c, "name")): c for c in _list(spec.get("initContainers"))}

    def restartable(name: Any) -> bool:
        return _get(init_specs.get(str(name)), "restartPolicy") == "Always"

    total = len(containers) + sum(1 for c in init_specs.values() if restartable(c.get("name")))
    ready = 0
    restarts = 0
    sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for cond in _list(status.get("conditions")):
        if _get(cond, "type") == "PodScheduled" and _get(cond, "reason") == "SchedulingGated":
            reason = "SchedulingGated"

    def later(a: datetime | None, b: Any) -> datetime | None:
        t = parse_time(b)
        if t is None:
            return a
        return t if a is None or t > a else a

    init_statuses = _list(status.get("initContainerStatuses"))
    initializing = False
    for i, cs in enumerate(init_statuses):
        name = _get(cs, "name")
        restarts += _int(_get(cs, "restartCount"))
        finished = _get(cs, "lastState", "terminated", "finishedAt")
        last_restart = later(last_restart, finished)
        if restartable(name):
            sidecar_restarts += _int(_get(cs, "restartCount"))
            last_sidecar_restart = later(last_sidecar_restart, finished)
        terminated = _get(cs, "state", "terminated")
        waiting = _get(cs, "state", "waiting")
        if terminated is not None and _int(terminated.get("exitCode")) == 0:
            continue
        if restartable(name) and _get(cs, "started") is True:
            if _get(cs, "ready") is True:
                ready += 1
            continue
        if terminated is not None:
            if terminated.get("reason"):
                reason = f"Init:{terminated['reason']}"
            elif _int(terminated.get("signal")):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{_int(terminated.get('exitCode'))}"
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _has_condition(pod, "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for cs in reversed(_list(status.get("containerStatuses"))):
            restarts += _int(_get(cs, "restartCount"))
            last_restart = later(last_restart, _get(cs, "lastState", "terminated", "finishedAt"))
            waiting = _get(cs, "state", "waiting")
            terminated = _get(cs, "state", "terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                if _int(terminated.get("signal")):
                    reason = f"Signal:{terminated['signal']}"
                else:
                    reason = f"ExitCode:{_int(terminated.get('exitCode'))}"
            elif _get(cs, "ready") is True and _get(cs, "state", "running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _has_condition(pod, "Ready") else "NotReady"

    deleting = _get(pod, "metadata", "deletionTimestamp") is not None
    if deleting and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"

    pod_ips = _list(status.get("podIPs"))
    # podIPs[0] is podIP when both are set; a client may have set only podIP
    pod_ip = str(_get(pod_ips[0], "ip", default="")) if pod_ips else str(status.get("podIP") or "")
    gates = _list(spec.get("readinessGates"))
    gates_cell = NONE
    if gates:
        conditions = {_get(c, "type"): _get(c, "status") for c in _list(status.get("conditions"))}
        true_count = sum(1 for g in gates if conditions.get(_get(g, "conditionType")) == "True")
        gates_cell = f"{true_count}/{len(gates)}"
    return [
        _name(pod),
        f"{ready}/{total}",
        reason,
        restarts_cell,
        _age(pod, now),
        pod_ip or NONE,
        spec.get("nodeName") or NONE,
        status.get("nominatedNodeName") or NONE,
        gates_cell,
    ]


POD_COLUMNS = [
    NAME_COL,
    _col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", desc="The aggregate status of the containers in this pod."),
    _col("Restarts", desc="Container restarts, and how long ago the last one happened."),
    AGE_COL,
    _col("IP", desc="The pod's first IP address.", priority=1),
    _col("Node", desc="The node the pod is bound to.", priority=1),
    _col("Nominated Node", desc="The node the scheduler nominated for preemption.", priority=1),
    _col("Readiness Gates", desc="Readiness gates whose condition is true.", priority=1),
]


def _replicas(obj: dict) -> int:
    return _int(_get(obj, "spec", "replicas"), 1)


def _deployment_cells(obj: dict, now: datetime) -> Cells:
    status = _dict(obj.get("status"))
    return [
        _name(obj),
        f"{_int(status.get('readyReplicas'))}/{_replicas(obj)}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        _age(obj, now),
        *_containers_cells(_template_spec(obj)),
        selector_string(_get(obj, "spec", "selector")),
    ]


DEPLOYMENT_COLUMNS = [
    NAME_COL,
    _col("Ready", desc="Ready replicas out of desired replicas."),
    _col("Up-to-date", "integer", "Replicas running the latest pod template."),
    _col("Available", "integer", "Replicas available to serve (ready for minReadySeconds)."),
    AGE_COL,
    CONTAINERS_COL,
    IMAGES_COL,
    SELECTOR_COL,
]


def _replicaset_cells(obj: dict, now: datetime) -> Cells:
    status = _dict(obj.get("status"))
    selector = _get(obj, "spec", "selector")
    return [
        _name(obj),
        _replicas(obj),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _age(obj, now),
        *_containers_cells(_template_spec(obj)),
        format_label_selector(selector),
    ]


def _rc_cells(obj: dict, now: datetime) -> Cells:
    cells = _replicaset_cells(obj, now)
    cells[-1] = format_labels(_get(obj, "spec", "selector"))
    return cells


REPLICA_COLUMNS = [
    NAME_COL,
    _col("Desired", "integer", "Desired number of replicas."),
    _col("Current", "integer", "Most recently observed number of replicas."),
    _col("Ready", "integer", "Number of ready replicas."),
    AGE_COL,
    CONTAINERS_COL,
    IMAGES_COL,
    SELECTOR_COL,
]


def _statefulset_cells(obj: dict, now: datetime) -> Cells:
    ready = _int(_get(obj, "status", "readyReplicas"))
    return [
        _name(obj),
        f"{ready}/{_replicas(obj)}",
        _age(obj, now),
        *_containers_cells(_template_spec(obj)),
    ]


STATEFULSET_COLUMNS = [
    NAME_COL,
    _col("Ready", desc="Ready replicas out of desired replicas."),
    AGE_COL,
    CONTAINERS_COL,
    IMAGES_COL,
]


def _daemonset_cells(obj: dict, now: datetime) -> Cells:
    status = _dict(obj.get("status"))
    return [
        _name(obj),
        _int(status.get("desiredNumberScheduled")),
        _int(status.get("currentNumberScheduled")),
        _int(status.get("numberReady")),
        _int(status.get("updatedNumberScheduled")),
        _int(status.get("numberAvailable")),
        format_labels(_get(obj, "spec", "template", "spec", "nodeSelector")),
        _age(obj, now),
        *_containers_cells(_template_spec(obj)),
        format_label_selector(_get(obj, "spec", "selector")),
    ]


DAEMONSET_COLUMNS = [
    NAME_COL,
    _col("Desired", "integer", "Nodes that should run the daemon pod."),
    _col("Current", "integer", "Nodes running at least one daemon pod."),
    _col("Ready", "integer", "Nodes whose daemon pod is ready."),
    _col("Up-to-date", "integer", "Nodes running the updated daemon pod."),
    _col("Available", "integer", "Nodes whose daemon pod is available."),
    _col("Node Selector", desc="The node selector of the pod template."),
    AGE_COL,
    CONTAINERS_COL,
    IMAGES_COL,
    SELECTOR_COL,
]


def _job_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    succeeded = _int(status.get("succeeded"))
    completions = spec.get("completions")
    parallelism = spec.get("parallelism")
    if isinstance(completions, int):
        completions_cell = f"{succeeded}/{completions}"
    elif isinstance(parallelism, int) and parallelism > 1:
        completions_cell = f"{succeeded}/1 of {parallelism}"
    else:
        completions_cell = f"{succeeded}/1"
    start = parse_time(status.get("startTime"))
    end = parse_time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = human_duration(((end or now) - start).total_seconds())
    if _has_condition(obj, "Complete"):
        state = "Complete"
    elif _has_condition(obj, "Failed"):
        state = "Failed"
    elif _get(obj, "metadata", "deletionTimestamp") is not None:
        state = "Terminating"
    elif _has_condition(obj, "Suspended"):
        state = "Suspended"
    elif _has_condition(obj, "FailureTarget"):
        state = "FailureTarget"
    elif _has_condition(obj, "SuccessCriteriaMet"):
        state = "SuccessCriteriaMet"
    else:
        state = "Running"
    return [
        _name(obj),
        state,
        completions_cell,
        duration,
        _age(obj, now),
        *_containers_cells(_template_spec(obj)),
        format_label_selector(spec.get("selector")),
    ]


JOB_COLUMNS = [
    NAME_COL,
    _col("Status", desc="Status of the job."),
    _col("Completions", desc="Successful pods out of desired completions."),
    _col("Duration", desc="Time the job took (or has been running)."),
    AGE_COL,
    CONTAINERS_COL,
    IMAGES_COL,
    SELECTOR_COL,
]


def _cronjob_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    last = _get(obj, "status", "lastScheduleTime")
    job_template_spec = _get(spec, "jobTemplate", "spec")
    return [
        _name(obj),
        spec.get("schedule") or "",
        spec.get("timeZone") or NONE,
        _bool_ptr(spec.get("suspend")),
        len(_list(_get(obj, "status", "active"))),
        since(last, now) if last else NONE,
        _age(obj, now),
        *_containers_cells(_get(job_template_spec, "template", "spec")),
        format_label_selector(_get(job_template_spec, "selector")),
    ]


CRONJOB_COLUMNS = [
    NAME_COL,
    _col("Schedule", desc="The schedule in cron format."),
    _col("Timezone", desc="The time zone of the schedule."),
    _col("Suspend", "boolean", "Whether subsequent runs are suspended."),
    _col("Active", "integer", "Number of running jobs."),
    _col("Last Schedule", desc="When a job was last scheduled."),
    AGE_COL,
    CONTAINERS_COL,
    IMAGES_COL,
    SELECTOR_COL,
]


def _service_external_ip(svc: dict) -> str:
    spec = _dict(svc.get("spec"))
    svc_type = spec.get("type") or "ClusterIP"
    external = [str(ip) for ip in _list(spec.get("externalIPs"))]
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else NONE
    if svc_type == "LoadBalancer":
        lb = _lb_ingress(_get(svc, "status", "loadBalancer"))
        ips = ([*lb.split(",")] if lb else []) + external
        if ips:
            return ",".join(ips)
        return "<pending>"
    if svc_type == "ExternalName":
        return str(spec.get("externalName") or "")
    return UNKNOWN


def _service_ports(ports: Any) -> str:
    pieces: list[str] = []
    for port in _list(ports):
        proto = _get(port, "protocol", default="TCP")
        node_port = _int(_get(port, "nodePort"))
        if node_port > 0:
            pieces.append(f"{_int(_get(port, 'port'))}:{node_port}/{proto}")
        else:
            pieces.append(f"{_int(_get(port, 'port'))}/{proto}")
    return ",".join(pieces) if pieces else NONE


def _service_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    return [
        _name(obj),
        spec.get("type") or "ClusterIP",
        spec.get("clusterIP") or NONE,
        _service_external_ip(obj),
        _service_ports(spec.get("ports")),
        _age(obj, now),
        format_labels(spec.get("selector")),
    ]


SERVICE_COLUMNS = [
    NAME_COL,
    _col("Type", desc="How the service is exposed."),
    _col("Cluster-IP", desc="The IP address of the service inside the cluster."),
    _col("External-IP", desc="Addresses the service is reachable on from outside."),
    _col("Port(s)", desc="The ports the service exposes."),
    AGE_COL,
    _col("Selector", desc="Pods with these labels back the service.", priority=1),
]


def _ingress_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    rules = _list(spec.get("rules"))
    hosts: list[str] = []
    more = False
    for rule in rules:
        if len(hosts) == 3:
            more = True
        if not more and _get(rule, "host"):
            hosts.append(str(rule["host"]))
    hosts_cell = ",".join(hosts) if hosts else "*"
    if more:
        hosts_cell = f"{hosts_cell} + {len(rules) - 3} more..."
    return [
        _name(obj),
        spec.get("ingressClassName") or NONE,
        hosts_cell,
        _lb_ingress(_get(obj, "status", "loadBalancer")),
        "80, 443" if _list(spec.get("tls")) else "80",
        _age(obj, now),
    ]


INGRESS_COLUMNS = [
    NAME_COL,
    _col("Class", desc="The ingress class of the ingress."),
    _col("Hosts", desc="Hosts that incoming requests are matched against."),
    _col("Address", desc="Addresses of the load balancer serving the ingress."),
    _col("Ports", desc="Ports the ingress listens on."),
    AGE_COL,
]


def _ingressclass_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    params = _dict(spec.get("parameters"))
    params_cell = NONE
    if params:
        kind = str(params.get("kind") or "")
        if params.get("apiGroup"):
            kind = f"{kind}.{params['apiGroup']}"
        params_cell = f"{kind}/{params.get('name') or ''}"
    return [_name(obj), spec.get("controller") or "", params_cell, _age(obj, now)]


INGRESSCLASS_COLUMNS = [
    NAME_COL,
    _col("Controller", desc="The controller that implements the class."),
    _col("Parameters", desc="The resource holding the class's parameters."),
    AGE_COL,
]


def _endpoints_cells(obj: dict, now: datetime) -> Cells:
    subsets = _list(obj.get("subsets"))
    if not subsets:
        return [_name(obj), NONE, _age(obj, now)]
    shown: list[str] = []
    count = 0
    limit = 3
    for subset in subsets:
        addresses = [str(_get(a, "ip", default="")) for a in _list(_get(subset, "addresses"))]
        ports = _list(_get(subset, "ports"))
        if not ports:
            count += len(addresses)
            shown.extend(addresses[: max(0, limit - len(shown))])
            continue
        for port in ports:
            count += len(addresses)
            for ip in addresses:
                if len(shown) == limit:
                    break
                host = f"[{ip}]" if ":" in ip else ip
                shown.append(f"{host}:{_int(_get(port, 'port'))}")
    cell = ",".join(shown)
    if count > limit:
        cell = f"{cell} + {count - limit} more..."
    return [_name(obj), cell, _age(obj, now)]


ENDPOINTS_COLUMNS = [NAME_COL, _col("Endpoints", desc="The addresses and ports of the endpoints."), AGE_COL]


def _endpointslice_cells(obj: dict, now: datetime) -> Cells:
    ports = [
        str(_get(p, "port")) if _get(p, "port") is not None else UNSET
        for p in _list(obj.get("ports"))
    ]
    addresses: list[str] = []
    for endpoint in _list(obj.get("endpoints")):
        addresses.extend(str(a) for a in _list(_get(endpoint, "addresses")))
    endpoints_cell = ",".join(addresses[:3]) if addresses else UNSET
    if len(addresses) > 3:
        endpoints_cell = f"{endpoints_cell} + {len(addresses) - 3} more..."
    return [
        _name(obj),
        obj.get("addressType") or "",
        ",".join(ports) if ports else UNSET,
        endpoints_cell,
        _age(obj, now),
    ]


ENDPOINTSLICE_COLUMNS = [
    NAME_COL,
    _col("AddressType", desc="The type of the addresses in the slice."),
    _col("Ports", desc="The ports of the slice."),
    _col("Endpoints", desc="The addresses of the slice's endpoints."),
    AGE_COL,
]


def _node_roles(labels: dict) -> str:
    roles: set[str] = set()
    for key, value in labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key.removeprefix("node-role.kubernetes.io/")
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    return ",".join(sorted(roles)) if roles else NONE


def _node_address(node: dict, kind: str) -> str:
    for addr in _list(_get(node, "status", "addresses")):
        if _get(addr, "type") == kind:
            return str(_get(addr, "address", default=""))
    return NONE


def _node_cells(obj: dict, now: datetime) -> Cells:
    states: list[str] = []
    for cond in _list(_get(obj, "status", "conditions")):
        if _get(cond, "type") == "Ready":
            states = ["Ready" if _get(cond, "status") == "True" else "NotReady"]
            break
    if not states:
        states = ["Unknown"]
    if _get(obj, "spec", "unschedulable") is True:
        states.append("SchedulingDisabled")
    info = _dict(_get(obj, "status", "nodeInfo"))
    return [
        _name(obj),
        ",".join(states),
        _node_roles(_dict(_get(obj, "metadata", "labels"))),
        _age(obj, now),
        info.get("kubeletVersion") or "",
        _node_address(obj, "InternalIP"),
        _node_address(obj, "ExternalIP"),
        info.get("osImage") or UNKNOWN,
        info.get("kernelVersion") or UNKNOWN,
        info.get("containerRuntimeVersion") or UNKNOWN,
    ]


NODE_COLUMNS = [
    NAME_COL,
    _col("Status", desc="The status of the node."),
    _col("Roles", desc="The roles of the node."),
    AGE_COL,
    _col("Version", desc="The kubelet version of the node."),
    _col("Internal-IP", desc="The node's internal address.", priority=1),
    _col("External-IP", desc="The node's external address.", priority=1),
    _col("OS-Image", desc="The operating system image of the node.", priority=1),
    _col("Kernel-Version", desc="The kernel version of the node.", priority=1),
    _col("Container-Runtime", desc="The container runtime of the node.", priority=1),
]


def _event_cells(obj: dict, now: datetime) -> Cells:
    """Core/v1 and events.k8s.io/v1 Events print alike (upstream converts both to one type)."""
    new_api = "regarding" in obj or "note" in obj or obj.get("apiVersion") == "events.k8s.io/v1"
    if new_api:
        involved = _dict(obj.get("regarding"))
        message = obj.get("note") or ""
        first, last = obj.get("deprecatedFirstTimestamp"), obj.get("deprecatedLastTimestamp")
        count = _int(obj.get("deprecatedCount"))
        source = _dict(obj.get("deprecatedSource"))
    else:
        involved = _dict(obj.get("involvedObject"))
        message = obj.get("message") or ""
        first, last = obj.get("firstTimestamp"), obj.get("lastTimestamp")
        count = _int(obj.get("count"))
        source = _dict(obj.get("source"))
    first_cell = since(first, now) if first else since(obj.get("eventTime"), now)
    last_cell = since(last, now) if last else first_cell
    series = obj.get("series")
    if isinstance(series, dict):
        last_cell = since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    # core/v1 calls the reporting controller "reportingComponent"
    reporter = obj.get("reportingController") if new_api else obj.get("reportingComponent")
    component = source.get("component") or reporter or ""
    instance = source.get("host") or obj.get("reportingInstance") or ""
    return [
        last_cell,
        obj.get("type") or "",
        obj.get("reason") or "",
        target,
        involved.get("fieldPath") or "",
        f"{component}, {instance}" if instance else component,
        str(message).strip(),
        first_cell,
        count,
        _name(obj),
    ]


EVENT_COLUMNS = [
    _col("Last Seen", desc="When the event was last observed."),
    _col("Type", desc="Type of the event (Normal, Warning)."),
    _col("Reason", desc="Why the action was taken, in CamelCase."),
    _col("Object", desc="The object the event is about."),
    _col("Subobject", desc="The part of the object the event is about.", priority=1),
    _col("Source", desc="The component that reported the event.", priority=1),
    _col("Message", desc="A human-readable description of the event."),
    _col("First Seen", desc="When the event was first observed.", priority=1),
    _col("Count", desc="How many times the event was observed.", priority=1),
    {**NAME_COL, "priority": 1},
]


def _namespace_cells(obj: dict, now: datetime) -> Cells:
    return [_name(obj), _get(obj, "status", "phase", default=""), _age(obj, now)]


NAMESPACE_COLUMNS = [NAME_COL, _col("Status", desc="The status of the namespace."), AGE_COL]


def _secret_cells(obj: dict, now: datetime) -> Cells:
    return [
        _name(obj),
        obj.get("type") or "Opaque",
        len(_dict(obj.get("data"))),
        _age(obj, now),
    ]


SECRET_COLUMNS = [
    NAME_COL,
    _col("Type", desc="The type of the secret."),
    _col("Data", "integer", "Number of items in the secret."),
    AGE_COL,
]


def _configmap_cells(obj: dict, now: datetime) -> Cells:
    count = len(_dict(obj.get("data"))) + len(_dict(obj.get("binaryData")))
    return [_name(obj), count, _age(obj, now)]


CONFIGMAP_COLUMNS = [NAME_COL, _col("Data", "integer", "Number of items in the config map."), AGE_COL]


def _serviceaccount_cells(obj: dict, now: datetime) -> Cells:
    return [_name(obj), len(_list(obj.get("secrets"))), _age(obj, now)]


SERVICEACCOUNT_COLUMNS = [
    NAME_COL,
    _col("Secrets", "integer", "Number of secrets listed in the service account."),
    AGE_COL,
]


def _storage_class_of(obj: dict) -> str:
    annotations = _dict(_get(obj, "metadata", "annotations"))
    beta = annotations.get("volume.beta.kubernetes.io/storage-class")
    if beta is not None:
        return str(beta)
    return str(_get(obj, "spec", "storageClassName", default=""))


def _pv_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    claim = _dict(spec.get("claimRef"))
    claim_cell = f"{claim.get('namespace') or ''}/{claim.get('name') or ''}" if claim else ""
    phase = _get(obj, "status", "phase", default="")
    if _get(obj, "metadata", "deletionTimestamp") is not None:
        phase = "Terminating"
    return [
        _name(obj),
        _quantity(_get(spec, "capacity", "storage")),
        _access_modes(spec.get("accessModes")),
        spec.get("persistentVolumeReclaimPolicy") or "",
        phase,
        claim_cell,
        _storage_class_of(obj),
        spec.get("volumeAttributesClassName") or UNSET,
        _get(obj, "status", "reason", default=""),
        _age(obj, now),
        spec.get("volumeMode") or UNSET,
    ]


PV_COLUMNS = [
    NAME_COL,
    _col("Capacity", desc="The capacity of the volume."),
    _col("Access Modes", desc="The ways the volume can be mounted."),
    _col("Reclaim Policy", desc="What happens to the volume when its claim is released."),
    _col("Status", desc="The phase of the volume."),
    _col("Claim", desc="The claim bound to the volume."),
    _col("StorageClass", desc="The storage class of the volume."),
    _col("VolumeAttributesClass", desc="The volume attributes class of the volume."),
    _col("Reason", desc="Why the volume is in its phase."),
    AGE_COL,
    _col("VolumeMode", desc="Whether the volume is a filesystem or a block device.", priority=1),
]


def _pvc_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    phase = status.get("phase") or ""
    if _get(obj, "metadata", "deletionTimestamp") is not None:
        phase = "Terminating"
    capacity = ""
    modes = ""
    if spec.get("volumeName"):
        modes = _access_modes(status.get("accessModes"))
        capacity = _quantity(_get(status, "capacity", "storage"))
    return [
        _name(obj),
        phase,
        spec.get("volumeName") or "",
        capacity,
        modes,
        _storage_class_of(obj),
        spec.get("volumeAttributesClassName") or UNSET,
        _age(obj, now),
        spec.get("volumeMode") or UNSET,
    ]


PVC_COLUMNS = [
    NAME_COL,
    _col("Status", desc="The phase of the claim."),
    _col("Volume", desc="The volume bound to the claim."),
    _col("Capacity", desc="The capacity of the bound volume."),
    _col("Access Modes", desc="The ways the volume can be mounted."),
    _col("StorageClass", desc="The storage class of the claim."),
    _col("VolumeAttributesClass", desc="The volume attributes class of the claim."),
    AGE_COL,
    _col("VolumeMode", desc="Whether the volume is a filesystem or a block device.", priority=1),
]


def _componentstatus_cells(obj: dict, now: datetime) -> Cells:
    state, message, error = "Unknown", "", ""
    for cond in _list(obj.get("conditions")):
        if _get(cond, "type") == "Healthy":
            state = "Healthy" if _get(cond, "status") == "True" else "Unhealthy"
            message = _get(cond, "message", default="")
            error = _get(cond, "error", default="")
            break
    return [_name(obj), state, message, error]


COMPONENTSTATUS_COLUMNS = [
    NAME_COL,
    _col("Status", desc="Whether the component is healthy."),
    _col("Message", desc="What the component's health check said."),
    _col("Error", desc="The error of the component's health check."),
]


def _name_created_cells(obj: dict, now: datetime) -> Cells:
    return [_name(obj), created_at(obj)]


NAME_CREATED_COLUMNS = [NAME_COL, CREATED_AT_COL]


def _resourcequota_cells(obj: dict, now: datetime) -> Cells:
    hard = _dict(_get(obj, "status", "hard"))
    used = _dict(_get(obj, "status", "used"))
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        target = limits if resource.split(".")[0] == "limits" and "." in resource else requests
        target.append(f"{resource}: {_quantity(used.get(resource))}/{_quantity(hard[resource])}")
    return [_name(obj), _age(obj, now), ", ".join(requests), ", ".join(limits)]


RESOURCEQUOTA_COLUMNS = [
    NAME_COL,
    AGE_COL,
    _col("Request", desc="Used and hard quota of requests."),
    _col("Limit", desc="Used and hard quota of limits."),
]


def _podtemplate_cells(obj: dict, now: datetime) -> Cells:
    template = _dict(obj.get("template"))
    return [
        _name(obj),
        *_containers_cells(template.get("spec")),
        format_labels(_get(template, "metadata", "labels")),
    ]


PODTEMPLATE_COLUMNS = [
    NAME_COL,
    _col("Containers", desc="Names of each container in the template."),
    _col("Images", desc="Images referenced by each container in the template."),
    _col("Pod Labels", desc="The labels of the pod template."),
]


def _networkpolicy_cells(obj: dict, now: datetime) -> Cells:
    return [_name(obj), format_label_selector(_get(obj, "spec", "podSelector")), _age(obj, now)]


NETWORKPOLICY_COLUMNS = [
    NAME_COL,
    _col("Pod-Selector", desc="The pods the policy applies to."),
    AGE_COL,
]


def _binding_cells(obj: dict, now: datetime) -> Cells:
    ref = _dict(obj.get("roleRef"))
    users: list[str] = []
    groups: list[str] = []
    accounts: list[str] = []
    for subject in _list(obj.get("subjects")):
        kind = _get(subject, "kind")
        name = str(_get(subject, "name", default=""))
        if kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
        elif kind == "ServiceAccount":
            accounts.append(f"{_get(subject, 'namespace', default='')}/{name}")
    return [
        _name(obj),
        f"{ref.get('kind') or ''}/{ref.get('name') or ''}",
        _age(obj, now),
        ", ".join(users),
        ", ".join(groups),
        ", ".join(accounts),
    ]


BINDING_COLUMNS = [
    NAME_COL,
    _col("Role", desc="The role the binding grants."),
    AGE_COL,
    _col("Users", desc="Users the binding applies to.", priority=1),
    _col("Groups", desc="Groups the binding applies to.", priority=1),
    _col("ServiceAccounts", desc="Service accounts the binding applies to.", priority=1),
]


def _storageclass_cells(obj: dict, now: datetime) -> Cells:
    annotations = _dict(_get(obj, "metadata", "annotations"))
    name = _name(obj)
    if "true" in (
        annotations.get("storageclass.kubernetes.io/is-default-class"),
        annotations.get("storageclass.beta.kubernetes.io/is-default-class"),
    ):
        name += " (default)"
    expansion = obj.get("allowVolumeExpansion")
    return [
        name,
        obj.get("provisioner") or "",
        obj.get("reclaimPolicy") or "Delete",
        obj.get("volumeBindingMode") or "Immediate",
        expansion if isinstance(expansion, bool) else False,
        _age(obj, now),
    ]


STORAGECLASS_COLUMNS = [
    NAME_COL,
    _col("Provisioner", desc="The provisioner of the storage class."),
    _col("ReclaimPolicy", desc="What happens to released volumes."),
    _col("VolumeBindingMode", desc="When volumes are bound to claims."),
    _col("AllowVolumeExpansion", desc="Whether volumes can be expanded."),
    AGE_COL,
]


def _csidriver_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    audiences = [str(_get(t, "audience", default="")) for t in _list(spec.get("tokenRequests"))]
    modes = [str(m) for m in _list(spec.get("volumeLifecycleModes"))]

    def flag(name: str, default: bool) -> bool:
        value = spec.get(name)
        return value if isinstance(value, bool) else default

    return [
        _name(obj),
        flag("attachRequired", True),
        flag("podInfoOnMount", False),
        flag("storageCapacity", False),
        ",".join(audiences) if audiences else UNSET,
        flag("requiresRepublish", False),
        ",".join(modes) if modes else NONE,
        _age(obj, now),
    ]


CSIDRIVER_COLUMNS = [
    NAME_COL,
    _col("AttachRequired", "boolean", "Whether the driver needs an attach operation."),
    _col("PodInfoOnMount", "boolean", "Whether the driver receives pod information on mount."),
    _col("StorageCapacity", "boolean", "Whether the driver reports storage capacity."),
    _col("TokenRequests", desc="Audiences of the service account tokens the driver gets."),
    _col("RequiresRepublish", "boolean", "Whether the driver wants periodic NodePublishVolume."),
    _col("Modes", desc="The volume lifecycle modes the driver supports."),
    AGE_COL,
]


def _csinode_cells(obj: dict, now: datetime) -> Cells:
    return [_name(obj), len(_list(_get(obj, "spec", "drivers"))), _age(obj, now)]


CSINODE_COLUMNS = [NAME_COL, _col("Drivers", "integer", "Number of CSI drivers on the node."), AGE_COL]


def _csistoragecapacity_cells(obj: dict, now: datetime) -> Cells:
    capacity = obj.get("capacity")
    return [
        _name(obj),
        obj.get("storageClassName") or "",
        str(capacity) if capacity not in (None, "") else UNSET,
        _age(obj, now),
    ]


CSISTORAGECAPACITY_COLUMNS = [
    NAME_COL,
    _col("StorageClassName", desc="The storage class the capacity is for."),
    _col("Capacity", desc="The available capacity."),
    AGE_COL,
]


def _volumeattachment_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    attached = _get(obj, "status", "attached")
    return [
        _name(obj),
        spec.get("attacher") or "",
        _get(spec, "source", "persistentVolumeName", default=""),
        spec.get("nodeName") or "",
        attached if isinstance(attached, bool) else False,
        _age(obj, now),
    ]


VOLUMEATTACHMENT_COLUMNS = [
    NAME_COL,
    _col("Attacher", desc="The driver that attaches the volume."),
    _col("PV", desc="The persistent volume being attached."),
    _col("Node", desc="The node the volume is attached to."),
    _col("Attached", "boolean", "Whether the volume is attached."),
    AGE_COL,
]


def _priorityclass_cells(obj: dict, now: datetime) -> Cells:
    default = obj.get("globalDefault")
    return [
        _name(obj),
        _int(obj.get("value")),
        default if isinstance(default, bool) else False,
        _age(obj, now),
        obj.get("preemptionPolicy") or "",
    ]


PRIORITYCLASS_COLUMNS = [
    NAME_COL,
    _col("Value", "integer", "The priority of pods of this class."),
    _col("Global-Default", "boolean", "Whether this class is the default for pods without one."),
    AGE_COL,
    _col("PreemptionPolicy", desc="Whether pods of this class preempt lower-priority pods."),
]


def _lease_cells(obj: dict, now: datetime) -> Cells:
    return [_name(obj), _get(obj, "spec", "holderIdentity", default=""), _age(obj, now)]


LEASE_COLUMNS = [NAME_COL, _col("Holder", desc="The holder of the lease."), AGE_COL]


def _pdb_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    min_available = spec.get("minAvailable")
    max_unavailable = spec.get("maxUnavailable")
    return [
        _name(obj),
        str(min_available) if min_available is not None else "N/A",
        str(max_unavailable) if max_unavailable is not None else "N/A",
        _int(_get(obj, "status", "disruptionsAllowed")),
        _age(obj, now),
    ]


PDB_COLUMNS = [
    NAME_COL,
    _col("Min Available", desc="The minimum number of pods that must be available."),
    _col("Max Unavailable", desc="The maximum number of pods that may be unavailable."),
    _col("Allowed Disruptions", "integer", "How many pods may be disrupted now."),
    AGE_COL,
]


def _controllerrevision_cells(obj: dict, now: datetime) -> Cells:
    controller = NONE
    for ref in _list(_get(obj, "metadata", "ownerReferences")):
        if _get(ref, "controller") is True:
            api_version = str(_get(ref, "apiVersion", default=""))
            group = api_version.split("/")[0] if "/" in api_version else ""
            kind = str(_get(ref, "kind", default="")).lower()
            kind = f"{kind}.{group}" if group else kind
            controller = f"{kind}/{_get(ref, 'name', default='')}"
            break
    return [_name(obj), controller, _int(obj.get("revision")), _age(obj, now)]


CONTROLLERREVISION_COLUMNS = [
    NAME_COL,
    _col("Controller", desc="The controller that owns the revision."),
    _col("Revision", "integer", "The revision number."),
    AGE_COL,
]


def _metric_cell(spec: dict, status: dict | None) -> str:
    kind = spec.get("type")
    if kind in ("External", "Object", "Pods"):
        key = {"External": "external", "Object": "object", "Pods": "pods"}[kind]
        target = _dict(_get(spec, key, "target"))
        current = _dict(_get(status, key, "current")) if status else {}
        if kind == "Pods" or "averageValue" in target:
            cur = current.get("averageValue") if status and _get(status, key) else None
            suffix = "" if kind == "Pods" else " (avg)"
            return f"{cur if cur is not None else UNKNOWN}/{target.get('averageValue')}{suffix}"
        cur = current.get("value") if status and _get(status, key) else None
        return f"{cur if cur is not None else UNKNOWN}/{target.get('value')}"
    if kind in ("Resource", "ContainerResource"):
        key = "resource" if kind == "Resource" else "containerResource"
        source = _dict(spec.get(key))
        target = _dict(source.get("target"))
        current = _dict(_get(status, key, "current")) if status else {}
        name = source.get("name") or ""
        if "averageValue" in target:
            cur = current.get("averageValue", UNKNOWN) if current else UNKNOWN
            return f"{name}: {cur}/{target['averageValue']}"
        util = current.get("averageUtilization")
        cur = f"{util}%" if isinstance(util, int) else UNKNOWN
        want = target.get("averageUtilization")
        return f"{name}: {cur}/{f'{want}%' if isinstance(want, int) else '<auto>'}"
    return "<unknown type>"


def _hpa_cells(obj: dict, now: datetime) -> Cells:
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    metrics = _list(spec.get("metrics"))
    statuses = _list(status.get("currentMetrics"))
    if "targetCPUUtilizationPercentage" in spec or obj.get("apiVersion") == "autoscaling/v1":
        # autoscaling/v1 carries one CPU target; print it the way the v2 form prints.
        target = spec.get("targetCPUUtilizationPercentage")
        metrics = [{"type": "Resource", "resource": {"name": "cpu", "target": (
            {"type": "Utilization", "averageUtilization": target} if target is not None else {}
        )}}]
        current = status.get("currentCPUUtilizationPercentage")
        statuses = (
            [{"type": "Resource", "resource": {"current": {"averageUtilization": current}}}]
            if current is not None else []
        )
    cells = [
        _metric_cell(_dict(m), _dict(statuses[i]) if i < len(statuses) else None)
        for i, m in enumerate(metrics)
    ]
    targets = ", ".join(cells[:2]) if cells else NONE
    if len(cells) > 2:
        targets = f"{targets} + {len(cells) - 2} more..."
    ref = _dict(spec.get("scaleTargetRef"))
    min_replicas = spec.get("minReplicas")
    return [
        _name(obj),
        f"{ref.get('kind') or ''}/{ref.get('name') or ''}",
        targets,
        min_replicas if isinstance(min_replicas, int) else UNSET,
        _int(spec.get("maxReplicas")),
        _int(status.get("currentReplicas")),
        _age(obj, now),
    ]


HPA_COLUMNS = [
    NAME_COL,
    _col("Reference", desc="The object the autoscaler scales."),
    _col("Targets", desc="Current and target values of the autoscaler's metrics."),
    _col("MinPods", desc="The lower replica limit."),
    _col("MaxPods", "integer", "The upper replica limit."),
    _col("Replicas", "integer", "The current number of replicas."),
    AGE_COL,
]


def _scale_cells(obj: dict, now: datetime) -> Cells:
    return [
        _name(obj),
        _int(_get(obj, "spec", "replicas")),
        _int(_get(obj, "status", "replicas")),
        _age(obj, now),
    ]


# `kubectl get --subresource=scale`: the Scale object's own columns.
SCALE_COLUMNS = [
    NAME_COL,
    _col("Desired", "integer", "Desired number of replicas."),
    _col("Available", "integer", "Observed number of replicas."),
    AGE_COL,
]


def _name_age_cells(obj: dict, now: datetime) -> Cells:
    return [_name(obj), _age(obj, now)]


NAME_AGE_COLUMNS = [NAME_COL, AGE_COL]


# (group, kind) → (columns, cells). Versions of one group share a printer, as upstream's
# printers work on the internal (version-independent) type.
PRINTERS: dict[tuple[str, str], tuple[list[dict], Printer]] = {
    ("", "Pod"): (POD_COLUMNS, _pod_cells),
    ("", "PodTemplate"): (PODTEMPLATE_COLUMNS, _podtemplate_cells),
    ("", "ReplicationController"): (REPLICA_COLUMNS, _rc_cells),
    ("", "Service"): (SERVICE_COLUMNS, _service_cells),
    ("", "Endpoints"): (ENDPOINTS_COLUMNS, _endpoints_cells),
    ("", "Node"): (NODE_COLUMNS, _node_cells),
    ("", "Event"): (EVENT_COLUMNS, _event_cells),
    ("", "Namespace"): (NAMESPACE_COLUMNS, _namespace_cells),
    ("", "Secret"): (SECRET_COLUMNS, _secret_cells),
    ("", "ConfigMap"): (CONFIGMAP_COLUMNS, _configmap_cells),
    ("", "ServiceAccount"): (SERVICEACCOUNT_COLUMNS, _serviceaccount_cells),
    ("", "PersistentVolume"): (PV_COLUMNS, _pv_cells),
    ("", "PersistentVolumeClaim"): (PVC_COLUMNS, _pvc_cells),
    ("", "ComponentStatus"): (COMPONENTSTATUS_COLUMNS, _componentstatus_cells),
    ("", "LimitRange"): (NAME_CREATED_COLUMNS, _name_created_cells),
    ("", "ResourceQuota"): (RESOURCEQUOTA_COLUMNS, _resourcequota_cells),
    ("apps", "Deployment"): (DEPLOYMENT_COLUMNS, _deployment_cells),
    ("apps", "ReplicaSet"): (REPLICA_COLUMNS, _replicaset_cells),
    ("apps", "StatefulSet"): (STATEFULSET_COLUMNS, _statefulset_cells),
    ("apps", "DaemonSet"): (DAEMONSET_COLUMNS, _daemonset_cells),
    ("apps", "ControllerRevision"): (CONTROLLERREVISION_COLUMNS, _controllerrevision_cells),
    ("batch", "Job"): (JOB_COLUMNS, _job_cells),
    ("batch", "CronJob"): (CRONJOB_COLUMNS, _cronjob_cells),
    ("autoscaling", "HorizontalPodAutoscaler"): (HPA_COLUMNS, _hpa_cells),
    ("autoscaling", "Scale"): (SCALE_COLUMNS, _scale_cells),
    ("events.k8s.io", "Event"): (EVENT_COLUMNS, _event_cells),
    ("networking.k8s.io", "Ingress"): (INGRESS_COLUMNS, _ingress_cells),
    ("networking.k8s.io", "IngressClass"): (INGRESSCLASS_COLUMNS, _ingressclass_cells),
    ("networking.k8s.io", "NetworkPolicy"): (NETWORKPOLICY_COLUMNS, _networkpolicy_cells),
    ("policy", "PodDisruptionBudget"): (PDB_COLUMNS, _pdb_cells),
    ("rbac.authorization.k8s.io", "Role"): (NAME_CREATED_COLUMNS, _name_created_cells),
    ("rbac.authorization.k8s.io", "ClusterRole"): (NAME_CREATED_COLUMNS, _name_created_cells),
    ("rbac.authorization.k8s.io", "RoleBinding"): (BINDING_COLUMNS, _binding_cells),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): (BINDING_COLUMNS, _binding_cells),
    ("storage.k8s.io", "StorageClass"): (STORAGECLASS_COLUMNS, _storageclass_cells),
    ("storage.k8s.io", "CSIDriver"): (CSIDRIVER_COLUMNS, _csidriver_cells),
    ("storage.k8s.io", "CSINode"): (CSINODE_COLUMNS, _csinode_cells),
    ("storage.k8s.io", "CSIStorageCapacity"): (CSISTORAGECAPACITY_COLUMNS, _csistoragecapacity_cells),
    ("storage.k8s.io", "VolumeAttachment"): (VOLUMEATTACHMENT_COLUMNS, _volumeattachment_cells),
    ("scheduling.k8s.io", "PriorityClass"): (PRIORITYCLASS_COLUMNS, _priorityclass_cells),
    ("coordination.k8s.io", "Lease"): (LEASE_COLUMNS, _lease_cells),
    ("discovery.k8s.io", "EndpointSlice"): (ENDPOINTSLICE_COLUMNS, _endpointslice_cells),
    # Upstream's CRD storage has no printer: its default table is NAME and CREATED AT.
    ("apiextensions.k8s.io", "CustomResourceDefinition"): (
        NAME_CREATED_COLUMNS,
        _name_created_cells,
    ),
}


# --- custom resources: additionalPrinterColumns ----------------------------------------------


def custom_table_columns(printer_columns: list[dict]) -> list[dict]:
    """Columns of a custom resource with additionalPrinterColumns: NAME, then those columns."""
    columns = [dict(NAME_COL)]
    for col in printer_columns:
        desc = col.get("description") or (
            f"Custom resource definition column (in JSONPath format): {col.get('jsonPath', '')}"
        )
        columns.append(_col(str(col.get("name", "")), str(col.get("type") or "string"), desc,
                            int(col.get("priority") or 0), str(col.get("format") or "")))
    return columns


def _custom_cell(col: dict, obj: dict, now: datetime) -> Any:
    try:
        values = jsonpath_values(obj, str(col.get("jsonPath", "")))
    except JSONPathError:
        return None
    if not values or values[0] is None:
        return None
    value = values[0]
    kind = col.get("type") or "string"
    if kind == "date":
        if not isinstance(value, str):
            return None
        return since(value, now) if parse_time(value) else "<invalid>"
    if kind == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"))
    except (RecursionError, TypeError, ValueError):
        return None


def custom_row_cells(printer_columns: list[dict], obj: dict, now: datetime) -> list:
    """Cells of a custom resource's row for `custom_table_columns(printer_columns)`."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    obj = obj if isinstance(obj, dict) else {}
    return [_name(obj), *(_custom_cell(col, obj, now) for col in printer_columns)]


def table_columns(info: ResourceInfo) -> list[dict]:
    """The column definitions of `info`'s Table: [{name, type, format, description, priority}]."""
    columns, _cells = PRINTERS.get((info.group, info.kind), (NAME_AGE_COLUMNS, _name_age_cells))
    return [dict(c) for c in columns]


def table_row_cells(info: ResourceInfo, obj: dict, now: datetime) -> list:
    """The cells of `obj`'s row, one per column of `table_columns(info)`; `now` is aware UTC."""
    _columns, cells = PRINTERS.get((info.group, info.kind), (NAME_AGE_COLUMNS, _name_age_cells))
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return cells(obj if isinstance(obj, dict) else {}, now)
