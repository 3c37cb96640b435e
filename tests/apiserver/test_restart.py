"""A server restarted on the same data dir: same CA, same objects, old watches told to re-list."""

from __future__ import annotations

import json
import time

import yaml

from tests.apiserver.test_rest_semantics import _watch_lines
from tests.cluster import TestCluster


def _ca(cluster: TestCluster) -> str:
    return yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["certificate-authority-data"]


def test_restart_reuses_ca_keeps_objects_and_expires_old_watches(cluster: TestCluster) -> None:
    ca_before = _ca(cluster)
    cert_dir = cluster.data_dir / "tls"
    assert (cert_dir / "server-ca.crt").exists()
    assert oct(cluster.kubeconfig.stat().st_mode & 0o777) == "0o600"
    status, created = cluster.request_json(
        "POST", "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"a": "b"}},
    )  # fmt: skip
    assert status == 201
    old_rv = created["metadata"]["resourceVersion"]

    cluster.stop()
    started = time.monotonic()
    cluster.start()
    assert time.monotonic() - started < 10
    assert _ca(cluster) == ca_before
    status, kept = cluster.request_json("GET", "/api/v1/namespaces/default/configmaps/keep")
    assert status == 200 and kept["data"] == {"a": "b"}
    assert kept["metadata"]["uid"] == created["metadata"]["uid"]

    events = _watch_lines(cluster, f"/api/v1/configmaps?watch=true&resourceVersion={int(old_rv) - 1}", 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    status, body, _ = cluster.request("GET", "/readyz")
    assert status == 200 and json.loads(json.dumps(body.decode())) == "ok"
