"""Defaulting: fill in the fields Kubernetes fills in when an object is created or updated.

`apply_defaults(info, obj)` mutates `obj` in place the way an upstream API server would before
validation: the versioned defaulters of `pkg/apis/<group>/v1/defaults.go` (restartPolicy,
dnsPolicy, imagePullPolicy from the image tag, probe timings, Deployment strategy 25%/25%, Job
completions/parallelism/backoffLimit, Service ports and traffic policies, ...) plus the few
always-on admission plugins and registry strategies whose effect users see on every object
(Pods get `serviceAccountName: default`, `priority: 0`, the not-ready/unreachable tolerations;
Namespaces get `spec.finalizers: [kubernetes]` and `status.phase: Active`).

Only things that need no cluster state live here: allocating a Service clusterIP or nodePort,
generating a Job's controller-uid selector before the object has a UID, or mounting the
service-account token volume are the API server's job.

Conventions: a field is "unset" when it is missing, None or (for strings) "" — that is how an
object decoded from JSON or protobuf presents a Go zero value. Nested dicts are created as
needed; lists and values the user set are never replaced.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from k3py.api.proto.structure import check_structure
from k3py.api.quantity import canonical_quantity, parse_quantity

if TYPE_CHECKING:
    from k3py.api.resources import ResourceInfo

Obj = dict[str, Any]

DEFAULT_MODE = 0o644  # 420: what secret/configMap/downwardAPI/projected volumes default to
DEFAULT_TOLERATION_SECONDS = 300


def _unset(obj: Obj, key: str) -> bool:
    value = obj.get(key)
    return value is None or value == ""


def _default(obj: Obj, key: str, value: Any) -> None:
    if _unset(obj, key):
        obj[key] = value


def _child(obj: Obj, key: str) -> Obj:
    """obj[key] as a dict, created (or replacing a null) when missing."""
    value = obj.get(key)
    if not isinstance(value, dict):
        value = {}
        obj[key] = value
    return value


def _canonical_quantities(values: Any) -> None:
    """Rewrite a ResourceList's quantities the way the API server stores them ("0.5" → "500m").

    Values that do not parse are left alone for validation to report.
    """
    if not isinstance(values, dict):
        return
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            continue
        try:
            values[name] = canonical_quantity(value)
        except ValueError:
            pass


def _dicts(value: Any) -> list[Obj]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# ------------------------------------------------------------------------------ pods


def image_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image, IfNotPresent for a tag or a digest."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def _default_handler(handler: Obj) -> None:
    http_get = handler.get("httpGet")
    if isinstance(http_get, dict):
        _default(http_get, "path", "/")
        _default(http_get, "scheme", "HTTP")


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        if not probe.get(key):
            probe[key] = value
    _default_handler(probe)
    grpc = probe.get("grpc")
    if isinstance(grpc, dict) and grpc.get("service") is None:
        grpc["service"] = ""


def _default_env(container: Obj) -> None:
    for env in _dicts(container.get("env")):
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            _default(field_ref, "apiVersion", "v1")


def _default_container(container: Obj, host_network: bool) -> None:
    image = container.get("image")
    if isinstance(image, str) and image:
        _default(container, "imagePullPolicy", image_pull_policy(image))
    _default(container, "terminationMessagePath", "/dev/termination-log")
    _default(container, "terminationMessagePolicy", "File")
    if not isinstance(container.get("resources"), dict):
        container["resources"] = {}
    _canonical_quantities(container["resources"].get("limits"))
    _canonical_quantities(container["resources"].get("requests"))
    for port in _dicts(container.get("ports")):
        _default(port, "protocol", "TCP")
        if host_network and not port.get("hostPort"):
            port["hostPort"] = port.get("containerPort")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(container.get(probe))
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in _dicts([lifecycle.get("postStart"), lifecycle.get("preStop")]):
            _default_handler(hook)
    _default_env(container)


_VOLUME_SOURCES = (
    "hostPath emptyDir gcePersistentDisk awsElasticBlockStore gitRepo secret nfs iscsi glusterfs "
    "persistentVolumeClaim rbd flexVolume cinder cephfs flocker downwardAPI fc azureFile configMap "
    "vsphereVolume quobyte azureDisk photonPersistentDisk projected portworxVolume scaleIO "
    "storageos csi ephemeral image"
).split()


def _default_volume(volume: Obj) -> None:
    if not any(volume.get(source) is not None for source in _VOLUME_SOURCES):
        volume["emptyDir"] = {}
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        spec = volume.get(source)
        if isinstance(spec, dict) and spec.get("defaultMode") is None:
            spec["defaultMode"] = DEFAULT_MODE
    host_path = volume.get("hostPath")
    if isinstance(host_path, dict) and host_path.get("type") is None:
        host_path["type"] = ""
    downward = volume.get("downwardAPI")
    if isinstance(downward, dict):
        for item in _dicts(downward.get("items")):
            if isinstance(item.get("fieldRef"), dict):
                _default(item["fieldRef"], "apiVersion", "v1")
    projected = volume.get("projected")
    if isinstance(projected, dict):
        for source in _dicts(projected.get("sources")):
            token = source.get("serviceAccountToken")
            if isinstance(token, dict) and token.get("expirationSeconds") is None:
                token["expirationSeconds"] = 3600
            for item in _dicts((source.get("downwardAPI") or {}).get("items")):
                if isinstance(item.get("fieldRef"), dict):
                    _default(item["fieldRef"], "apiVersion", "v1")


def default_pod_spec(spec: Obj) -> None:
    """Defaults of a PodSpec, shared by Pods and every pod template."""
    _default(spec, "restartPolicy", "Always")
    _default(spec, "dnsPolicy", "ClusterFirst")
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    if not isinstance(spec.get("securityContext"), dict):
        spec["securityContext"] = {}
    _default(spec, "schedulerName", "default-scheduler")
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    host_network = bool(spec.get("hostNetwork"))
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in _dicts(spec.get(key)):
            _default_container(container, host_network)
    for volume in _dicts(spec.get("volumes")):
        _default_volume(volume)


def default_pod_template(template: Any) -> None:
    if isinstance(template, dict):
        default_pod_spec(_child(template, "spec"))


def _default_pod(obj: Obj) -> None:
    spec = _child(obj, "spec")
    default_pod_spec(spec)
    # A container with limits but no requests requests what it is limited to.
    for key in ("initContainers", "containers"):
        for container in _dicts(spec.get(key)):
            resources = container.get("resources") or {}
            limits = resources.get("limits")
            if isinstance(limits, dict) and limits:
                requests = resources.setdefault("requests", {})
                for name, value in limits.items():
                    requests.setdefault(name, value)
    # Always-on admission: ServiceAccount, Priority, DefaultTolerationSeconds.
    _default(spec, "serviceAccountName", spec.get("serviceAccount") or "default")
    _default(spec, "serviceAccount", spec["serviceAccountName"])
    if spec.get("priority") is None:
        spec["priority"] = 0
    _default(spec, "preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.get("tolerations")
    if not isinstance(tolerations, list):
        tolerations = []
    for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(
            isinstance(t, dict)
            and t.get("key") == taint
            and t.get("effect") in ("NoExecute", None, "")
            for t in tolerations
        ):
            tolerations.append(
                {
                    "key": taint,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
                }
            )
    spec["tolerations"] = tolerations
    # The registry records the QoS class at creation; `kubectl describe` shows it.
    status = obj.get("status")
    if isinstance(status, dict) and not status.get("qosClass"):
        status["qosClass"] = pod_qos_class(obj)


def pod_qos_class(pod: Obj) -> str:
    """Guaranteed, Burstable or BestEffort, from the cpu/memory requests and limits of all
    containers (init containers included), as upstream's GetPodQOS."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for key in ("initContainers", "containers"):
        for container in _dicts(spec.get(key)):
            resources = (
                container.get("resources") if isinstance(container.get("resources"), dict) else {}
            )
            for part, sums in (("requests", requests), ("limits", limits)):
                found = set()
                values = resources.get(part) if isinstance(resources.get(part), dict) else {}
                for name in ("cpu", "memory"):
                    if name not in values:
                        continue
                    try:
                        quantity = parse_quantity(values[name])
                    except ValueError:
                        continue
                    if quantity > 0:
                        found.add(name)
                        sums[name] = sums.get(name, Decimal(0)) + quantity
                if part == "limits" and found != {"cpu", "memory"}:
                    guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests.keys() == limits.keys():
        if all(limits[name] == value for name, value in requests.items()):
            return "Guaranteed"
    return "Burstable"


