"""Scheduler scoring seen through real kubectl on a real server with three simulated nodes.

Read the way a user would: ``kubectl get pods -o wide`` (its NODE column) and ``kubectl
describe pod`` (the ``Scheduled`` event). One cluster for the module; a namespace per test.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.cluster import TestCluster

NODES = ("simnode-1", "simnode-2", "simnode-3")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    with TestCluster(tmp_path_factory.mktemp("sched"), server_args=["--simulated-nodes", "3"]) as running:
        running.wait_for(lambda: running.kubectl("get", "nodes").stdout.count(" Ready ") == 3, what="3 Ready nodes")
        yield running


def pods_per_node(cluster: TestCluster, ns: str, app: str, replicas: int) -> Counter[str]:
    """Wait for ``replicas`` bound pods, then count them per NODE column of ``get pods -o wide``."""

    def placed() -> Counter[str] | None:
        out = cluster.kubectl("get", "pods", "-n", ns, "-l", f"app={app}", "-o", "wide", "--no-headers").stdout
        rows = [line.split() for line in out.splitlines() if line.strip()]
        # NAME READY STATUS RESTARTS AGE IP NODE NOMINATED-NODE READINESS-GATES
        nodes = [row[6] for row in rows if len(row) > 6 and row[6] != "<none>"]
        return Counter(nodes) if len(nodes) == replicas and len(rows) == replicas else None

    return cluster.wait_for(placed, timeout=60, what=f"{replicas} pods of {app} bound")


def test_deployment_replicas_spread_two_per_node(sim: TestCluster) -> None:
    sim.kubectl("create", "namespace", "spread")
    sim.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=6", "-n", "spread")
    assert pods_per_node(sim, "spread", "web", 6) == dict.fromkeys(NODES, 2)
    name = sim.kubectl("get", "pods", "-n", "spread", "-l", "app=web", "-o", "name").stdout.split()[0]
    pod = sim.kubectl_json("get", name, "-n", "spread")
    (cond,) = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert cond["status"] == "True"
    described = sim.wait_for(lambda: "Scheduled" in (o := sim.kubectl("describe", name, "-n", "spread").stdout) and o,
                             what="Scheduled event in describe")
    assert f"Successfully assigned spread/{name.split('/')[1]} to {pod['spec']['nodeName']}" in described


def test_preferred_node_affinity_outweighs_spreading(sim: TestCluster) -> None:
    # Weight 100 on simnode-3: NodeAffinity (x2) beats the owner spreading (x2) that would
    # otherwise give each node one pod, until simnode-3 holds all three.
    sim.kubectl("create", "namespace", "prefer")
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pinned", "namespace": "prefer"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "pinned"}},
            "template": {
                "metadata": {"labels": {"app": "pinned"}},
                "spec": {
                    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100, "preference": {"matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["simnode-3"]}]}}]}},
                    "containers": [{"name": "c", "image": "nginx"}],
                },
            },
        },
    }
    sim.kubectl("apply", "-f", "-", input=json.dumps(deployment))
    assert pods_per_node(sim, "prefer", "pinned", 3) == {"simnode-3": 3}
