"""kubectl logs through the API server to a node's kubelet streaming server.

The streaming server is the real one (k3py.agent.streaming) with the host-process backend its
own tests use, listening inside the cluster's network namespace; the node that hosts the pod
points at it, and the API server authenticates to it with its kubelet-client certificate (the
streaming server's serving certificate is signed by the cluster CA for that node).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from k3py.agent.streaming.server import StreamingServer
from k3py.server.bootstrap.certs import load_or_create_ca, tls_files
from k3py.server.bootstrap.kubeletserving import sign_kubelet_serving
from k3py.util.kubelettls import KUBELET_CLIENT_CN
from tests.agent.test_streaming_kubectl import CONTAINER, POD, HostProcessBackend
from tests.cluster import TestCluster

KUBELET_PORT = 10250
NODE = "logs-node"


@pytest.fixture
def kubelet(cluster: TestCluster, tmp_path: Path) -> Iterator[int]:
    """A streaming server on 127.0.0.1:10250 inside the cluster's network namespace."""
    ca_cert, ca_key = load_or_create_ca(tls_files(cluster.data_dir))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_kubelet_serving(ca_cert, ca_key, key.public_key(), NODE, ["127.0.0.1"])
    (tmp_path / "k.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    started = threading.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []
    stop_box: list[asyncio.Event] = []

    async def serve() -> None:
        server = StreamingServer(
            HostProcessBackend(), cert_file=tmp_path / "k.crt", key_file=tmp_path / "k.key",
            client_ca_file=tls_files(cluster.data_dir).ca_cert, allowed_common_names=[KUBELET_CLIENT_CN],
        )  # fmt: skip
        await server.start("127.0.0.1", KUBELET_PORT)
        stop = asyncio.Event()
        loop_box.append(asyncio.get_running_loop())
        stop_box.append(stop)
        started.set()
        await stop.wait()
        await server.stop()

    def spawn() -> threading.Thread:
        # A thread started from a thread inside the namespace lives in it too.
        thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
        thread.start()
        return thread

    thread = cluster.in_netns(spawn)
    assert started.wait(10), "the streaming server did not start"
    yield KUBELET_PORT
    loop_box[0].call_soon_threadsafe(stop_box[0].set)
    thread.join(10)


def test_kubectl_logs_reaches_the_kubelet(cluster: TestCluster, kubelet: int) -> None:
    node = {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet}}},
    }  # fmt: skip
    status, body = cluster.request_json("POST", "/api/v1/nodes", node)
    assert status == 201, body
    cluster.kubectl("create", "namespace", "logs")
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD},
        "spec": {"nodeName": NODE, "containers": [{"name": CONTAINER, "image": "busybox"}]},
    }  # fmt: skip
    status, body = cluster.request_json("POST", "/api/v1/namespaces/logs/pods", pod)
    assert status == 201, body
    out = cluster.kubectl("logs", POD, "-n", "logs", "--tail=3").stdout
    assert out.splitlines() == [f"{CONTAINER} log line {n}" for n in (7, 8, 9)]
    wrong = cluster.kubectl("logs", POD, "-n", "logs", "-c", "nope", check=False)
    assert wrong.returncode == 1 and "container nope is not valid for pod x" in wrong.stderr
