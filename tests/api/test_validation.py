"""Validation: the causes an upstream API server reports, worded as kubectl users see them."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from k3py.api.defaults import apply_defaults
from k3py.api.resources import ResourceInfo, builtin_resources
from k3py.api.validation import (
    config_key_errors,
    cron_schedule_errors,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    qualified_name_errors,
    validate_name,
    validate_object,
)

TABLE = builtin_resources()


def info(api_version: str, kind: str) -> ResourceInfo:
    group, _, version = api_version.rpartition("/")
    found = TABLE.by_kind(group, version, kind)
    assert found is not None, (api_version, kind)
    return found


def causes(
    obj: dict[str, Any], old: dict[str, Any] | None = None, default: bool = True
) -> list[dict[str, Any]]:
    obj = copy.deepcopy(obj)
    i = info(obj["apiVersion"], obj["kind"])
    if default:
        apply_defaults(i, obj)
        if old is not None:
            old = copy.deepcopy(old)
            apply_defaults(i, old)
    return validate_object(i, obj, old)


def fields(found: list[dict[str, Any]]) -> list[str]:
    return [c["field"] for c in found]


def meta(name: str = "x", namespace: str | None = "default", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, **extra}
    if namespace:
        out["namespace"] = namespace
    return out


def pod(**spec: Any) -> dict[str, Any]:
    base = {"containers": [{"name": "c", "image": "nginx"}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta("p"), "spec": base}


def deployment(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
        },
    }
    base.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"), "spec": base}


def test_syntax_messages_match_upstream() -> None:
    assert dns1123_subdomain_errors("Foo") == [
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
        "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
        "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    ]
    assert dns1123_label_errors("a" * 64)[0] == "must be no more than 63 characters"
    assert qualified_name_errors("example.com/app") == []
    assert qualified_name_errors("a/b/c")[0].startswith("a qualified name must consist of")
    assert qualified_name_errors("-x")[0].startswith(
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
        "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used"
    )
    assert qualified_name_errors("Bad_Prefix/x")[0].startswith(
        "prefix part a lowercase RFC 1123 subdomain"
    )
    assert config_key_errors("..x") == ["must not start with '..'"]
    assert config_key_errors("a b")[0].startswith("a valid config key must consist of alphanumeric")


def test_names_per_kind() -> None:
    assert validate_name(info("v1", "ConfigMap"), "my.config") == []
    assert validate_name(info("v1", "Namespace"), "my.ns")[0].startswith(
        "a lowercase RFC 1123 label"
    )
    assert validate_name(info("v1", "Service"), "1abc")[0].startswith(
        "a DNS-1035 label must consist"
    )
    assert validate_name(info("rbac.authorization.k8s.io/v1", "ClusterRole"), "system:admin") == []
    assert validate_name(info("rbac.authorization.k8s.io/v1", "Role"), "a/b") == [
        "may not contain '/'"
    ]
    assert validate_name(info("batch/v1", "CronJob"), "c" * 53) == [
        "must be no more than 52 characters"
    ]


def test_metadata_causes() -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "Foo", "namespace": "default", "labels": {"ok": "bad value!"}},
    }
    found = causes(cm)
    assert found[0] == {
        "reason": "FieldValueInvalid",
        "field": "metadata.name",
        "message": 'Invalid value: "Foo": a lowercase RFC 1123 subdomain must consist of lower case '
        "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    }
    assert found[1]["field"] == "metadata.labels"
    assert found[1]["message"].startswith(
        'Invalid value: "bad value!": a valid label must be an empty string'
    )
    nameless = causes({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "d"}})
    assert nameless == [
        {
            "reason": "FieldValueRequired",
            "field": "metadata.name",
            "message": "Required value: name or generateName is required",
        }
    ]
    cluster = causes(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "x"}}
    )
    assert cluster == [
        {
            "reason": "FieldValueForbidden",
            "field": "metadata.namespace",
            "message": "Forbidden: not allowed on this type",
        }
    ]
    big = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(annotations={"a": "x" * 300_000}),
    }
    assert causes(big) == [
        {
            "reason": "FieldValueTooLong",
            "field": "metadata.annotations",
            "message": "Too long: may not be more than 262144 bytes",
        }
    ]


def test_valid_pod_and_pod_errors() -> None:
    assert causes(pod()) == []
    found = causes(
        pod(
            containers=[
                {"name": "c", "image": "nginx", "ports": [{"containerPort": 70000}]},
                {"name": "c", "image": ""},
            ],
            restartPolicy="Sometimes",
        )
    )
    by_field = {c["field"]: c["message"] for c in found}
    assert by_field["spec.containers[0].ports[0].containerPort"] == (
        "Invalid value: 70000: must be between 1 and 65535, inclusive"
    )
    assert by_field["spec.containers[1].image"] == "Required value"
    assert by_field["spec.containers[1].name"] == 'Duplicate value: "c"'
    assert by_field["spec.restartPolicy"] == (
        'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'
    )
    assert fields(causes(pod(containers=[]))) == ["spec.containers"]
    mounts = causes(
        pod(
            containers=[
                {"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/x"}]}
            ]
        )
    )
    assert mounts == [
        {
            "reason": "FieldValueNotFound",
            "field": "spec.containers[0].volumeMounts[0].name",
            "message": 'Not found: "v"',
        }
    ]
    res = causes(
        pod(
            containers=[
                {
                    "name": "c",
                    "image": "i",
                    "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
                }
            ]
        )
    )
    assert res[0]["field"] == "spec.containers[0].resources.requests[cpu]"
    assert res[0]["message"] == 'Invalid value: "2": must be less than or equal to cpu limit of 1'


def test_pod_update_only_changes_images() -> None:
    old = pod()
    old["spec"]["nodeName"] = "node1"
    apply_defaults(info("v1", "Pod"), old)  # as stored
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:1.27"
    assert causes(new, old) == []
    changed = copy.deepcopy(old)
    changed["spec"]["restartPolicy"] = "Never"
    assert fields(causes(changed, old)) == ["spec"]
    assert causes(changed, old)[0]["message"].startswith(
        "Forbidden: pod updates may not change fields"
    )
    # Binding sets nodeName on an unscheduled pod through the same validation.
    unbound = pod()
    bound = copy.deepcopy(unbound)
    bound["spec"]["nodeName"] = "node1"
    assert causes(bound, unbound) == []


def test_deployment() -> None:
    assert causes(deployment()) == []
    mismatch = causes(deployment(selector={"matchLabels": {"app": "other"}}))
    assert mismatch == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.template.metadata.labels",
            "message": 'Invalid value: {"app":"web"}: `selector` does not match template `labels`',
        }
    ]
    no_selector = deployment()
    del no_selector["spec"]["selector"]
    assert causes(no_selector)[0] == {
        "reason": "FieldValueRequired",
        "field": "spec.selector",
        "message": "Required value",
    }
    assert (
        "empty selector is invalid for deployment" in causes(deployment(selector={}))[0]["message"]
    )
    assert (
        causes(deployment(replicas=-1))[0]["message"]
        == "Invalid value: -1: must be greater than or equal to 0"
    )
    never = deployment()
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert causes(never)[0]["message"] == 'Unsupported value: "Never": supported values: "Always"'
    zero = deployment(
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}
    )
    assert causes(zero)[0]["message"] == "Invalid value: 0: may not be 0 when `maxSurge` is 0"
    old = deployment()
    moved = deployment(selector={"matchLabels": {"app": "web", "tier": "x"}})
    moved["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    found = causes(moved, old)
    assert fields(found) == ["spec.selector"] and found[0]["message"].endswith("field is immutable")


def test_job_and_cronjob() -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta("pi", uid="u1"),
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "perl"}]}}},
    }
    assert (
        causes(job)[0]["message"]
        == 'Unsupported value: "Always": supported values: "OnFailure", "Never"'
    )
    job["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert causes(job) == []
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta("tick"),
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job["spec"]}},
    }
    assert causes(cron) == []
    cron["spec"]["schedule"] = "every minute"
    assert causes(cron)[0] == {
        "reason": "FieldValueInvalid",
        "field": "spec.schedule",
        "message": 'Invalid value: "every minute": expected exactly 5 fields, found 2: [every minute]',
    }
    cron["spec"]["schedule"] = "0 3 * * *"
    cron["spec"]["timeZone"] = "Europe/Berlin"
    assert causes(cron) == []
    cron["spec"]["timeZone"] = "Mars/Olympus_Mons"
    assert causes(cron) == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.timeZone",
            "message": 'Invalid value: "Mars/Olympus_Mons": unknown time zone Mars/Olympus_Mons',
        }
    ]
    assert cron_schedule_errors("@hourly") == []
    assert cron_schedule_errors("0 0 * JAN-MAR mon-fri") == []
    assert cron_schedule_errors("60 * * * *") == [
        "end of range (60) above maximum (59) in minute field"
    ]
    assert cron_schedule_errors("TZ=UTC 0 * * * *")[0].startswith("cannot use TZ")


def test_service() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("web"),
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    assert causes(svc) == []
    no_ports = copy.deepcopy(svc)
    no_ports["spec"]["ports"] = []
    assert causes(no_ports) == [
        {"reason": "FieldValueRequired", "field": "spec.ports", "message": "Required value"}
    ]
    two = copy.deepcopy(svc)
    two["spec"]["ports"] = [{"port": 80}, {"port": 0, "name": "b", "protocol": "HTTP"}]
    by_field = {c["field"]: c["message"] for c in causes(two)}
    assert by_field["spec.ports[0].name"] == "Required value"
    assert (
        by_field["spec.ports[1].port"] == "Invalid value: 0: must be between 1 and 65535, inclusive"
    )
    assert (
        by_field["spec.ports[1].protocol"]
        == 'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'
    )
    node_port = copy.deepcopy(svc)
    node_port["spec"]["ports"][0]["nodePort"] = 30080
    assert (
        causes(node_port)[0]["message"] == "Forbidden: may not be used when `type` is 'ClusterIP'"
    )
    old = copy.deepcopy(svc)
    old["spec"]["clusterIP"] = "10.43.0.10"
    new = copy.deepcopy(svc)
    new["spec"]["clusterIP"] = "10.43.0.11"
    assert causes(new, old)[0] == {
        "reason": "FieldValueInvalid",
        "field": "spec.clusterIP",
        "message": 'Invalid value: "10.43.0.11": field is immutable',
    }
    assert causes(svc, old) == []  # omitted on update: the server keeps the allocated IP
    bad_name = copy.deepcopy(svc)
    bad_name["metadata"]["name"] = "1web"
    assert causes(bad_name)[0]["message"].startswith('Invalid value: "1web": a DNS-1035 label')


def test_configmap_and_secret() -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(),
        "data": {"ok.key": "v", "bad key": "v"},
    }
    assert fields(causes(cm)) == ["data[bad key]"]
    huge = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(),
        "data": {"a": "x" * (1024 * 1024 + 1)},
    }
    assert causes(huge) == [
        {
            "reason": "FieldValueTooLong",
            "field": "",
            "message": "Too long: may not be more than 1048576 bytes",
        }
    ]
    dup = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(),
        "data": {"a": "1"},
        "binaryData": {"a": "MQ=="},
    }
    assert causes(dup)[0]["message"] == 'Invalid value: "a": duplicate of key present in data'
    tls = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(),
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "eA=="},
    }
    assert causes(tls) == [
        {"reason": "FieldValueRequired", "field": "data[tls.key]", "message": "Required value"}
    ]
    bad64 = {"apiVersion": "v1", "kind": "Secret", "metadata": meta(), "data": {"k": "not base64!"}}
    assert fields(causes(bad64)) == ["data[k]"]
    old = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(),
        "immutable": True,
        "data": {"k": base64.b64encode(b"v1").decode()},
    }
    new = copy.deepcopy(old)
    new["data"]["k"] = base64.b64encode(b"v2").decode()
    assert causes(new, old) == [
        {
            "reason": "FieldValueForbidden",
            "field": "data",
            "message": "Forbidden: field is immutable when `immutable` is set",
        }
    ]
    retyped = copy.deepcopy(old)
    retyped["immutable"] = False
    assert "immutable" in fields(causes(retyped, old))


def test_rbac() -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta("reader"),
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": []},
            {"nonResourceURLs": ["/x"], "verbs": ["get"]},
        ],
    }
    found = causes(role)
    assert found[0] == {
        "reason": "FieldValueRequired",
        "field": "rules[0].verbs",
        "message": "Required value: verbs must contain at least one value",
    }
    assert found[1]["message"].endswith("namespaced rules cannot apply to non-resource URLs")
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": meta("b", namespace=None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "bob"}, {"kind": "Robot", "name": "r"}],
    }
    found = causes(binding)
    assert found == [
        {
            "reason": "FieldValueNotSupported",
            "field": "subjects[1].kind",
            "message": 'Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group"',
        }
    ]
    good = copy.deepcopy(binding)
    good["subjects"] = good["subjects"][:1]
    assert causes(good) == []
    changed = copy.deepcopy(good)
    changed["roleRef"]["name"] = "admin"
    assert causes(changed, good)[0]["message"].endswith("cannot change roleRef")


def _claim(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    metadata = meta("data")
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, **spec},
    }


def test_pvc_update_binding_and_late_storage_class() -> None:
    unbound = _claim(storageClassName="local-path")
    # Binding sets volumeName once; after that it is as immutable as the rest of the spec.
    bound = _claim(storageClassName="local-path", volumeName="pv-1")
    assert causes(bound, unbound) == []
    rebound = _claim(storageClassName="local-path", volumeName="pv-2")
    assert fields(causes(rebound, bound)) == ["spec"]
    # A claim without a class gets one later (retroactive default class); null is unset too.
    for no_class in (_claim(), _claim(storageClassName=None)):
        assert causes(_claim(storageClassName="local-path"), no_class) == []
        assert fields(causes(_claim(storageClassName=""), no_class)) == ["spec"]
    assert fields(causes(_claim(storageClassName="other"), unbound)) == ["spec"]
    assert causes(_claim(storageClassName=None), _claim()) == []
    # The beta annotation: its class may be copied into the field, no other class may be set,
    # and the annotation itself is immutable.
    beta = {"volume.beta.kubernetes.io/storage-class": "fast"}
    assert causes(_claim(beta, storageClassName="fast"), _claim(beta)) == []
    assert fields(causes(_claim(beta, storageClassName="slow"), _claim(beta))) == ["spec"]
    changed = causes(_claim({"volume.beta.kubernetes.io/storage-class": "slow"}), _claim(beta))
    assert fields(changed) == ["metadata.annotations[volume.beta.kubernetes.io/storage-class]"]
    assert changed[0]["message"].endswith("field is immutable")


def test_pvc_and_ingress() -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta("data"),
        "spec": {},
    }
    assert fields(causes(pvc)) == ["spec.accessModes", "spec.resources[storage]"]
    pvc["spec"] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    assert causes(pvc) == []
    ing = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta("web"),
        "spec": {
            "rules": [
                {
                    "host": "foo.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "bar",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "svc", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }
    assert causes(ing) == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.rules[0].http.paths[0].path",
            "message": 'Invalid value: "bar": must be an absolute path',
        }
    ]


@pytest.mark.parametrize("kind", ["ServiceAccount", "Endpoints", "Event"])
def test_kinds_without_specific_rules_check_metadata(kind: str) -> None:
    obj = {"apiVersion": "v1", "kind": kind, "metadata": meta("ok")}
    assert causes(obj, default=False) == []


def test_smaller_kinds() -> None:
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta("pdb"),
        "spec": {
            "minAvailable": 1,
            "maxUnavailable": "10%",
            "selector": {"matchLabels": {"a": "b"}},
        },
    }
    assert fields(causes(pdb)) == ["spec"]
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": meta("q"),
        "spec": {"hard": {"cpu": "lots"}},
    }
    assert fields(causes(quota)) == ["spec.hard[cpu]"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta("h"),
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 3,
            "maxReplicas": 2,
        },
    }
    assert (
        causes(hpa)[0]["message"]
        == "Invalid value: 2: must be greater than or equal to `minReplicas`"
    )
    pc = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": meta("high", namespace=None),
        "value": 2_000_000_000,
    }
    assert (
        causes(pc)[0]["message"]
        == "Forbidden: maximum allowed value of a user defined priority is 1000000000"
    )
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": meta("local", namespace=None),
    }
    assert fields(causes(sc)) == ["provisioner"]
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta("web-abc"),
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.42.0.5"]}],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }
    assert causes(eps) == []


def test_pod_details_users_hit() -> None:
    bad = pod(
        containers=[
            {
                "name": "c",
                "image": "nginx",
                "resources": {"limits": {"cpuu": "1", "example.com/gpu": "1"}},
                "env": [
                    {"name": "A", "valueFrom": {}},
                    {"name": "B", "value": "x", "valueFrom": {"secretKeyRef": {"key": "k"}}},
                ],
            }
        ],
        tolerations=[
            {"operator": "Equal", "value": "x"},
            {"key": "k", "operator": "Exists", "value": "v"},
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5},
        ],
        volumes=[{"name": "s", "secret": {}}],
    )
    by_field: dict[str, list[str]] = {}
    for cause in causes(bad):
        by_field.setdefault(cause["field"], []).append(cause["message"])
    assert by_field["spec.containers[0].resources.limits[cpuu]"] == [
        'Invalid value: "cpuu": must be a standard resource type or fully qualified',
        'Invalid value: "cpuu": must be a standard resource for containers',
    ]
    assert "spec.containers[0].resources.limits[example.com/gpu]" not in by_field
    assert by_field["spec.containers[0].env[0].valueFrom"] == [
        'Invalid value: "": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`'
    ]
    assert by_field["spec.containers[0].env[1].valueFrom"] == [
        'Invalid value: "": may not be specified when `value` is not empty'
    ]
    assert by_field["spec.containers[0].env[1].valueFrom.secretKeyRef.name"] == ["Required value"]
    assert by_field["spec.tolerations[0].operator"][0].startswith(
        'Invalid value: "Equal": operator must be Exists'
    )
    assert by_field["spec.tolerations[1].operator"][0].endswith(
        "value must be empty when `operator` is 'Exists'"
    )
    assert by_field["spec.tolerations[2].effect"] == [
        "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"
    ]
    assert by_field["spec.volumes[0].secret.secretName"] == ["Required value"]
    headless_np = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("np"),
        "spec": {"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]},
    }
    assert fields(causes(headless_np)) == ["spec.clusterIPs[0]"]


def test_wrong_types_are_reported_alone() -> None:
    dep = deployment(replicas="3")
    dep["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "80"}]
    dep["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "lots"}}
    found = causes(dep)
    assert {
        "reason": "FieldValueTypeInvalid",
        "field": "spec.replicas",
        "message": 'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
    } in found
    assert sorted(fields(found)) == [
        "spec.replicas",
        "spec.template.spec.containers[0].ports[0].containerPort",
        "spec.template.spec.containers[0].resources.limits[cpu]",
    ]
    assert causes({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(), "data": ["a"]}) == [
        {
            "reason": "FieldValueTypeInvalid",
            "field": "data",
            "message": 'Invalid value: "array": data in body must be of type object: "array"',
        }
    ]
    # Custom resources: only their metadata has a known shape.
    widget = TABLE.by_kind("", "v1", "ConfigMap")
    assert widget is not None
    from dataclasses import replace

    custom = replace(
        widget, group="example.com", kind="Widget", plural="widgets", singular="widget"
    )
    assert (
        validate_object(
            custom, {"metadata": {"name": "w", "namespace": "d"}, "spec": {"any": ["thing"]}}, None
        )
        == []
    )
    assert fields(
        validate_object(
            custom, {"metadata": {"name": "w", "namespace": "d", "labels": ["x"]}}, None
        )
    ) == ["metadata.labels"]


def test_validation_survives_any_shape() -> None:
    """Randomly broken objects yield causes, never exceptions (those would be 500s)."""
    import random

    junk: list[Any] = [None, 0, -1, 1.5, "x", "", True, [], {}, [1], {"a": 1}, ["a"], [{}]]
    seeds = [
        deployment(),
        pod(),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(),
            "spec": {"ports": [{"port": 80}]},
        },
    ]

    def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
        out = [prefix]
        if isinstance(obj, dict):
            for key, value in obj.items():
                out += paths(value, (*prefix, key))
        elif isinstance(obj, list):
            for i, value in enumerate(obj):
                out += paths(value, (*prefix, i))
        return out

    rnd = random.Random(3)
    for _ in range(1500):
        obj = copy.deepcopy(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 3)):
            path = rnd.choice([p for p in paths(obj) if p and p[0] not in ("apiVersion", "kind")])
            target = obj
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(rnd.choice(junk))
        old = copy.deepcopy(rnd.choice(seeds)) if rnd.random() < 0.3 else None
        causes(obj, old)


def test_node_taints_and_cidrs() -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta("n1", namespace=None),
        "spec": {
            "podCIDR": "10.42.0.0/24",
            "podCIDRs": ["10.42.0.0/24"],
            "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
        },
    }
    assert causes(node) == []
    bad = copy.deepcopy(node)
    bad["spec"]["taints"] += [
        {"key": "dedicated", "effect": "NoSchedule"},
        {"key": "x", "effect": "Sometimes"},
    ]
    found = causes(bad)
    assert [c["message"] for c in found] == [
        'Duplicate value: "dedicated:NoSchedule"',
        'Unsupported value: "Sometimes": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"',
    ]
    moved = copy.deepcopy(node)
    moved["spec"]["podCIDRs"] = ["10.42.9.0/24"]
    assert fields(causes(moved, node)) == ["spec.podCIDRs"]


def test_init_containers_and_sidecars() -> None:
    sidecar = pod(
        initContainers=[
            {
                "name": "proxy",
                "image": "envoy",
                "restartPolicy": "Always",
                "readinessProbe": {"tcpSocket": {"port": 80}},
            },
            {"name": "setup", "image": "busybox", "livenessProbe": {"exec": {"command": ["true"]}}},
            {"name": "odd", "image": "busybox", "restartPolicy": "Never"},
        ],
        containers=[{"name": "c", "image": " nginx", "restartPolicy": "Always"}],
    )
    by_field = {c["field"]: c["message"] for c in causes(sidecar)}
    assert by_field == {
        "spec.initContainers[1].livenessProbe": "Forbidden: may not be set for init containers without restartPolicy=Always",
        "spec.initContainers[2].restartPolicy": 'Unsupported value: "Never": supported values: "Always"',
        "spec.containers[0].image": 'Invalid value: " nginx": must not have leading or trailing whitespace',
        "spec.containers[0].restartPolicy": "Forbidden: may not be set for non-init containers",
    }
