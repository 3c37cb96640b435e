"""The examples users copy from examples/ work against a real server, with the real clients."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cluster import TestCluster

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_manifest_applies_and_its_objects_exist(cluster: TestCluster) -> None:
    out = cluster.kubectl("apply", "-f", str(EXAMPLES / "busybox-web.yaml")).stdout
    for kind in ("configmap/busybox-web", "deployment.apps/busybox-web", "service/busybox-web"):
        assert f"{kind} created" in out
    service = json.loads(cluster.kubectl("get", "service", "busybox-web", "-o", "json").stdout)
    assert service["spec"]["clusterIP"].startswith("10.43.")


def test_chart_installs_upgrades_and_uninstalls(cluster: TestCluster) -> None:
    chart = str(EXAMPLES / "hello-chart")
    cluster.helm("install", "hello", chart, "--set", "greeting=hi")
    data = json.loads(cluster.kubectl("get", "configmap", "hello-config", "-o", "json").stdout)["data"]
    assert data == {"greeting": "hi"}
    cluster.helm("upgrade", "hello", chart, "--set", "greeting=bye")
    data = json.loads(cluster.kubectl("get", "configmap", "hello-config", "-o", "json").stdout)["data"]
    assert data == {"greeting": "bye"}
    cluster.helm("uninstall", "hello")
    gone = cluster.kubectl("get", "configmap", "hello-config", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
