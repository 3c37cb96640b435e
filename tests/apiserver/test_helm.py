"""Helm 3 drives the API unmodified: install, upgrade, rollback, list, uninstall."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.cluster import TestCluster

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    "values.yaml": "greeting: hello\npassword: secret1\n",
    "templates/configmap.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
    "templates/secret.yaml": (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-secret\n"
        "type: Opaque\nstringData:\n  password: {{ .Values.password | quote }}\n"
    ),
}


def _chart(base: Path) -> Path:
    chart = base / "demo-chart"
    for rel, text in CHART.items():
        path = chart / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return chart


def _greeting(cluster: TestCluster, ns: str) -> str:
    return cluster.kubectl_json("get", "cm", "rel-cfg", "-n", ns)["data"]["greeting"]


def test_helm_install_upgrade_rollback_uninstall(cluster: TestCluster) -> None:
    ns = "helm-demo"
    cluster.kubectl("create", "namespace", ns)
    chart = str(_chart(cluster.base_dir))
    out = cluster.helm("install", "rel", chart, "-n", ns).stdout
    assert "STATUS: deployed" in out
    assert _greeting(cluster, ns) == "hello"
    secret = cluster.kubectl_json("get", "secret", "rel-secret", "-n", ns)
    assert base64.b64decode(secret["data"]["password"]) == b"secret1"
    cm = cluster.kubectl_json("get", "cm", "rel-cfg", "-n", ns)
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

    cluster.helm("upgrade", "rel", chart, "-n", ns, "--set", "greeting=bonjour")
    assert _greeting(cluster, ns) == "bonjour"
    listed = cluster.helm("list", "-n", ns).stdout.splitlines()
    assert listed[1].split()[:3] == ["rel", ns, "2"]

    cluster.helm("rollback", "rel", "1", "-n", ns)
    assert _greeting(cluster, ns) == "hello"
    history = cluster.helm("history", "rel", "-n", ns).stdout
    assert "Rollback to 1" in history

    cluster.helm("uninstall", "rel", "-n", ns)
    left = cluster.kubectl("get", "cm,secret", "-n", ns, "-o", "name").stdout.split()
    assert "configmap/rel-cfg" not in left and "secret/rel-secret" not in left
    assert not any(name.startswith("secret/sh.helm.release") for name in left)
    assert cluster.helm("list", "-n", ns).stdout.splitlines()[1:] == []
