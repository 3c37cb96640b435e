"""Defaulting matches what an upstream 1.32 API server fills in (values as `kubectl get -o yaml`
shows them on a real cluster)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from k3py.api.defaults import apply_defaults, image_pull_policy
from k3py.api.resources import ResourceInfo, builtin_resources

TABLE = builtin_resources()


def info(api_version: str, kind: str) -> ResourceInfo:
    group, _, version = api_version.rpartition("/")
    found = TABLE.by_kind(group, version, kind)
    assert found is not None, (api_version, kind)
    return found


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    apply_defaults(info(obj["apiVersion"], obj["kind"]), out)
    return out


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.25", "IfNotPresent"),
        ("localhost:5000/app", "Always"),
        ("localhost:5000/app:v2", "IfNotPresent"),
        ("busybox@sha256:" + "a" * 64, "IfNotPresent"),
    ],
)
def test_image_pull_policy(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy


def test_pod_defaults() -> None:
    pod = defaulted(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "nginx",
                        "ports": [{"containerPort": 80}],
                        "resources": {"limits": {"cpu": 1, "memory": "1.5Gi"}},
                        "livenessProbe": {"httpGet": {"port": 80}},
                        "env": [
                            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                        ],
                    }
                ],
                "volumes": [{"name": "scratch"}, {"name": "s", "secret": {"secretName": "x"}}],
            },
        }
    )
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    assert spec["serviceAccountName"] == "default" and spec["serviceAccount"] == "default"
    assert spec["priority"] == 0 and spec["preemptionPolicy"] == "PreemptLowerPriority"
    assert {t["key"] for t in spec["tolerations"]} == {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    }
    assert all(t["tolerationSeconds"] == 300 for t in spec["tolerations"])
    c = spec["containers"][0]
    assert c["imagePullPolicy"] == "Always"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert c["resources"] == {
        "limits": {"cpu": "1", "memory": "1536Mi"},
        "requests": {"cpu": "1", "memory": "1536Mi"},
    }
    assert c["livenessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert spec["volumes"][0] == {"name": "scratch", "emptyDir": {}}
    assert spec["volumes"][1]["secret"]["defaultMode"] == 420


def test_user_values_are_kept() -> None:
    pod = defaulted(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "serviceAccountName": "robot",
                "containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}],
            },
        }
    )
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 0
    assert pod["spec"]["serviceAccountName"] == "robot"
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    # Defaulting twice changes nothing.
    again = copy.deepcopy(pod)
    apply_defaults(info("v1", "Pod"), again)
    assert again == pod


def test_deployment_defaults_template_is_not_a_pod() -> None:
    dep = defaulted(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]},
                },
            },
        }
    )
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    tspec = spec["template"]["spec"]
    assert tspec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert tspec["restartPolicy"] == "Always"
    # Admission-only pod fields do not appear in templates.
    assert "serviceAccountName" not in tspec and "tolerations" not in tspec
    recreate = defaulted(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "spec": {"strategy": {"type": "Recreate"}, "replicas": 0},
        }
    )
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}
    assert recreate["spec"]["replicas"] == 0


def test_statefulset_daemonset_replicaset() -> None:
    sts = defaulted(
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"volumeClaimTemplates": [{}]}}
    )
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    assert sts["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"partition": 0},
    }
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert (claim["apiVersion"], claim["kind"]) == ("v1", "PersistentVolumeClaim")
    assert claim["spec"]["volumeMode"] == "Filesystem" and claim["status"] == {"phase": "Pending"}
    ds = defaulted({"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {}})
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert ds["spec"]["revisionHistoryLimit"] == 10
    rs = defaulted({"apiVersion": "apps/v1", "kind": "ReplicaSet", "spec": {}})
    assert rs["spec"]["replicas"] == 1


def test_job_and_cronjob() -> None:
    job = defaulted(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "pi", "uid": "u-1"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "perl"}],
                    }
                }
            },
        }
    )
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 6)
    assert spec["completionMode"] == "NonIndexed"
    assert spec["suspend"] is False
    assert spec["podReplacementPolicy"] == "TerminatingOrFailed"
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}
    assert spec["manualSelector"] is False
    labels = spec["template"]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/job-name"] == "pi" and labels["controller-uid"] == "u-1"
    assert job["metadata"]["labels"] == labels
    parallel = defaulted({"apiVersion": "batch/v1", "kind": "Job", "spec": {"parallelism": 3}})
    assert parallel["spec"]["parallelism"] == 3 and "completions" not in parallel["spec"]

    cron = defaulted(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {}}}}},
        }
    )
    cspec = cron["spec"]
    assert cspec["concurrencyPolicy"] == "Allow"
    assert cspec["suspend"] is False
    assert (cspec["successfulJobsHistoryLimit"], cspec["failedJobsHistoryLimit"]) == (3, 1)
    assert "completions" not in cspec["jobTemplate"]["spec"]
    assert cspec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"


def test_service_defaults() -> None:
    svc = defaulted(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {
                "ports": [{"port": 80, "targetPort": 0}, {"port": 443, "targetPort": "https"}]
            },
        }
    )
    spec = svc["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["ports"] == [
        {"port": 80, "targetPort": 80, "protocol": "TCP"},
        {"port": 443, "targetPort": "https", "protocol": "TCP"},
    ]
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ipFamilyPolicy"] == "SingleStack" and spec["ipFamilies"] == ["IPv4"]
    assert "clusterIP" not in spec  # allocation is the server's job
    lb = defaulted(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP"},
        }
    )
    assert lb["spec"]["externalTrafficPolicy"] == "Cluster"
    assert lb["spec"]["allocateLoadBalancerNodePorts"] is True
    assert lb["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    ext = defaulted(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "spec": {"type": "ExternalName", "externalName": "a.b"},
        }
    )
    assert "ipFamilyPolicy" not in ext["spec"]


def test_small_kinds() -> None:
    assert defaulted({"apiVersion": "v1", "kind": "Secret"})["type"] == "Opaque"
    secret = defaulted(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "data": {"a": "eA==", "b": "eQ=="},
            "stringData": {"b": "z"},
        }
    )
    assert secret["data"] == {"a": "eA==", "b": "eg=="} and "stringData" not in secret
    ns = defaulted({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    assert "finalizers" not in ns.get("spec", {})  # added by the create strategy, not defaulting
    finalized = copy.deepcopy(ns)
    finalized["spec"] = {"finalizers": []}
    assert defaulted(finalized)["spec"] == {"finalizers": []}  # /finalize must not get it back
    assert ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team"}
    pvc = defaulted(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "spec": {"resources": {"requests": {"storage": "1024Mi"}}},
        }
    )
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    quota = defaulted(
        {"apiVersion": "v1", "kind": "ResourceQuota", "spec": {"hard": {"cpu": "0.5", "pods": 10}}}
    )
    assert quota["spec"]["hard"] == {"cpu": "500m", "pods": "10"}
    assert pvc["spec"]["volumeMode"] == "Filesystem" and pvc["status"]["phase"] == "Pending"
    node = defaulted({"apiVersion": "v1", "kind": "Node", "status": {"capacity": {"cpu": "2"}}})
    assert node["status"]["allocatable"] == {"cpu": "2"}
    crb = defaulted(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "subjects": [
                {"kind": "User", "name": "bob"},
                {"kind": "ServiceAccount", "name": "x", "namespace": "d"},
            ],
        }
    )
    assert crb["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    assert crb["subjects"][1]["apiGroup"] == ""
    np = defaulted(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "spec": {"egress": [{"ports": [{"port": 53}]}]},
        }
    )
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert np["spec"]["egress"][0]["ports"][0]["protocol"] == "TCP"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}
    assert defaulted(cm) == cm


def test_mistyped_objects_are_left_for_validation() -> None:
    # Kubernetes refuses these while decoding, before defaulting: nothing is filled in.
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "3", "template": {}}}
    assert defaulted(bad) == bad
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "spec": {"hard": {"cpu": "lots"}}}
    assert defaulted(quota) == quota


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ([{}], "BestEffort"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}], "Guaranteed"),  # requests default to limits
        ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}], "Burstable"),
        ([{"limits": {"cpu": "1"}}], "Burstable"),
        ([{"requests": {"memory": "64Mi"}}, {}], "Burstable"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}, {}], "Burstable"),
        ([{"limits": {"example.com/gpu": "1"}}], "BestEffort"),
    ],
)
def test_pod_qos_class(resources: list[dict[str, Any]], qos: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {"name": f"c{i}", "image": "i", "resources": r} for i, r in enumerate(resources)
            ]
        },
        "status": {"phase": "Pending"},
    }
    assert defaulted(pod)["status"] == {"phase": "Pending", "qosClass": qos}