# ------------------------------------------------------------------------------ workloads


def _spec(obj: Obj) -> Obj:
    return _child(obj, "spec")


def _default_deployment(obj: Obj) -> None:
    spec = _spec(obj)
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    strategy = _child(spec, "strategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        _default(rolling, "maxUnavailable", "25%")
        _default(rolling, "maxSurge", "25%")
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    if spec.get("progressDeadlineSeconds") is None:
        spec["progressDeadlineSeconds"] = 600
    default_pod_template(spec.get("template"))


def _default_replicaset(obj: Obj) -> None:
    spec = _spec(obj)
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    default_pod_template(spec.get("template"))


def _default_replication_controller(obj: Obj) -> None:
    spec = _spec(obj)
    template = spec.get("template")
    template_labels = ((template or {}).get("metadata") or {}).get("labels") or {}
    if template_labels:
        if not spec.get("selector"):
            spec["selector"] = dict(template_labels)
        meta = _child(obj, "metadata")
        if not meta.get("labels"):
            meta["labels"] = dict(template_labels)
    _default_replicaset(obj)


def _default_pvc_spec(spec: Obj) -> None:
    _default(spec, "volumeMode", "Filesystem")
    resources = spec.get("resources")
    if isinstance(resources, dict):
        _canonical_quantities(resources.get("requests"))
        _canonical_quantities(resources.get("limits"))


def _default_statefulset(obj: Obj) -> None:
    spec = _spec(obj)
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    _default(spec, "podManagementPolicy", "OrderedReady")
    strategy = _child(spec, "updateStrategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        if rolling.get("partition") is None:
            rolling["partition"] = 0
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    retention = _child(spec, "persistentVolumeClaimRetentionPolicy")
    _default(retention, "whenDeleted", "Retain")
    _default(retention, "whenScaled", "Retain")
    for claim in _dicts(spec.get("volumeClaimTemplates")):
        claim.setdefault("apiVersion", "v1")
        claim.setdefault("kind", "PersistentVolumeClaim")
        _default_pvc_spec(_child(claim, "spec"))
        _child(claim, "status").setdefault("phase", "Pending")
    default_pod_template(spec.get("template"))


def _default_daemonset(obj: Obj) -> None:
    spec = _spec(obj)
    strategy = _child(spec, "updateStrategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        if rolling.get("maxUnavailable") in (None, ""):
            rolling["maxUnavailable"] = 1
        if rolling.get("maxSurge") in (None, ""):
            rolling["maxSurge"] = 0
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    default_pod_template(spec.get("template"))


def _default_job_spec(spec: Obj) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    _default(spec, "completionMode", "NonIndexed")
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("podReplacementPolicy") is None:
        failed_only = spec.get("podFailurePolicy") is not None
        spec["podReplacementPolicy"] = "Failed" if failed_only else "TerminatingOrFailed"
    default_pod_template(spec.get("template"))


def job_generated_labels(name: str, uid: str) -> dict[str, str]:
    """The labels a Job's pods carry and its generated selector matches (manualSelector unset)."""
    return {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    }


def _default_job(obj: Obj) -> None:
    spec = _spec(obj)
    _default_job_spec(spec)
    meta = _child(obj, "metadata")
    uid = meta.get("uid")
    if uid and not spec.get("manualSelector") and not spec.get("selector"):
        spec["manualSelector"] = False
        generated = job_generated_labels(str(meta.get("name", "")), str(uid))
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_meta = _child(_child(spec, "template"), "metadata")
        labels = _child(template_meta, "labels")
        for key, value in generated.items():
            labels.setdefault(key, value)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not meta.get("labels") and template_labels:
        meta["labels"] = dict(template_labels)


def _default_cronjob(obj: Obj) -> None:
    spec = _spec(obj)
    _default(spec, "concurrencyPolicy", "Allow")
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("successfulJobsHistoryLimit") is None:
        spec["successfulJobsHistoryLimit"] = 3
    if spec.get("failedJobsHistoryLimit") is None:
        spec["failedJobsHistoryLimit"] = 1
    job_template = _child(spec, "jobTemplate")
    default_pod_template(_child(job_template, "spec").get("template"))


# ------------------------------------------------------------------------------ core


def _default_service(obj: Obj) -> None:
    spec = _spec(obj)
    _default(spec, "type", "ClusterIP")
    _default(spec, "sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        client_ip = _child(_child(spec, "sessionAffinityConfig"), "clientIP")
        if client_ip.get("timeoutSeconds") is None:
            client_ip["timeoutSeconds"] = 10800
    service_type = spec["type"]
    for port in _dicts(spec.get("ports")):
        _default(port, "protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    if service_type in ("NodePort", "LoadBalancer"):
        _default(spec, "externalTrafficPolicy", "Cluster")
    if service_type == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    if service_type != "ExternalName":
        _default(spec, "internalTrafficPolicy", "Cluster")
        _default(spec, "ipFamilyPolicy", "SingleStack")
        if not spec.get("ipFamilies"):
            spec["ipFamilies"] = ["IPv4"]
    _child(obj, "status").setdefault("loadBalancer", {})


def _default_secret(obj: Obj) -> None:
    _default(obj, "type", "Opaque")
    # stringData is write-only: upstream's conversion folds it into data (winning over data).
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = _child(obj, "data")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode("ascii")


def _default_namespace(obj: Obj) -> None:
    meta = _child(obj, "metadata")
    name = meta.get("name")
    if name:
        _child(meta, "labels")["kubernetes.io/metadata.name"] = name
    # No spec.finalizers here: upstream's namespace strategy adds "kubernetes" on create only
    # (strategies.prepare_for_create). Defaulting runs on every write, and putting it back on
    # the /finalize call or a later update would keep a deleted namespace forever.
    _default(_child(obj, "status"), "phase", "Active")


def _default_pvc(obj: Obj) -> None:
    _default_pvc_spec(_spec(obj))
    _default(_child(obj, "status"), "phase", "Pending")


def _default_pv(obj: Obj) -> None:
    spec = _spec(obj)
    _canonical_quantities(spec.get("capacity"))
    _default(spec, "persistentVolumeReclaimPolicy", "Retain")
    _default(spec, "volumeMode", "Filesystem")
    _default(_child(obj, "status"), "phase", "Pending")


def _default_node(obj: Obj) -> None:
    status = obj.get("status")
    if isinstance(status, dict):
        _canonical_quantities(status.get("capacity"))
        _canonical_quantities(status.get("allocatable"))
    if isinstance(status, dict) and status.get("capacity") and not status.get("allocatable"):
        status["allocatable"] = dict(status["capacity"])


def _default_endpoints(obj: Obj) -> None:
    for subset in _dicts(obj.get("subsets")):
        for port in _dicts(subset.get("ports")):
            _default(port, "protocol", "TCP")


def _default_endpointslice(obj: Obj) -> None:
    for port in _dicts(obj.get("ports")):
        _default(port, "protocol", "TCP")
        if port.get("name") is None:
            port["name"] = ""


def _default_pod_template_object(obj: Obj) -> None:
    default_pod_template(obj.get("template"))


def _default_limit_range(obj: Obj) -> None:
    # Container limits: a missing default limit is the max, a missing default request is the
    # default limit, else the min — as upstream's LimitRangeItem defaulting.
    for item in _dicts(_spec(obj).get("limits")):
        for part in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            _canonical_quantities(item.get(part))
        if item.get("type") != "Container":
            continue
        default = _child(item, "default")
        for name, value in (item.get("max") or {}).items():
            default.setdefault(name, value)
        request = _child(item, "defaultRequest")
        for name, value in default.items():
            request.setdefault(name, value)
        for name, value in (item.get("min") or {}).items():
            request.setdefault(name, value)


# ------------------------------------------------------------------------------ other groups


def _default_binding_subjects(obj: Obj) -> None:
    for subject in _dicts(obj.get("subjects")):
        if subject.get("apiGroup") is None or subject.get("apiGroup") == "":
            if subject.get("kind") in ("User", "Group"):
                subject["apiGroup"] = "rbac.authorization.k8s.io"
            elif subject.get("kind") == "ServiceAccount":
                subject["apiGroup"] = ""


def _default_network_policy(obj: Obj) -> None:
    spec = _spec(obj)
    for rules in ("ingress", "egress"):
        for rule in _dicts(spec.get(rules)):
            for port in _dicts(rule.get("ports")):
                _default(port, "protocol", "TCP")
    if not spec.get("policyTypes"):
        types = ["Ingress"]
        if spec.get("egress"):
            types.append("Egress")
        spec["policyTypes"] = types


def _default_hpa(obj: Obj) -> None:
    spec = _spec(obj)
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1


def _default_priority_class(obj: Obj) -> None:
    _default(obj, "preemptionPolicy", "PreemptLowerPriority")


def _default_storage_class(obj: Obj) -> None:
    _default(obj, "reclaimPolicy", "Delete")
    _default(obj, "volumeBindingMode", "Immediate")


def _default_resource_quota(obj: Obj) -> None:
    _canonical_quantities(_spec(obj).get("hard"))


_DEFAULTERS: dict[tuple[str, str], Callable[[Obj], None]] = {
    ("", "Pod"): _default_pod,
    ("", "PodTemplate"): _default_pod_template_object,
    ("", "ReplicationController"): _default_replication_controller,
    ("", "Service"): _default_service,
    ("", "Secret"): _default_secret,
    ("", "Namespace"): _default_namespace,
    ("", "PersistentVolumeClaim"): _default_pvc,
    ("", "PersistentVolume"): _default_pv,
    ("", "Node"): _default_node,
    ("", "Endpoints"): _default_endpoints,
    ("", "LimitRange"): _default_limit_range,
    ("", "ResourceQuota"): _default_resource_quota,
    ("apps", "Deployment"): _default_deployment,
    ("apps", "ReplicaSet"): _default_replicaset,
    ("apps", "StatefulSet"): _default_statefulset,
    ("apps", "DaemonSet"): _default_daemonset,
    ("batch", "Job"): _default_job,
    ("batch", "CronJob"): _default_cronjob,
    ("discovery.k8s.io", "EndpointSlice"): _default_endpointslice,
    ("networking.k8s.io", "NetworkPolicy"): _default_network_policy,
    ("autoscaling", "HorizontalPodAutoscaler"): _default_hpa,
    ("scheduling.k8s.io", "PriorityClass"): _default_priority_class,
    ("storage.k8s.io", "StorageClass"): _default_storage_class,
    ("rbac.authorization.k8s.io", "RoleBinding"): _default_binding_subjects,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _default_binding_subjects,
}


def apply_defaults(info: ResourceInfo, obj: Obj, *, structure_checked: bool = False) -> None:
    """Fill in Kubernetes' defaults for `obj` (of the kind `info` describes), in place.

    An object with values of the wrong JSON type is left alone: validation reports those.
    `structure_checked` says the caller already found none (saves walking the object twice).
    """
    if not isinstance(obj, dict):
        return
    defaulter = _DEFAULTERS.get((info.group, info.kind))
    if defaulter is None:
        return
    api_version = f"{info.group}/{info.version}" if info.group else info.version
    if not structure_checked and check_structure(api_version, info.kind, obj).type_causes:
        return
    defaulter(obj)
