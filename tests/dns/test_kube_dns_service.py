"""The kube-dns Service every cluster has from its first second, seen with kubectl, and the
--cluster-dns / --cluster-domain / --resolv-conf flags of ``k3py server`` and ``k3py agent``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster import TestCluster


def test_kube_dns_service_is_there_with_its_ports_and_the_node_local_annotation(cluster: TestCluster) -> None:
    svc = cluster.kubectl_json("get", "service", "kube-dns", "-n", "kube-system")
    assert svc["spec"]["clusterIP"] == "10.43.0.10" and svc["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    assert svc["metadata"]["annotations"]["k3py.io/node-local"] == "true"
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    listed = cluster.kubectl("get", "svc", "-n", "kube-system").stdout
    assert "kube-dns" in listed and "10.43.0.10" in listed and "53/UDP,53/TCP" in listed


def test_cluster_dns_flag_moves_the_service_and_a_taken_address_does_not_stop_the_server(
    make_cluster: Callable[..., TestCluster],
) -> None:
    moved = make_cluster("--cluster-dns", "10.43.0.53")
    assert moved.kubectl_json("get", "svc", "kube-dns", "-n", "kube-system")["spec"]["clusterIP"] == "10.43.0.53"
    # the address taken by another Service when kube-dns is (re)created: the server still starts
    moved.kubectl("delete", "service", "kube-dns", "-n", "kube-system")
    moved.kubectl("create", "service", "clusterip", "squatter", "--clusterip=10.43.0.53", "--tcp=80")
    moved.restart(kill=False)
    assert "NotFound" in moved.kubectl("get", "svc", "kube-dns", "-n", "kube-system", check=False).stderr
    assert "cannot create the kube-dns Service at 10.43.0.53" in moved.server_log(200)
    # once the address is free, the next start puts kube-dns back
    moved.kubectl("delete", "service", "squatter")
    moved.restart(kill=False)
    assert moved.kubectl_json("get", "svc", "kube-dns", "-n", "kube-system")["spec"]["clusterIP"] == "10.43.0.53"


@pytest.mark.parametrize(("flags", "message"), [
    (["--cluster-dns", "ten.43.0.10"], "--cluster-dns 'ten.43.0.10' is not an IP address"),
    (["--cluster-dns", "192.168.0.10"], "--cluster-dns 192.168.0.10 is not inside the service CIDR 10.43.0.0/16"),
    (["--cluster-domain", "Cluster_Local"], "--cluster-domain 'Cluster_Local'"),
    (["--resolv-conf", "/nonexistent/resolv.conf"], "--resolv-conf /nonexistent/resolv.conf is not a readable file"),
], ids=["dns-not-ip", "dns-outside-cidr", "bad-domain", "missing-resolv-conf"])
def test_bad_dns_flags_are_one_line_errors(tmp_path: Path, flags: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "k3py", "server", "--data-dir", str(tmp_path / "data"),
         "--write-kubeconfig", str(tmp_path / "k.yaml"), *flags],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_agent_has_the_dns_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "k3py", "agent", "--help"], capture_output=True, text=True,
                            timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    for flag in ("--cluster-dns", "--cluster-domain", "--resolv-conf"):
        assert flag in result.stdout
