"""Real kubectl over TLS against a real server: discovery, CRUD, output formats, errors.

One cluster for the module; each test uses its own namespace so the tests stay independent.
"""

from __future__ import annotations

import json

import yaml

from tests.cluster import TestCluster


def _ns(cluster: TestCluster, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    return name


def test_version_reports_k3py_server(cluster: TestCluster) -> None:
    out = cluster.kubectl("version", "-o", "json").stdout
    server = json.loads(out)["serverVersion"]
    assert server["gitVersion"] == "v1.32.4+k3py"
    assert (server["major"], server["minor"]) == ("1", "32")


def test_api_resources_and_versions_match_a_real_cluster(cluster: TestCluster) -> None:
    out = cluster.kubectl("api-resources", "--no-headers").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()}
    assert rows["pods"][1:] == ["po", "v1", "true", "Pod"]
    assert rows["deployments"][1:] == ["deploy", "apps/v1", "true", "Deployment"]
    assert rows["namespaces"][1:] == ["ns", "v1", "false", "Namespace"]
    versions = cluster.kubectl("api-versions").stdout.split()
    for gv in ("v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "apiextensions.k8s.io/v1"):
        assert gv in versions


def test_system_namespaces_and_kubernetes_service_exist(cluster: TestCluster) -> None:
    names = cluster.kubectl("get", "ns", "-o", "name").stdout.split()
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert f"namespace/{ns}" in names
    svc = cluster.kubectl_json("get", "svc", "kubernetes", "-n", "default")
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    assert svc["spec"]["ports"][0]["port"] == 443
    eps = cluster.kubectl_json("get", "endpoints", "kubernetes", "-n", "default")
    assert eps["subsets"][0]["addresses"][0]["ip"]


def test_unauthenticated_requests_get_401(cluster: TestCluster) -> None:
    status, body, _ = cluster.request("GET", "/api/v1/namespaces", client_cert=False)
    assert status == 401
    assert json.loads(body)["reason"] == "Unauthorized"
    status, body, _ = cluster.request(
        "GET", "/api/v1/namespaces", client_cert=False, headers={"Authorization": "Bearer wrong"}
    )
    assert status == 401
    token = (cluster.data_dir / "token").read_text().strip()
    status, _body, _ = cluster.request(
        "GET", "/api/v1/namespaces", client_cert=False, headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200


def test_typed_creates_send_protobuf_and_work(cluster: TestCluster) -> None:
    ns = _ns(cluster, "typed")
    cluster.kubectl("create", "deployment", "web", "--image=nginx:1.25", "--replicas=2", "-n", ns)
    cluster.kubectl("create", "configmap", "cm1", "--from-literal=k=v", "-n", ns)
    cluster.kubectl("create", "secret", "generic", "s1", "--from-literal=password=hunter2", "-n", ns)
    dep = cluster.kubectl_json("get", "deployment", "web", "-n", ns)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    assert cluster.kubectl_json("get", "cm", "cm1", "-n", ns)["data"] == {"k": "v"}
    assert cluster.kubectl_json("get", "secret", "s1", "-n", ns)["data"] == {"password": "aHVudGVyMg=="}


def test_get_output_formats(cluster: TestCluster) -> None:
    ns = _ns(cluster, "formats")
    cluster.kubectl("create", "deployment", "web", "--image=nginx:1.25", "-n", ns)
    wide = cluster.kubectl("get", "deploy", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[0] == "web" and wide[1].split()[1].endswith("/1")
    assert wide[1].split()[5:] == ["nginx", "nginx:1.25", "app=web"]
    assert yaml.safe_load(cluster.kubectl("get", "deploy", "web", "-n", ns, "-o", "yaml").stdout)["kind"] == "Deployment"
    assert cluster.kubectl("get", "deploy", "-n", ns, "-o", "name").stdout.split() == ["deployment.apps/web"]
    jp = cluster.kubectl("get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert jp.stdout == "nginx:1.25"


def test_errors_as_kubectl_prints_them(cluster: TestCluster) -> None:
    ns = _ns(cluster, "errors")
    missing = cluster.kubectl("get", "pod", "nope", "-n", ns, check=False)
    assert missing.returncode == 1
    assert 'Error from server (NotFound): pods "nope" not found' in missing.stderr
    cluster.kubectl("create", "configmap", "dup", "-n", ns)
    typed = cluster.kubectl("create", "configmap", "dup", "-n", ns, check=False)
    assert 'error: failed to create configmap: configmaps "dup" already exists' in typed.stderr
    manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup"}})
    from_file = cluster.kubectl("create", "--validate=false", "-n", ns, "-f", "-", input=manifest, check=False)
    assert 'Error from server (AlreadyExists): error when creating "STDIN": configmaps "dup" already exists' in from_file.stderr
    no_ns = cluster.kubectl("create", "configmap", "x", "-n", "does-not-exist", check=False)
    assert 'namespaces "does-not-exist" not found' in no_ns.stderr
    bad_name = cluster.kubectl("create", "configmap", "Bad_Name", "-n", ns, check=False)
    assert bad_name.returncode == 1
    assert 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' in bad_name.stderr


def test_describe_and_explain(cluster: TestCluster) -> None:
    ns = _ns(cluster, "describe")
    cluster.kubectl("create", "configmap", "d1", "--from-literal=k=v", "-n", ns)
    out = cluster.kubectl("describe", "cm", "d1", "-n", ns).stdout
    assert "Name:" in out and "d1" in out and "k:" in out


def test_auth_can_i_and_whoami(cluster: TestCluster) -> None:
    assert cluster.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    who = cluster.kubectl("auth", "whoami", "-o", "json").stdout
    info = json.loads(who)["status"]["userInfo"]
    assert info["username"] == "system:admin" and "system:masters" in info["groups"]
