"""Kubelet TLS, attacked: who the API server hands a pod's logs and exec streams to, and who a
kubelet lets in.

Impostors: a TLS server in the cluster's test host stands where a node's kubelet should be (a
Node object points at it) and records every connection and every byte it receives after the
handshake. With a self-signed certificate, with a certificate the cluster CA signed for another
node, or for the right node at another address, it must get no request at all — not even the
request line — while kubectl gets a clear error. A positive control with the right certificate
shows the impostor would have seen the request.

The real kubelet (the server's in-process agent): the cluster admin's certificate — the
credential the API server used to present to kubelets — is refused with a 403 Status, so is no
certificate at all and a serving certificate signed by the same CA; ``kubectl logs`` and
``kubectl exec`` keep working through the API server.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k3py.server.bootstrap.certs import load_or_create_ca, tls_files
from k3py.server.bootstrap.kubeletserving import sign_kubelet_serving
from tests.cluster import TestCluster
from tests.kubelet.conftest import busybox_archive, kubelet_client_context

IMPOSTOR_NODE = "impostor-node"


def _pem_pair(tmp: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def self_signed(tmp: Path, names: list[str]) -> tuple[Path, Path]:
    """What a kubelet without the cluster's CA (or a pod pretending to be one) would serve."""
    import datetime
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{names[0]}")])
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return _pem_pair(tmp, "self-signed", cert, key)


def cluster_signed(cluster: TestCluster, tmp: Path, node: str, addresses: list[str]) -> tuple[Path, Path]:
    """A serving certificate the cluster CA signed for ``node`` at ``addresses``."""
    ca_cert, ca_key = load_or_create_ca(tls_files(cluster.data_dir))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_kubelet_serving(ca_cert, ca_key, key.public_key(), node, addresses)
    return _pem_pair(tmp, f"signed-{node}-{'-'.join(addresses)}", cert, key)


@dataclass
class Impostor:
    """A TLS server listening on 127.0.0.1 inside the cluster's test host."""

    port: int
    connections: int = 0
    handshakes: int = 0
    received: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request_bytes(self) -> bytes:
        with self.lock:
            return b"".join(self.received)


@contextlib.contextmanager
def impostor(cluster: TestCluster, cert: Path, key: Path) -> Iterator[Impostor]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    # The listening socket is made inside the test host, so it lives there.
    listener: socket.socket = cluster.in_netns(lambda: socket.create_server(("127.0.0.1", 0)))
    listener.settimeout(0.2)
    fake = Impostor(port=listener.getsockname()[1])
    done = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                tls = context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate during the handshake
            with fake.lock:
                fake.handshakes += 1
            with tls:
                while True:
                    try:
                        data = tls.recv(65536)
                    except (ssl.SSLError, OSError):
                        return
                    if not data:
                        return
                    with fake.lock:
                        fake.received.append(data)
                    if b"\r\n\r\n" in b"".join(fake.received):
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nfrom-fake\n")
                        return

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with fake.lock:
                fake.connections += 1
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        done.set()
        thread.join(5)
        listener.close()


def _point_node_at(cluster: TestCluster, node: str, port: int) -> None:
    """A Node whose kubelet is at 127.0.0.1:port, and a pod bound to it."""
    cluster.kubectl("delete", "node", node, "--ignore-not-found", "--wait=false")
    body = {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}},
    }  # fmt: skip
    status, created = cluster.request_json("POST", "/api/v1/nodes", body)
    assert status == 201, created
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim"},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
    }  # fmt: skip
    status, created = cluster.request_json("POST", "/api/v1/namespaces/default/pods", pod)
    assert status in (201, 409), created


@pytest.fixture
def victim(cluster: TestCluster) -> Iterator[Callable[[int], None]]:
    yield lambda port: _point_node_at(cluster, IMPOSTOR_NODE, port)
    cluster.kubectl("delete", "pod", "victim", "--ignore-not-found", "--grace-period=0", "--force", check=False)
    cluster.kubectl("delete", "node", IMPOSTOR_NODE, "--ignore-not-found", check=False)


def _assert_refused(cluster: TestCluster, fake: Impostor, needle: str) -> None:
    logs = cluster.kubectl("logs", "victim", check=False)
    assert logs.returncode != 0, logs.stdout
    assert needle in logs.stderr, logs.stderr
    execed = cluster.kubectl("exec", "victim", "--", "cat", "/etc/shadow", check=False)
    assert execed.returncode != 0, execed.stdout
    assert needle in execed.stderr, execed.stderr
    # The API server did dial the impostor (twice)...
    with fake.lock:
        assert fake.connections >= 2, fake
    # ...and wrote nothing on the connection: no request line, no headers, no upgrade.
    assert fake.request_bytes() == b""


def test_a_self_signed_kubelet_gets_no_request(cluster: TestCluster, victim: Callable[[int], None], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, [IMPOSTOR_NODE, "127.0.0.1"])
    with impostor(cluster, cert, key) as fake:
        victim(fake.port)
        _assert_refused(cluster, fake, "failed to verify the certificate")
        assert fake.handshakes == 0


