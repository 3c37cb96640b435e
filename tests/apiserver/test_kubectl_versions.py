"""Smoke test with the oldest and newest kubectl the machines carry (1.27 and 1.33)."""

from __future__ import annotations

import pytest
import yaml

from tests.cluster import TestCluster


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_kubectl_version_smoke(cluster: TestCluster, version: str) -> None:
    ns = "smoke-" + version.replace(".", "")
    assert "v1.32.4+k3py" in cluster.kubectl("version", version=version).stdout
    resources = cluster.kubectl("api-resources", "--no-headers", version=version).stdout
    assert any(line.split()[0] == "deployments" for line in resources.splitlines())
    cluster.kubectl("create", "namespace", ns, version=version)
    cluster.kubectl("create", "deployment", "web", "--image=nginx:1.25", "-n", ns, version=version)
    cluster.kubectl("create", "configmap", "cm", "--from-literal=a=b", "-n", ns, version=version)
    rows = cluster.kubectl("get", "deploy", "-n", ns, "-o", "wide", version=version).stdout.splitlines()
    assert rows[1].split()[0] == "web" and "nginx:1.25" in rows[1]
    cm = yaml.safe_load(cluster.kubectl("get", "cm", "cm", "-n", ns, "-o", "yaml", version=version).stdout)
    assert cm["data"] == {"a": "b"}
    applied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": ns}, "data": {"k": "1"}}
    assert "created" in cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(applied), version=version).stdout
    applied["data"]["k"] = "2"
    assert "configured" in cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(applied), version=version).stdout
    cluster.kubectl("label", "cm", "cm", "x=y", "-n", ns, version=version)
    assert cluster.kubectl("get", "cm", "-l", "x=y", "-n", ns, "-o", "name", version=version).stdout.split() == ["configmap/cm"]
    out = cluster.kubectl("delete", "deploy", "web", "-n", ns, version=version).stdout
    assert 'deployment.apps "web" deleted' in out
    missing = cluster.kubectl("get", "deploy", "web", "-n", ns, version=version, check=False)
    assert 'Error from server (NotFound): deployments.apps "web" not found' in missing.stderr
