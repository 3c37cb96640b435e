"""Real kubectl against a real server with three simulated nodes: deployments roll out,
scale, roll back and restart; deletes cascade; namespaces terminate; scheduling failures
are reported as upstream words them.

One cluster for the module; each test works in its own namespace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import TestCluster


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    with TestCluster(tmp_path_factory.mktemp("sim"), server_args=["--simulated-nodes", "3"]) as running:
        yield running


def _ns(cluster: TestCluster, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    return name


def _items(cluster: TestCluster, kind: str, ns: str, *selector: str) -> list[dict[str, Any]]:
    return cluster.kubectl_json("get", kind, "-n", ns, *selector)["items"]


def test_nodes_register_ready(sim: TestCluster) -> None:
    out = sim.wait_for(lambda: (o := sim.kubectl("get", "nodes").stdout).count(" Ready ") == 3 and o,
                       what="3 Ready nodes")
    for name in ("simnode-1", "simnode-2", "simnode-3"):
        assert name in out
    leases = sim.kubectl_json("get", "leases", "-n", "kube-node-lease")["items"]
    assert {lease["spec"]["holderIdentity"] for lease in leases} >= {"simnode-1", "simnode-2", "simnode-3"}


def test_create_scale_and_rollout_status(sim: TestCluster) -> None:
    ns = _ns(sim, "roll")
    sim.kubectl("create", "deployment", "web", "--image=nginx:1.25", "--replicas=3", "-n", ns)
    out = sim.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s").stdout
    assert 'deployment "web" successfully rolled out' in out
    pods = _items(sim, "pods", ns, "-l", "app=web")
    assert len(pods) == 3
    assert all(p["status"]["phase"] == "Running" and p["spec"]["nodeName"].startswith("simnode-") for p in pods)
    assert len({p["status"]["podIP"] for p in pods}) == 3
    described = sim.wait_for(lambda: "ScalingReplicaSet" in (o := sim.kubectl("describe", "deployment", "web", "-n", ns).stdout) and o,
                             what="ScalingReplicaSet event")
    assert "Scaled up replica set web-" in described and "from 0 to 3" in described
    rs_name = _items(sim, "rs", ns)[0]["metadata"]["name"]
    described = sim.wait_for(lambda: "SuccessfulCreate" in (o := sim.kubectl("describe", "rs", rs_name, "-n", ns).stdout) and o,
                             what="SuccessfulCreate event")
    assert "Created pod: web-" in described
    sim.kubectl("scale", "deployment/web", "--replicas=5", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    sim.wait_for(lambda: len(_items(sim, "pods", ns, "-l", "app=web")) == 5, what="5 pods")
    sim.kubectl("scale", "deployment/web", "--replicas=1", "-n", ns)
    sim.wait_for(lambda: len(_items(sim, "pods", ns, "-l", "app=web")) == 1, what="1 pod")
    d = sim.kubectl_json("get", "deployment", "web", "-n", ns)
    sim.wait_for(lambda: (d := sim.kubectl_json("get", "deployment", "web", "-n", ns))["status"].get("replicas") == 1
                 and d["status"]["observedGeneration"] == d["metadata"]["generation"], what="status caught up")
    d = sim.kubectl_json("get", "deployment", "web", "-n", ns)
    available = next(c for c in d["status"]["conditions"] if c["type"] == "Available")
    assert available["status"] == "True" and available["reason"] == "MinimumReplicasAvailable"


def test_set_image_history_undo_restart(sim: TestCluster) -> None:
    ns = _ns(sim, "history")
    sim.kubectl("create", "deployment", "app", "--image=nginx:1.25", "--replicas=2", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/app", "-n", ns, "--timeout=60s")
    sim.kubectl("set", "image", "deployment/app", "nginx=nginx:1.26", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/app", "-n", ns, "--timeout=60s")
    history = sim.kubectl("rollout", "history", "deployment/app", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    pods = _items(sim, "pods", ns, "-l", "app=app")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:1.26"}

    out = sim.kubectl("rollout", "undo", "deployment/app", "-n", ns).stdout
    assert "rolled back" in out
    sim.kubectl("rollout", "status", "deployment/app", "-n", ns, "--timeout=60s")
    history = sim.kubectl("rollout", "history", "deployment/app", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"]
    sim.wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in _items(sim, "pods", ns, "-l", "app=app")}
                 == {"nginx:1.25"}, what="pods back on nginx:1.25")
    rs = _items(sim, "rs", ns)
    assert len(rs) == 2

    sim.kubectl("rollout", "restart", "deployment/app", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/app", "-n", ns, "--timeout=60s")
    rs = _items(sim, "rs", ns)
    assert len(rs) == 3
    revisions = sorted(int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) for r in rs)
    assert revisions == [2, 3, 4]
    newest = max(rs, key=lambda r: int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))
    assert "kubectl.kubernetes.io/restartedAt" in newest["spec"]["template"]["metadata"]["annotations"]
    assert newest["status"].get("readyReplicas") == 2


def test_delete_cascades_and_deleted_namespace_goes_away_with_its_content(sim: TestCluster) -> None:
    ns = _ns(sim, "cascade")
    sa = sim.wait_for(lambda: sim.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0,
                      what="default service account")
    assert sa
    ca = sim.wait_for(lambda: (r := sim.kubectl("get", "configmap", "kube-root-ca.crt", "-n", ns, "-o", "json", check=False)).returncode == 0
                      and json.loads(r.stdout), what="kube-root-ca.crt")
    assert ca["data"]["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    sim.kubectl("create", "deployment", "gone", "--image=nginx", "--replicas=2", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/gone", "-n", ns, "--timeout=60s")
    sim.kubectl("delete", "deployment", "gone", "-n", ns)
    sim.wait_for(lambda: not _items(sim, "rs", ns) and not _items(sim, "pods", ns), what="rs and pods collected")

    sim.kubectl("create", "deployment", "stay", "--image=nginx", "--replicas=1", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/stay", "-n", ns, "--timeout=60s")
    sim.kubectl("create", "configmap", "settings", "--from-literal=k=v", "-n", ns)
    # kubectl waits (by default) until the namespace is gone: the namespace controller empties
    # it of every kind it holds, then finalizes it and the server removes it.
    deleted = sim.kubectl("delete", "namespace", ns, "--timeout=60s", timeout=90)
    assert deleted.stdout.strip() == f'namespace "{ns}" deleted'
    gone = sim.kubectl("get", "namespace", ns, check=False)
    assert gone.returncode == 1 and f'namespaces "{ns}" not found' in gone.stderr
    assert not sim.kubectl_json("get", "deployments,replicasets,pods,serviceaccounts,configmaps", "-n", ns)["items"]


def test_unschedulable_pod_is_explained(sim: TestCluster) -> None:
    ns = _ns(sim, "sched")
    sim.kubectl("run", "huge", "--image=nginx", "-n", ns, "--overrides",
                json.dumps({"spec": {"containers": [{"name": "huge", "image": "nginx",
                                                     "resources": {"requests": {"cpu": "64"}}}]}}))
    message = ("0/3 nodes are available: 3 Insufficient cpu."
               " preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")
    pod = sim.wait_for(lambda: (p := sim.kubectl_json("get", "pod", "huge", "-n", ns))["status"].get("conditions") and p,
                       what="PodScheduled condition")
    (cond,) = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", message)
    described = sim.wait_for(lambda: "FailedScheduling" in (o := sim.kubectl("describe", "pod", "huge", "-n", ns).stdout) and o,
                             what="FailedScheduling event in describe")
    assert message in described
    assert pod["status"]["phase"] == "Pending"


def test_job_completes_and_kubectl_wait_sees_it(sim: TestCluster) -> None:
    ns = _ns(sim, "jobs")
    sim.kubectl("create", "job", "once", "--image=busybox", "-n", ns, "--", "true")
    out = sim.kubectl("wait", "--for=condition=complete", "job/once", "-n", ns, "--timeout=60s").stdout
    assert "job.batch/once condition met" in out
    job = sim.kubectl_json("get", "job", "once", "-n", ns)
    assert job["status"]["succeeded"] == 1 and job["status"]["completionTime"]
    (pod,) = _items(sim, "pods", ns, "-l", "batch.kubernetes.io/job-name=once")
    assert pod["status"]["phase"] == "Succeeded"
    table = sim.kubectl("get", "job", "once", "-n", ns).stdout
    assert "Complete" in table and "1/1" in table


def test_exposed_deployment_gets_endpoints_and_slices(sim: TestCluster) -> None:
    ns = _ns(sim, "svc")
    sim.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "--port=80", "-n", ns)
    sim.kubectl("expose", "deployment", "web", "--port=8080", "--target-port=80", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    pod_ips = sorted(p["status"]["podIP"] for p in _items(sim, "pods", ns, "-l", "app=web"))
    ep = sim.wait_for(lambda: (e := sim.kubectl_json("get", "endpoints", "web", "-n", ns)).get("subsets")
                      and len(e["subsets"][0].get("addresses", [])) == 2 and e, what="2 endpoint addresses")
    assert sorted(a["ip"] for a in ep["subsets"][0]["addresses"]) == pod_ips
    assert ep["subsets"][0]["ports"][0]["port"] == 80
    table = sim.kubectl("get", "endpoints", "web", "-n", ns).stdout
    assert f"{pod_ips[0]}:80" in table
    slices = _items(sim, "endpointslices", ns, "-l", "kubernetes.io/service-name=web")
    assert len(slices) == 1 and sorted(e["addresses"][0] for e in slices[0]["endpoints"]) == pod_ips


DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: busybox:1.36
"""