def test_a_certificate_of_another_node_is_refused(cluster: TestCluster, victim: Callable[[int], None], tmp_path: Path) -> None:
    # Signed by the cluster CA, valid for the address dialled — but issued to another node.
    cert, key = cluster_signed(cluster, tmp_path, "some-other-node", ["127.0.0.1"])
    with impostor(cluster, cert, key) as fake:
        victim(fake.port)
        _assert_refused(cluster, fake, f'not valid for node "{IMPOSTOR_NODE}"')


def test_a_certificate_for_another_address_is_refused(cluster: TestCluster, victim: Callable[[int], None], tmp_path: Path) -> None:
    # The right node's name, signed by the cluster CA, but not for the address dialled.
    cert, key = cluster_signed(cluster, tmp_path, IMPOSTOR_NODE, ["192.0.2.77"])
    with impostor(cluster, cert, key) as fake:
        victim(fake.port)
        _assert_refused(cluster, fake, "failed to verify the certificate")


def test_the_right_certificate_gets_the_request(cluster: TestCluster, victim: Callable[[int], None], tmp_path: Path) -> None:
    """The control: the same harness with the node's own certificate sees the request, so the
    tests above would notice a request if one were sent."""
    cert, key = cluster_signed(cluster, tmp_path, IMPOSTOR_NODE, ["127.0.0.1"])
    with impostor(cluster, cert, key) as fake:
        victim(fake.port)
        logs = cluster.kubectl("logs", "victim")
        assert logs.stdout == "from-fake\n"
        assert fake.request_bytes().startswith(b"GET /containerLogs/default/victim/main HTTP/1.1\r\n")


# -- the real kubelet -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    base = tmp_path_factory.mktemp("kubelet-tls")
    from k3py.runtime.archive import import_archive
    from k3py.runtime.images import ImageStore

    import_archive(ImageStore(base / "agent" / "runtime" / "images"), busybox_archive())
    with TestCluster(base, agent=True) as running:
        running.kubectl(
            "run", "talker", "--image=busybox", "--image-pull-policy=IfNotPresent", "--",
            "sh", "-c", "echo hello-from-talker; exec sleep 3600",
        )  # fmt: skip

        def running_pod() -> bool:
            result = running.kubectl("get", "pod", "talker", "-o", "json", check=False)
            return result.returncode == 0 and json.loads(result.stdout)["status"].get("phase") == "Running"

        running.wait_for(running_pod, timeout=90, interval=0.2, what=f"pod talker Running\n{running.server_log()}")
        yield running


def _kubelet_get(cluster: TestCluster, context: ssl.SSLContext, path: str) -> tuple[int, bytes]:
    def do() -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", 10250, context=context, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    return cluster.in_netns(do)


def _verifying_context(cluster: TestCluster) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files(cluster.data_dir).ca_cert))


def test_the_kubelet_refuses_the_admin_certificate(node_cluster: TestCluster) -> None:
    files = tls_files(node_cluster.data_dir)
    admin = _verifying_context(node_cluster)
    admin.load_cert_chain(str(files.admin_cert), str(files.admin_key))
    code, body = _kubelet_get(node_cluster, admin, "/containerLogs/default/talker/talker")
    assert code == 403, body
    status = json.loads(body)
    assert status["kind"] == "Status" and status["reason"] == "Forbidden"
    assert 'User "system:admin" cannot use the kubelet streaming API' in status["message"]
    assert b"hello-from-talker" not in body
    # The API server's own identity is let in (and the kubelet's certificate verified).
    code, body = _kubelet_get(node_cluster, kubelet_client_context(node_cluster), "/containerLogs/default/talker/talker")
    assert code == 200 and body == b"hello-from-talker\n"


def test_the_kubelet_refuses_clients_without_a_client_certificate(node_cluster: TestCluster, tmp_path: Path) -> None:
    # No certificate at all: the handshake fails.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _kubelet_get(node_cluster, _verifying_context(node_cluster), "/containerLogs/default/talker/talker")
    # A serving certificate signed by the same CA, for this very node, is no client credential.
    node = node_cluster.kubectl_json("get", "nodes")["items"][0]["metadata"]["name"]
    cert, key = cluster_signed(node_cluster, tmp_path, node, ["127.0.0.1"])
    context = _verifying_context(node_cluster)
    context.load_cert_chain(str(cert), str(key))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _kubelet_get(node_cluster, context, "/containerLogs/default/talker/talker")


def test_the_kubelet_serves_a_certificate_for_its_node(node_cluster: TestCluster) -> None:
    node = node_cluster.kubectl_json("get", "nodes")["items"][0]
    name = node["metadata"]["name"]
    ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    context = kubelet_client_context(node_cluster)  # verifies chain and the address dialled

    def peer() -> dict:
        with socket.create_connection((ip, 10250), timeout=10) as raw, context.wrap_socket(raw, server_hostname=ip) as tls:
            return tls.getpeercert()

    cert = node_cluster.in_netns(peer)
    sans = [value for _kind, value in cert["subjectAltName"]]
    assert sans[0] == name and ip in sans
    assert "localhost" not in sans
    assert dict(rdn[0] for rdn in cert["subject"])["commonName"] == f"system:node:{name}"


def test_kubectl_logs_and_exec_keep_working(node_cluster: TestCluster) -> None:
    assert node_cluster.kubectl("logs", "talker").stdout == "hello-from-talker\n"
    result = node_cluster.kubectl("exec", "talker", "--", "sh", "-c", "echo exec-ok")
    assert result.stdout == "exec-ok\n"
