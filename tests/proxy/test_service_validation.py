"""Services the proxy would have to refuse are refused by the API server first, in upstream's
words (422 with field causes), through the real kubectl: clashing and duplicate NodePorts,
ports and addresses out of range, unusable externalIPs, absurd affinity timeouts, a
healthCheckNodePort where none belongs — and the healthCheckNodePort the server allocates
for a LoadBalancer with externalTrafficPolicy Local."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster import TestCluster


def _apply(cluster: TestCluster, name: str, **spec: Any) -> tuple[int, str]:
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80}], **spec}}
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    return result.returncode, result.stderr.strip()


def _refused(cluster: TestCluster, name: str, **spec: Any) -> str:
    code, err = _apply(cluster, name, **spec)
    assert code != 0, f"{name} was accepted"
    assert f'The Service "{name}" is invalid' in err, err
    return err


def test_clashing_and_duplicate_node_ports(cluster: TestCluster) -> None:
    assert _apply(cluster, "first", type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}])[0] == 0
    err = _refused(cluster, "second", type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}])
    assert "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated" in err
    err = _refused(cluster, "twice", type="NodePort", ports=[{"name": "a", "port": 80, "nodePort": 30081},
                                                             {"name": "b", "port": 81, "nodePort": 30081}])
    assert "spec.ports[1].nodePort: Duplicate value: 30081" in err
    # The same number for TCP and UDP is two different ports.
    assert _apply(cluster, "dual", type="NodePort", ports=[
        {"name": "a", "port": 53, "protocol": "TCP", "nodePort": 30053},
        {"name": "b", "port": 53, "protocol": "UDP", "nodePort": 30053}])[0] == 0
    err = _refused(cluster, "low", type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 29999}])
    assert ("spec.ports[0].nodePort: Invalid value: 29999: provided port is not in the valid range. "
            "The range of valid ports is 30000-32767") in err


def test_ports_and_addresses_out_of_range(cluster: TestCluster) -> None:
    err = _refused(cluster, "big-port", ports=[{"name": "http", "port": 70000}])
    assert "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive" in err
    err = _refused(cluster, "bad-ip", clusterIP="10.43.0.999")
    assert 'Invalid value: "10.43.0.999": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)' in err
    err = _refused(cluster, "far-ip", clusterIP="10.99.0.5")
    assert "the provided IP (10.99.0.5) is not in the valid range. The range of valid IPs is 10.43.0.0/16" in err
    err = _refused(cluster, "ext-ip", externalIPs=["not-an-ip", "127.0.0.1", "0.0.0.0", "169.254.1.1"])
    assert 'spec.externalIPs[0]: Invalid value: "not-an-ip": must be a valid IP address' in err
    assert 'spec.externalIPs[1]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)' in err
    assert 'spec.externalIPs[2]: Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0, ::)' in err
    assert 'spec.externalIPs[3]: Invalid value: "169.254.1.1": may not be in the link-local range' in err


def test_session_affinity_timeouts(cluster: TestCluster) -> None:
    for timeout in (0, 86401):
        err = _refused(cluster, f"sticky-{timeout}", sessionAffinity="ClientIP",
                       sessionAffinityConfig={"clientIP": {"timeoutSeconds": timeout}})
        assert (f"spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: {timeout}: "
                "must be greater than 0 and less than 86400") in err
    assert _apply(cluster, "sticky", sessionAffinity="ClientIP",
                  sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86400}})[0] == 0


def test_health_check_node_port(cluster: TestCluster) -> None:
    err = _refused(cluster, "hc-misplaced", type="NodePort", healthCheckNodePort=31000)
    assert ("spec.healthCheckNodePort: Invalid value: 31000: may only be set when `type` is 'LoadBalancer' "
            "and `externalTrafficPolicy` is 'Local'") in err
    assert _apply(cluster, "hc", type="LoadBalancer", externalTrafficPolicy="Local")[0] == 0
    spec = cluster.kubectl_json("get", "service", "hc")["spec"]
    health = spec["healthCheckNodePort"]
    assert 30000 <= health <= 32767 and health != spec["ports"][0]["nodePort"]
    # Nobody else gets it while it is held...
    err = _refused(cluster, "hc-thief", type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": health}])
    assert f"Invalid value: {health}: provided port is already allocated" in err
    # ... and it goes when the Service stops needing it.
    cluster.kubectl("patch", "service", "hc", "-p", json.dumps({"spec": {"externalTrafficPolicy": "Cluster"}}))
    assert "healthCheckNodePort" not in cluster.kubectl_json("get", "service", "hc")["spec"]
    assert _apply(cluster, "hc-thief", type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": health}])[0] == 0