def test_daemonset_rollout_status_and_history(sim: TestCluster) -> None:
    ns = _ns(sim, "daemons")
    sim.kubectl("apply", "-n", ns, "-f", "-", input=DAEMONSET)
    out = sim.kubectl("rollout", "status", "daemonset/agent", "-n", ns, "--timeout=60s").stdout
    assert 'daemon set "agent" successfully rolled out' in out
    pods = _items(sim, "pods", ns, "-l", "app=agent")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["simnode-1", "simnode-2", "simnode-3"]
    sim.kubectl("set", "image", "daemonset/agent", "agent=busybox:1.37", "-n", ns)
    sim.kubectl("rollout", "status", "daemonset/agent", "-n", ns, "--timeout=60s")
    sim.wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in _items(sim, "pods", ns, "-l", "app=agent")}
                 == {"busybox:1.37"} and len(_items(sim, "pods", ns, "-l", "app=agent")) == 3, what="3 updated pods")
    history = sim.kubectl("rollout", "history", "daemonset/agent", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]


STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 3
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres:16
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
"""


def test_statefulset_ordinals_claims_rollout_and_scale(sim: TestCluster) -> None:
    ns = _ns(sim, "stateful")
    sim.kubectl("apply", "-n", ns, "-f", "-", input=STATEFULSET)
    out = sim.kubectl("rollout", "status", "statefulset/db", "-n", ns, "--timeout=60s").stdout
    assert "partitioned roll out complete" in out or "roll out complete" in out
    pods = {p["metadata"]["name"]: p for p in _items(sim, "pods", ns, "-l", "app=db")}
    assert sorted(pods) == ["db-0", "db-1", "db-2"]
    assert pods["db-1"]["spec"]["hostname"] == "db-1" and pods["db-1"]["spec"]["subdomain"] == "db"
    assert pods["db-2"]["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "2"
    claims = sorted(c["metadata"]["name"] for c in _items(sim, "pvc", ns))
    assert claims == ["data-db-0", "data-db-1", "data-db-2"]
    sim.kubectl("set", "image", "statefulset/db", "db=postgres:17", "-n", ns)
    sim.kubectl("rollout", "status", "statefulset/db", "-n", ns, "--timeout=60s")
    sim.wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in _items(sim, "pods", ns, "-l", "app=db")} == {"postgres:17"},
                 what="all pods on postgres:17")
    sim.kubectl("scale", "statefulset/db", "--replicas=1", "-n", ns)
    sim.wait_for(lambda: [p["metadata"]["name"] for p in _items(sim, "pods", ns, "-l", "app=db")] == ["db-0"],
                 what="scaled down to db-0")
    assert len(_items(sim, "pvc", ns)) == 3  # claims outlive scale-down


def test_pod_disruption_budget_status(sim: TestCluster) -> None:
    ns = _ns(sim, "pdb")
    sim.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=3", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    sim.kubectl("create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=2", "-n", ns)
    pdb = sim.wait_for(lambda: (p := sim.kubectl_json("get", "pdb", "web", "-n", ns)).get("status", {}).get("expectedPods") == 3 and p,
                       what="PDB status")
    assert (pdb["status"]["currentHealthy"], pdb["status"]["desiredHealthy"], pdb["status"]["disruptionsAllowed"]) == (3, 2, 1)
    cond = next(c for c in pdb["status"]["conditions"] if c["type"] == "DisruptionAllowed")
    assert (cond["status"], cond["reason"]) == ("True", "SufficientPods")
    table = sim.kubectl("get", "pdb", "web", "-n", ns).stdout
    assert table.split("\n")[1].split()[:4] == ["web", "2", "N/A", "1"]


WEB_CHART = {
    "Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    "values.yaml": "image: nginx:1.25\nreplicas: 3\n",
    "templates/deployment.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n"
        "  replicas: {{ .Values.replicas }}\n  selector:\n    matchLabels: {app: {{ .Release.Name }}}\n"
        "  template:\n    metadata:\n      labels: {app: {{ .Release.Name }}}\n    spec:\n"
        "      containers:\n      - name: web\n        image: {{ .Values.image }}\n"
        "        ports: [{containerPort: 80}]\n"
    ),
    "templates/service.yaml": (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n"
        "  selector: {app: {{ .Release.Name }}}\n  ports: [{port: 80}]\n"
    ),
}


def test_helm_install_and_upgrade_wait_for_rollouts(sim: TestCluster) -> None:
    ns = _ns(sim, "helmwait")
    chart = sim.base_dir / "web-chart"
    for rel, text in WEB_CHART.items():
        path = chart / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    out = sim.helm("install", "site", str(chart), "-n", ns, "--wait", "--timeout", "60s").stdout
    assert "STATUS: deployed" in out
    d = sim.kubectl_json("get", "deployment", "site", "-n", ns)
    assert d["status"]["readyReplicas"] == 3
    out = sim.helm("upgrade", "site", str(chart), "-n", ns, "--wait", "--timeout", "60s", "--set", "image=nginx:1.26").stdout
    assert "STATUS: deployed" in out
    pods = _items(sim, "pods", ns, "-l", "app=site")
    sim.wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in _items(sim, "pods", ns, "-l", "app=site")} == {"nginx:1.26"},
                 what="old pods gone after upgrade")
    assert pods
    history = sim.kubectl("rollout", "history", "deployment/site", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]


def test_restart_keeps_workloads_without_duplicates(tmp_path_factory: pytest.TempPathFactory) -> None:
    with TestCluster(tmp_path_factory.mktemp("restart"), server_args=["--simulated-nodes", "2"]) as cluster:
        cluster.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=3")
        cluster.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        before = sorted(p["metadata"]["name"] for p in _items(cluster, "pods", "default", "-l", "app=web"))
        cluster.stop()
        cluster.start()
        # The new control plane leads at once (the old one released its Leases) and adopts
        # the existing pods rather than creating more.
        cluster.kubectl("scale", "deployment/web", "--replicas=4")
        cluster.kubectl("rollout", "status", "deployment/web", "--timeout=30s")
        after = sorted(p["metadata"]["name"] for p in _items(cluster, "pods", "default", "-l", "app=web"))
        assert len(after) == 4 and set(before) <= set(after)
        nodes = cluster.kubectl("get", "nodes").stdout
        assert nodes.count(" Ready ") == 2


def test_drain_moves_pods_off_a_cordoned_node(sim: TestCluster) -> None:
    ns = _ns(sim, "drain")
    sim.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=6", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    on_node = [p for p in _items(sim, "pods", ns, "-l", "app=web") if p["spec"]["nodeName"] == "simnode-1"]
    assert on_node, "least-allocated spreading puts some pods on every node"
    try:
        out = sim.kubectl("drain", "simnode-1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s").stdout
        assert "node/simnode-1 drained" in out
        sim.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
        pods = sim.wait_for(lambda: (ps := [p for p in _items(sim, "pods", ns, "-l", "app=web")
                                            if not p["metadata"].get("deletionTimestamp")]) and len(ps) == 6 and ps,
                            what="6 pods again")
        assert all(p["spec"]["nodeName"] != "simnode-1" for p in pods)
    finally:
        sim.kubectl("uncordon", "simnode-1")


WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def test_custom_resource_owner_deletion_collects_dependents(sim: TestCluster) -> None:
    ns = _ns(sim, "crowner")
    sim.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    sim.wait_for(lambda: sim.kubectl("get", "widgets", "-n", ns, check=False).returncode == 0, what="CRD served")
    sim.kubectl("apply", "-n", ns, "-f", "-", input="apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    uid = sim.kubectl_json("get", "widget", "w", "-n", ns)["metadata"]["uid"]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "ownerReferences": [
        {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": uid}]}, "data": {"a": "1"}}
    sim.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(cm))
    sim.kubectl("delete", "widget", "w", "-n", ns)
    sim.wait_for(lambda: sim.kubectl("get", "configmap", "owned", "-n", ns, check=False).returncode != 0,
                 timeout=30, what="dependent of the deleted custom resource collected")


def test_replication_controller_keeps_its_replicas(sim: TestCluster) -> None:
    ns = _ns(sim, "rc")
    rc = ("apiVersion: v1\nkind: ReplicationController\nmetadata: {name: old}\nspec:\n  replicas: 2\n"
          "  template:\n    metadata: {labels: {app: old}}\n    spec:\n      containers: [{name: c, image: nginx}]\n")
    sim.kubectl("apply", "-n", ns, "-f", "-", input=rc)
    sim.wait_for(lambda: (r := sim.kubectl_json("get", "rc", "old", "-n", ns)).get("status", {}).get("readyReplicas") == 2 and r,
                 what="2 ready replicas")
    sim.kubectl("scale", "rc/old", "--replicas=3", "-n", ns)
    sim.wait_for(lambda: len([p for p in _items(sim, "pods", ns, "-l", "app=old") if p["status"].get("phase") == "Running"]) == 3,
                 what="3 running pods")


def test_load_balancer_service_gets_node_ingress(sim: TestCluster) -> None:
    ns = _ns(sim, "lb")
    sim.kubectl("create", "deployment", "web", "--image=nginx", "-n", ns)
    sim.kubectl("expose", "deployment", "web", "--type=LoadBalancer", "--port=80", "-n", ns)
    svc = sim.wait_for(lambda: (s := sim.kubectl_json("get", "svc", "web", "-n", ns)).get("status", {}).get("loadBalancer", {}).get("ingress") and s,
                       what="load balancer ingress")
    node_ips = sorted(a["address"] for n in sim.kubectl_json("get", "nodes")["items"]
                      for a in n["status"]["addresses"] if a["type"] == "InternalIP")
    assert sorted(i["ip"] for i in svc["status"]["loadBalancer"]["ingress"]) == node_ips
    assert "<pending>" not in sim.kubectl("get", "svc", "web", "-n", ns).stdout


def test_rollout_pause_and_resume(sim: TestCluster) -> None:
    ns = _ns(sim, "pause")
    sim.kubectl("create", "deployment", "app", "--image=nginx:1.25", "--replicas=2", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/app", "-n", ns, "--timeout=60s")
    sim.kubectl("rollout", "pause", "deployment/app", "-n", ns)
    sim.kubectl("set", "image", "deployment/app", "nginx=nginx:1.26", "-n", ns)
    sim.wait_for(lambda: next((c for c in sim.kubectl_json("get", "deployment", "app", "-n", ns)["status"].get("conditions", [])
                               if c["type"] == "Progressing"), {}).get("reason") == "DeploymentPaused", what="paused condition")
    assert len(_items(sim, "rs", ns)) == 1, "a paused deployment does not roll"
    sim.kubectl("rollout", "resume", "deployment/app", "-n", ns)
    sim.kubectl("rollout", "status", "deployment/app", "-n", ns, "--timeout=60s")
    sim.wait_for(lambda: {p["spec"]["containers"][0]["image"] for p in _items(sim, "pods", ns, "-l", "app=app")} == {"nginx:1.26"},
                 what="resumed rollout finished")


def test_claims_are_provisioned_and_bound_by_local_path(sim: TestCluster) -> None:
    ns = _ns(sim, "storage")
    classes = sim.wait_for(lambda: "local-path" in (o := sim.kubectl("get", "storageclass").stdout) and o,
                           what="local-path StorageClass")
    assert "local-path (default)" in classes and "rancher.io/local-path" in classes
    claim = ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\n"
             "spec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 2Gi}}\n")
    sim.kubectl("apply", "-n", ns, "-f", "-", input=claim)
    pvc = sim.wait_for(lambda: (c := sim.kubectl_json("get", "pvc", "data", "-n", ns)).get("status", {}).get("phase") == "Bound" and c,
                       what="claim bound")
    assert pvc["status"]["capacity"] == {"storage": "2Gi"}
    pv_name = f"pvc-{pvc['metadata']['uid']}"
    pv = sim.kubectl_json("get", "pv", pv_name)
    assert pv["status"]["phase"] == "Bound" and pv["spec"]["claimRef"]["name"] == "data"
    assert pv["spec"]["hostPath"]["path"].startswith("/var/lib/k3py/storage/pvc-")
    # The binder fills in the claim's volume and (it had none) the default class, as upstream's
    # PV controller does; kubectl shows both.
    assert (pvc["spec"].get("volumeName"), pvc["spec"].get("storageClassName")) == (pv_name, "local-path")
    row = sim.kubectl("get", "pvc", "data", "-n", ns, "--no-headers").stdout.split()
    assert row[:3] == ["data", "Bound", pv_name] and row[5] == "local-path"
    sim.kubectl("delete", "pvc", "data", "-n", ns)
    sim.wait_for(lambda: sim.kubectl("get", "pv", pv_name, check=False).returncode != 0,
                 what="provisioned volume deleted with its claim")


EVENT = """
apiVersion: v1
kind: Event
metadata:
  name: web.manual
