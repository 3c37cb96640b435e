"""Writers racing on one object: only a resourceVersion the client sent may turn into a 409.

Upstream retries a PATCH (any of the four types) and an update of ``/scale`` without a
resourceVersion on the fresh object when a concurrent writer wins the compare-and-swap; the
client never sees the race. ``kubectl scale`` and ``kubectl label`` rely on that while the
deployment controller keeps writing the same object.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.cluster import TestCluster

DEPLOY = "/apis/apps/v1/namespaces/{ns}/deployments"
MERGE = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json", "Accept": "application/json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json", "Accept": "application/json"}
APPLY = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}
WRITES_PER_WRITER = 12


def _deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        },
    }  # fmt: skip


def _race(cluster: TestCluster, writers: list[tuple[str, str, dict[str, str], Any]]) -> list[tuple[int, str]]:
    """Run every writer's requests concurrently; returns the (status, body) of the failures."""

    def run(writer: tuple[str, str, dict[str, str], Any]) -> list[tuple[int, str]]:
        method, path, headers, make_body = writer
        failed = []
        for i in range(WRITES_PER_WRITER):
            status, body, _ = cluster.request(method, path, json.dumps(make_body(i)), headers)
            if status >= 300:
                failed.append((status, body.decode()[:300]))
        return failed

    with ThreadPoolExecutor(len(writers)) as pool:
        return [f for result in pool.map(run, writers) for f in result]


def test_patches_and_scale_updates_without_resource_version_never_conflict(cluster: TestCluster) -> None:
    status, _ = cluster.request_json("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "race"}})
    assert status == 201
    base = DEPLOY.format(ns="race")
    status, _ = cluster.request_json("POST", base, _deployment("web"))
    assert status == 201
    path = f"{base}/web"
    writers = [
        ("PATCH", f"{path}/scale", MERGE, lambda i: {"spec": {"replicas": i % 5 + 1}}),
        ("PUT", f"{path}/scale", {"Content-Type": "application/json", "Accept": "application/json"},
         lambda i: {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "race"},
                    "spec": {"replicas": i % 3 + 1}}),
        ("PATCH", path, STRATEGIC, lambda i: {"metadata": {"labels": {"strategic": str(i)}}}),
        ("PATCH", path, JSON_PATCH, lambda i: [{"op": "add", "path": "/metadata/annotations", "value": {"json": str(i)}}]),
        ("PATCH", f"{path}/status", MERGE, lambda i: {"status": {"observedGeneration": i}}),
        ("PATCH", f"{path}?fieldManager=racer", APPLY,
         lambda i: {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"applied": str(i)}}}),
    ]  # fmt: skip
    assert _race(cluster, writers) == []
    status, final = cluster.request_json("GET", path)
    assert final["metadata"]["labels"]["strategic"] == str(WRITES_PER_WRITER - 1)
    assert final["metadata"]["labels"]["applied"] == str(WRITES_PER_WRITER - 1)


def test_a_resource_version_the_client_sent_still_conflicts(cluster: TestCluster) -> None:
    status, _ = cluster.request_json("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "race-rv"}})
    assert status == 201
    base = DEPLOY.format(ns="race-rv")
    status, created = cluster.request_json("POST", base, _deployment("web"))
    assert status == 201
    stale = created["metadata"]["resourceVersion"]
    status, _, _ = cluster.request("PATCH", f"{base}/web", json.dumps({"metadata": {"labels": {"a": "1"}}}), MERGE)
    assert status == 200
    for path, body in (
        (f"{base}/web", {"metadata": {"resourceVersion": stale, "labels": {"a": "2"}}}),
        (f"{base}/web/scale", {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 3}}),
    ):
        status, raw, _ = cluster.request("PATCH", path, json.dumps(body), MERGE)
        assert status == 409, raw
        assert json.loads(raw)["reason"] == "Conflict"
    status, current = cluster.request_json("GET", f"{base}/web")
    assert current["metadata"]["labels"]["a"] == "1" and current["spec"]["replicas"] == 1


def test_kubectl_scale_while_status_writers_race(cluster: TestCluster) -> None:
    status, _ = cluster.request_json("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "race-kubectl"}})
    assert status == 201
    base = DEPLOY.format(ns="race-kubectl")
    status, _ = cluster.request_json("POST", base, _deployment("web"))
    assert status == 201
    status_writer = ("PATCH", f"{base}/web/status", MERGE, lambda i: {"status": {"observedGeneration": i}})

    def scale(replicas: int) -> tuple[int, str]:
        done = cluster.kubectl("scale", "deployment/web", f"--replicas={replicas}", "-n", "race-kubectl", check=False)
        return done.returncode, done.stdout + done.stderr

    with ThreadPoolExecutor(4) as pool:
        racing = [pool.submit(_race, cluster, [status_writer]) for _ in range(2)]
        scaled = list(pool.map(scale, (2, 3, 4, 5)))
        raced = [f.result() for f in racing]
    assert scaled == [(0, "deployment.apps/web scaled\n")] * 4
    assert raced == [[], []]
