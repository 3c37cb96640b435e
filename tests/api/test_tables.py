"""Table columns and cells match what a real cluster prints for `kubectl get`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from k3py.api.resources import ResourceInfo, builtin_resources
from k3py.api.tables import human_duration, table_columns, table_row_cells

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)
TABLE = builtin_resources()


def ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


def info(group: str, plural: str, version: str = "v1") -> ResourceInfo:
    found = TABLE.lookup(group, version, plural)
    assert found is not None
    return found


def header(i: ResourceInfo, wide: bool = False) -> list[str]:
    return [c["name"].upper() for c in table_columns(i) if wide or c["priority"] == 0]


def row(i: ResourceInfo, obj: dict) -> dict[str, object]:
    cols = table_columns(i)
    cells = table_row_cells(i, obj, NOW)
    assert len(cells) == len(cols)
    return {c["name"].upper(): cell for c, cell in zip(cols, cells, strict=True)}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (-1.5, "0s"), (-5, "<invalid>"), (45, "45s"), (119, "119s"), (120, "2m"),
     (312, "5m12s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 1200, "3h20m"),
     (8 * 3600, "8h"), (47 * 3600, "47h"), (3 * 86400, "3d"), (3 * 86400 + 4 * 3600, "3d4h"),
     (30 * 86400, "30d"), (800 * 86400, "2y70d"), (365 * 3 * 86400, "3y"), (365 * 9 * 86400, "9y")],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_headers_of_common_kinds() -> None:
    assert header(info("", "pods")) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert header(info("", "pods"), wide=True)[5:] == ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    assert header(info("apps", "deployments"), wide=True) == [
        "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert header(info("", "services"), wide=True) == [
        "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]
    assert header(info("", "configmaps")) == ["NAME", "DATA", "AGE"]
    assert header(info("", "secrets")) == ["NAME", "TYPE", "DATA", "AGE"]
    assert header(info("", "namespaces")) == ["NAME", "STATUS", "AGE"]
    assert header(info("", "nodes"), wide=True) == [
        "NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE",
        "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    assert header(info("", "events")) == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert header(info("batch", "jobs")) == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert header(info("batch", "cronjobs")) == [
        "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"]
    assert header(info("apps", "replicasets")) == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert header(info("apps", "statefulsets")) == ["NAME", "READY", "AGE"]
    assert header(info("apiextensions.k8s.io", "customresourcedefinitions")) == ["NAME", "CREATED AT"]
    assert header(info("autoscaling", "horizontalpodautoscalers", "v2")) == [
        "NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]


def test_every_served_kind_has_consistent_columns_and_cells() -> None:
    minimal = {"metadata": {"name": "x", "creationTimestamp": ago(minutes=5)}}
    for i in TABLE.all():
        cols = table_columns(i)
        names = [c for c in cols if c.get("format") == "name"]
        assert len(names) == 1, i.kind
        assert all(set(c) == {"name", "type", "format", "description", "priority"} for c in cols)
        # a bare object (no spec, no status) must print, never raise
        assert len(table_row_cells(i, minimal, NOW)) == len(cols), i.kind
        assert len(table_row_cells(i, {}, NOW)) == len(cols), i.kind


def test_crd_kinds_get_name_and_age() -> None:
    crd = ResourceInfo("example.com", "v1", "Widget", "widgets", "widget", True, ("get",))
    assert header(crd) == ["NAME", "AGE"]
    assert table_row_cells(crd, {"metadata": {"name": "w", "creationTimestamp": ago(days=3)}}, NOW) == ["w", "3d"]


def _pod(**status: object) -> dict:
    return {
        "metadata": {"name": "web", "creationTimestamp": ago(minutes=5, seconds=12)},
        "spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "busybox"}]},
        "status": status,
    }


def test_pod_running_with_restarts() -> None:
    pod = _pod(
        phase="Running",
        podIPs=[{"ip": "10.42.0.5"}],
        containerStatuses=[
            {"name": "a", "ready": True, "restartCount": 2, "state": {"running": {}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(minutes=5)}}},
            {"name": "b", "ready": True, "restartCount": 0, "state": {"running": {}}},
        ],
    )
    pod["spec"]["nodeName"] = "node1"
    r = row(info("", "pods"), pod)
    assert r["NAME"] == "web" and r["READY"] == "2/2" and r["STATUS"] == "Running"
    assert r["RESTARTS"] == "2 (5m ago)" and r["AGE"] == "5m12s"
    assert (r["IP"], r["NODE"], r["NOMINATED NODE"], r["READINESS GATES"]) == (
        "10.42.0.5", "node1", "<none>", "<none>")


def test_pod_status_reasons() -> None:
    pods = info("", "pods")
    assert row(pods, _pod(phase="Pending"))["STATUS"] == "Pending"
    waiting = _pod(phase="Pending", containerStatuses=[
        {"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}},
        {"name": "b", "state": {"waiting": {"reason": "ImagePullBackOff"}}},
    ])
    # upstream walks statuses from the last to the first: the first container's reason wins
    assert row(pods, waiting)["STATUS"] == "ContainerCreating"
    crashed = _pod(phase="Running", containerStatuses=[
        {"name": "a", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
    r = row(pods, crashed)
    assert (r["STATUS"], r["READY"], r["RESTARTS"]) == ("CrashLoopBackOff", "0/2", "4")
    done = _pod(phase="Succeeded", containerStatuses=[
        {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}])
    assert row(pods, done)["STATUS"] == "Completed"
    failed = _pod(phase="Failed", containerStatuses=[
        {"name": "a", "state": {"terminated": {"exitCode": 3}}}])
    assert row(pods, failed)["STATUS"] == "ExitCode:3"
    killed = _pod(phase="Failed", containerStatuses=[
        {"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}])
    assert row(pods, killed)["STATUS"] == "Signal:9"
    evicted = _pod(phase="Failed", reason="Evicted")
    assert row(pods, evicted)["STATUS"] == "Evicted"
    deleting = _pod(phase="Running")
    deleting["metadata"]["deletionTimestamp"] = ago(seconds=1)
    assert row(pods, deleting)["STATUS"] == "Terminating"
    gated = _pod(phase="Pending", conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}])
    assert row(pods, gated)["STATUS"] == "SchedulingGated"


def test_pod_init_containers() -> None:
    pods = info("", "pods")
    pod = _pod(phase="Pending", initContainerStatuses=[
        {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
        {"name": "i2", "state": {"running": {}}},
    ])
    pod["spec"]["initContainers"] = [{"name": "i1"}, {"name": "i2"}]
    assert row(pods, pod)["STATUS"] == "Init:1/2"
    pod["status"]["initContainerStatuses"][1]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert row(pods, pod)["STATUS"] == "Init:CrashLoopBackOff"
    pod["status"]["initContainerStatuses"][1]["state"] = {"terminated": {"exitCode": 2}}
    assert row(pods, pod)["STATUS"] == "Init:ExitCode:2"
    # a sidecar (restartable init container) counts towards READY
    side = _pod(phase="Running", initContainerStatuses=[
        {"name": "s", "started": True, "ready": True, "state": {"running": {}}}],
        containerStatuses=[
            {"name": "a", "ready": True, "state": {"running": {}}},
            {"name": "b", "ready": False, "state": {"running": {}}}])
    side["spec"]["initContainers"] = [{"name": "s", "restartPolicy": "Always"}]
    r = row(pods, side)
    assert (r["READY"], r["STATUS"]) == ("2/3", "Running")


def test_pod_ip_from_pod_ip_alone() -> None:
    assert row(info("", "pods"), _pod(phase="Running", podIP="10.42.0.9"))["IP"] == "10.42.0.9"


def test_pod_readiness_gates() -> None:
    pod = _pod(phase="Running", conditions=[{"type": "g1", "status": "True"}])
    pod["spec"]["readinessGates"] = [{"conditionType": "g1"}, {"conditionType": "g2"}]
    assert row(info("", "pods"), pod)["READINESS GATES"] == "1/2"


def test_deployment_and_replicaset_cells() -> None:
    dep = {
        "metadata": {"name": "web", "creationTimestamp": ago(hours=3, minutes=20)},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "tier": "fe"},
                 "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]},
                 "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"},
                                                       {"name": "log", "image": "busybox"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert table_row_cells(info("apps", "deployments"), dep, NOW) == [
        "web", "2/3", 3, 2, "3h20m", "nginx,log", "nginx:1.27,busybox",
        "app=web,env in (dev,prod),tier=fe"]
    rs = {**dep, "status": {"replicas": 3, "readyReplicas": 1}}
    assert table_row_cells(info("apps", "replicasets"), rs, NOW)[:5] == ["web", 3, 3, 1, "3h20m"]
    sts = {**dep, "status": {"readyReplicas": 3}}
    assert table_row_cells(info("apps", "statefulsets"), sts, NOW) == [
        "web", "3/3", "3h20m", "nginx,log", "nginx:1.27,busybox"]
    rc = {"metadata": {"name": "rc"}, "spec": {"replicas": 2, "selector": {"b": "2", "a": "1"}}}
    assert row(info("", "replicationcontrollers"), rc)["SELECTOR"] == "a=1,b=2"


def test_service_cells() -> None:
    svcs = info("", "services")
    svc = {"metadata": {"name": "web", "creationTimestamp": ago(days=3, hours=4)},
           "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.10",
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                    "selector": {"k8s-app": "kube-dns"}}}
    assert table_row_cells(svcs, svc, NOW) == [
        "web", "ClusterIP", "10.43.0.10", "<none>", "53/UDP,53/TCP", "3d4h", "k8s-app=kube-dns"]
    np = {"metadata": {"name": "np"}, "spec": {"type": "NodePort", "clusterIP": "10.43.1.1",
          "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}
    r = row(svcs, np)
    assert (r["PORT(S)"], r["EXTERNAL-IP"], r["SELECTOR"]) == ("80:30080/TCP", "<none>", "<none>")
    lb = {"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.43.1.2"}}
    assert row(svcs, lb)["EXTERNAL-IP"] == "<pending>"
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.1.5"}]}}
    assert row(svcs, lb)["EXTERNAL-IP"] == "192.168.1.5"
    headless = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}
    assert row(svcs, headless)["CLUSTER-IP"] == "None"
    ext = {"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}
    assert row(svcs, ext)["EXTERNAL-IP"] == "example.com"


def test_node_event_namespace_secret_configmap_cells() -> None:
    node = {"metadata": {"name": "n1", "creationTimestamp": ago(days=10),
                         "labels": {"node-role.kubernetes.io/control-plane": "true",
                                    "node-role.kubernetes.io/master": "true"}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.4-k3py", "osImage": "Debian 12"}}}
    assert table_row_cells(info("", "nodes"), node, NOW) == [
        "n1", "Ready,SchedulingDisabled", "control-plane,master", "10d", "v1.32.4-k3py",
        "10.0.0.1", "<none>", "Debian 12", "<unknown>", "<unknown>"]
    event = {"metadata": {"name": "web.17a"}, "type": "Normal", "reason": "Scheduled",
             "involvedObject": {"kind": "Pod", "name": "web"}, "message": "Assigned  \n",
             "source": {"component": "default-scheduler"},
             "firstTimestamp": ago(minutes=3), "lastTimestamp": ago(seconds=30), "count": 4}
    assert table_row_cells(info("", "events"), event, NOW) == [
        "30s", "Normal", "Scheduled", "pod/web", "", "default-scheduler", "Assigned", "3m", 4, "web.17a"]
    new_event = {"apiVersion": "events.k8s.io/v1", "metadata": {"name": "e2"}, "type": "Warning",
                 "reason": "BackOff", "regarding": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
                 "note": "Back-off", "eventTime": ago(seconds=90), "reportingController": "kubelet",
                 "reportingInstance": "n1", "series": {"count": 7, "lastObservedTime": ago(seconds=5)}}
    assert table_row_cells(info("events.k8s.io", "events"), new_event, NOW) == [
        "5s", "Warning", "BackOff", "pod/p", "spec.containers{a}", "kubelet, n1", "Back-off", "90s", 7, "e2"]
    core_new_style = {"metadata": {"name": "e3"}, "type": "Normal", "reason": "Pulled",
                      "involvedObject": {"kind": "Pod", "name": "p"}, "message": "pulled",
                      "eventTime": ago(seconds=10), "reportingComponent": "kubelet",
                      "reportingInstance": "n1"}
    r = row(info("", "events"), core_new_style)
    assert (r["LAST SEEN"], r["SOURCE"], r["COUNT"]) == ("10s", "kubelet, n1", 1)
    ns = {"metadata": {"name": "default", "creationTimestamp": ago(hours=50)}, "status": {"phase": "Active"}}
    assert table_row_cells(info("", "namespaces"), ns, NOW) == ["default", "Active", "2d2h"]
    secret = {"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}
    assert table_row_cells(info("", "secrets"), secret, NOW) == ["s", "kubernetes.io/tls", 2, "<unknown>"]
    cm = {"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": ""}}
    assert table_row_cells(info("", "configmaps"), cm, NOW)[:2] == ["c", 2]


def test_job_and_cronjob_cells() -> None:
    job = {"metadata": {"name": "pi", "creationTimestamp": ago(seconds=30)},
           "spec": {"completions": 1, "parallelism": 1, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
           "status": {"succeeded": 1, "startTime": ago(seconds=30), "completionTime": ago(seconds=5),
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    assert table_row_cells(info("batch", "jobs"), job, NOW) == [
        "pi", "Complete", "1/1", "25s", "30s", "pi", "perl", "a=b"]
    running = {"metadata": {"name": "r"}, "spec": {"parallelism": 3},
               "status": {"startTime": ago(seconds=10)}}
    r = row(info("batch", "jobs"), running)
    assert (r["STATUS"], r["COMPLETIONS"], r["DURATION"]) == ("Running", "0/1 of 3", "10s")
    cj = {"metadata": {"name": "c", "creationTimestamp": ago(minutes=7)},
          "spec": {"schedule": "*/1 * * * *", "suspend": False},
          "status": {"active": [{"name": "c-1"}], "lastScheduleTime": ago(seconds=42)}}
    assert table_row_cells(info("batch", "cronjobs"), cj, NOW)[:7] == [
        "c", "*/1 * * * *", "<none>", "False", 1, "42s", "7m"]


def test_storage_rbac_and_misc_cells() -> None:
    pvc = {"metadata": {"name": "data"}, "spec": {"volumeName": "pv1", "storageClassName": "local-path"},
           "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}}
    r = row(info("", "persistentvolumeclaims"), pvc)
    assert (r["STATUS"], r["VOLUME"], r["CAPACITY"], r["ACCESS MODES"], r["STORAGECLASS"]) == (
        "Bound", "pv1", "1Gi", "RWO", "local-path")
    pv = {"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"},
          "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
          "claimRef": {"namespace": "default", "name": "data"}}, "status": {"phase": "Bound"}}
    r = row(info("", "persistentvolumes"), pv)
    assert (r["ACCESS MODES"], r["CLAIM"], r["STATUS"]) == ("RWO,RWX", "default/data", "Bound")
    sc = {"metadata": {"name": "local-path", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer"}
    assert table_row_cells(info("storage.k8s.io", "storageclasses"), sc, NOW)[:5] == [
        "local-path (default)", "rancher.io/local-path", "Delete", "WaitForFirstConsumer", False]
    rb = {"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
          "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "d", "namespace": "ns"}]}
    r = row(info("rbac.authorization.k8s.io", "rolebindings"), rb)
    assert (r["ROLE"], r["USERS"], r["GROUPS"], r["SERVICEACCOUNTS"]) == ("ClusterRole/view", "bob", "", "ns/d")
    role = {"metadata": {"name": "admin", "creationTimestamp": "2026-01-01T10:00:00Z"}}
    assert table_row_cells(info("rbac.authorization.k8s.io", "clusterroles"), role, NOW) == [
        "admin", "2026-01-01T10:00:00Z"]
    quota = {"metadata": {"name": "q"}, "status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
                                                  "used": {"pods": "3"}}}
    r = row(info("", "resourcequotas"), quota)
    assert (r["REQUEST"], r["LIMIT"]) == ("pods: 3/10, requests.cpu: 0/1", "limits.cpu: 0/2")
    ep = {"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": f"10.42.0.{i}"} for i in range(5)],
                                                    "ports": [{"port": 80}]}]}
    assert row(info("", "endpoints"), ep)["ENDPOINTS"] == "10.42.0.0:80,10.42.0.1:80,10.42.0.2:80 + 2 more..."
    eps = {"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"port": 80}],
           "endpoints": [{"addresses": ["10.42.0.7"]}]}
    assert table_row_cells(info("discovery.k8s.io", "endpointslices"), eps, NOW)[:4] == [
        "web-abc", "IPv4", "80", "10.42.0.7"]
    pdb = {"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}}
    assert table_row_cells(info("policy", "poddisruptionbudgets"), pdb, NOW)[:4] == ["p", "50%", "N/A", 1]
    cr = {"metadata": {"name": "ds-1", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "controller": True}]}, "revision": 2}
    assert table_row_cells(info("apps", "controllerrevisions"), cr, NOW)[:3] == ["ds-1", "daemonset.apps/ds", 2]
    ing = {"metadata": {"name": "i"}, "spec": {"ingressClassName": "traefik", "tls": [{}],
           "rules": [{"host": "a.example"}, {"host": "b.example"}]}}
    assert table_row_cells(info("networking.k8s.io", "ingresses"), ing, NOW)[:5] == [
        "i", "traefik", "a.example,b.example", "", "80, 443"]


def test_hpa_targets() -> None:
    hpa = {"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
           "minReplicas": 1, "maxReplicas": 5, "metrics": [
               {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
           "status": {"currentReplicas": 2}}
    assert table_row_cells(info("autoscaling", "horizontalpodautoscalers", "v2"), hpa, NOW)[:6] == [
        "h", "Deployment/web", "cpu: <unknown>/80%", 1, 5, 2]
    hpa["status"]["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]
    assert row(info("autoscaling", "horizontalpodautoscalers", "v2"), hpa)["TARGETS"] == "cpu: 12%/80%"
    v1 = {"apiVersion": "autoscaling/v1", "metadata": {"name": "h"},
          "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                   "targetCPUUtilizationPercentage": 50}, "status": {"currentCPUUtilizationPercentage": 20}}
    r = row(info("autoscaling", "horizontalpodautoscalers", "v1"), v1)
    assert (r["TARGETS"], r["MINPODS"]) == ("cpu: 20%/50%", "<unset>")


def test_custom_resource_printer_columns() -> None:
    from k3py.api.jsonpath import jsonpath_values
    from k3py.api.tables import custom_row_cells, custom_table_columns

    columns = [
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Ports", "type": "string", "jsonPath": ".spec.ports", "priority": 1},
        {"name": "First", "type": "string", "jsonPath": ".spec.hosts[0]"},
        {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    cols = custom_table_columns(columns)
    assert [c["name"] for c in cols] == ["Name", "Replicas", "Ready", "Ports", "First", "Paused", "Age"]
    assert cols[0]["format"] == "name" and cols[3]["priority"] == 1
    assert cols[1]["description"] == "Custom resource definition column (in JSONPath format): .spec.replicas"
    obj = {"metadata": {"name": "w", "creationTimestamp": ago(hours=2)},
           "spec": {"replicas": 3, "ports": [80, 443], "hosts": ["a", "b"], "paused": False},
           "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}}
    assert custom_row_cells(columns, obj, NOW) == ["w", 3, "True", "[80,443]", "a", False, "120m"]
    # missing values are empty cells, never errors
    assert custom_row_cells(columns, {"metadata": {"name": "x"}}, NOW) == ["x", None, None, None, None, None, None]
    assert jsonpath_values({"a": {"b": [{"c": 1}, {"c": 2}]}}, "{.a.b[*].c}") == [1, 2]
    assert jsonpath_values({"a": {"x.y": 1}}, ".a['x.y']") == [1]
    bad = [{"name": "Bad", "type": "string", "jsonPath": ".spec[?(foo)]"}]
    assert custom_row_cells(bad, obj, NOW) == ["w", None]


def test_scale_subresource_table() -> None:
    """`kubectl get deploy/web --subresource=scale` prints the Scale's columns."""
    scale = ResourceInfo("autoscaling", "v1", "Scale", "scale", "scale", True, ("get",))
    assert header(scale) == ["NAME", "DESIRED", "AVAILABLE", "AGE"]
    obj = {"metadata": {"name": "web", "creationTimestamp": ago(minutes=3)},
           "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}}
    assert table_row_cells(scale, obj, NOW) == ["web", 3, 2, "3m"]