involvedObject:
  kind: Pod
  name: web
  namespace: {ns}
reason: Testing
message: an event written by hand
type: Normal
"""


def test_events_are_stored_with_the_one_hour_event_ttl(sim: TestCluster) -> None:
    """Event TTL (upstream's --event-ttl default): the store deletes an Event an hour after its
    last write, as etcd does with the lease kube-apiserver attaches. An hour cannot be waited
    for here; the lease the server stored is read from its SQLite file, and the store's own
    tests show leased keys being deleted when due."""
    import sqlite3
    import time

    ns = _ns(sim, "eventttl")
    sim.kubectl("create", "-n", ns, "-f", "-", input=EVENT.format(ns=ns))
    sim.kubectl("create", "configmap", "plain", "-n", ns)
    (db,) = sorted(sim.data_dir.rglob("state.db"))
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        def latest(suffix: str) -> tuple[int, float]:
            row = conn.execute("SELECT lease, expires FROM kine WHERE name LIKE ? ORDER BY id DESC LIMIT 1",
                               (f"%/{ns}/{suffix}",)).fetchone()
            assert row is not None, suffix
            return int(row[0]), float(row[1] or 0)

        lease, expires = latest("web.manual")
        assert lease == 3600
        assert abs(expires - (time.time() + 3600)) < 120
        assert latest("plain")[0] == 0  # other kinds live until deleted


def test_cronjob_spawns_a_job_for_a_missed_minute(sim: TestCluster) -> None:
    """`kubectl create cronjob`, then its last run moved three minutes back through the status
    subresource (rather than waiting for the clock): the controller starts a Job for the latest
    minute at once, the Job completes, and `kubectl get cronjob` shows the schedule."""
    from datetime import UTC, datetime, timedelta

    ns = _ns(sim, "cron")
    sim.kubectl("create", "cronjob", "tick", "--image=busybox", "--schedule=* * * * *", "-n", ns, "--", "true")
    earlier = (datetime.now(UTC) - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    sim.kubectl("patch", "cronjob", "tick", "-n", ns, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"lastScheduleTime": earlier}}))
    (job,) = sim.wait_for(lambda: _items(sim, "jobs", ns), what="a Job started by the CronJob")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert job["metadata"]["name"].startswith("tick-")
    sim.kubectl("wait", "--for=condition=complete", f"job/{job['metadata']['name']}", "-n", ns, "--timeout=60s")
    cj = sim.wait_for(lambda: (c := sim.kubectl_json("get", "cronjob", "tick", "-n", ns))["status"].get("lastSuccessfulTime") and c,
                      what="lastSuccessfulTime")
    assert cj["status"]["lastScheduleTime"] > earlier
    row = sim.kubectl("get", "cronjob", "tick", "-n", ns).stdout.splitlines()[1].split()
    assert row[0] == "tick" and "* * * * *" in " ".join(row)
