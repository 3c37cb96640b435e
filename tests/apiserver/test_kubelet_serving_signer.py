"""The server's kubelet serving-certificate signer, asked nicely and attacked.

A joining agent writes a certificate request into its request Secret in kube-system; the
server signs it only for a registered node and only for that node's own name and addresses,
as a server-auth certificate. Asking for another node's address, for an unregistered node or
for the admin's identity gets a refusal (the reason in an annotation) and no certificate.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k3py.agent.kubelet.servingcert import certificate_request
from k3py.server.bootstrap.certs import tls_files
from k3py.util.kubelettls import (
    CERT_KEY,
    CSR_KEY,
    DENIED_ANNOTATION,
    SERVING_REQUEST_NAMESPACE,
    SERVING_REQUEST_TYPE,
    serving_request_name,
)
from tests.cluster import TestCluster

SECRETS = f"/api/v1/namespaces/{SERVING_REQUEST_NAMESPACE}/secrets"


def _node(cluster: TestCluster, name: str, ip: str) -> None:
    body = {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
    }  # fmt: skip
    status, created = cluster.request_json("POST", "/api/v1/nodes", body)
    assert status == 201, created


def _ask(cluster: TestCluster, node: str, csr_pem: bytes) -> None:
    body = {
        "apiVersion": "v1", "kind": "Secret", "type": SERVING_REQUEST_TYPE,
        "metadata": {"name": serving_request_name(node), "namespace": SERVING_REQUEST_NAMESPACE},
        "data": {CSR_KEY: base64.b64encode(csr_pem).decode()},
    }  # fmt: skip
    status, created = cluster.request_json("POST", SECRETS, body)
    assert status == 201, created


def _answer(cluster: TestCluster, node: str, timeout: float = 20) -> dict[str, Any]:
    """The request Secret once the signer has answered (certificate or refusal)."""
    deadline = time.monotonic() + timeout
    secret: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, secret = cluster.request_json("GET", f"{SECRETS}/{serving_request_name(node)}")
        assert status == 200, secret
        annotations = secret["metadata"].get("annotations") or {}
        if CERT_KEY in (secret.get("data") or {}) or DENIED_ANNOTATION in annotations:
            return secret
        time.sleep(0.1)
    raise AssertionError(f"the signer did not answer the request of {node}: {secret}")


def _refusal(cluster: TestCluster, node: str) -> str:
    secret = _answer(cluster, node)
    assert CERT_KEY not in (secret.get("data") or {}), "a refused request got a certificate"
    return str(secret["metadata"]["annotations"][DENIED_ANNOTATION])


def test_a_registered_node_gets_a_serving_certificate_for_its_names(cluster: TestCluster) -> None:
    _node(cluster, "signed-node", "192.0.2.21")
    key = ec.generate_private_key(ec.SECP256R1())
    _ask(cluster, "signed-node", certificate_request(key, "signed-node", ["192.0.2.21"]))
    secret = _answer(cluster, "signed-node")
    assert DENIED_ANNOTATION not in (secret["metadata"].get("annotations") or {})
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"][CERT_KEY]))
    ca = x509.load_pem_x509_certificate(tls_files(cluster.data_dir).ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:signed-node"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["signed-node"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.21"]
    # A serving certificate only: never a client credential for the API or a kubelet.
    usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_another_nodes_address_is_refused(cluster: TestCluster) -> None:
    _node(cluster, "victim-node", "192.0.2.31")
    _node(cluster, "greedy-node", "192.0.2.32")
    key = ec.generate_private_key(ec.SECP256R1())
    _ask(cluster, "greedy-node", certificate_request(key, "greedy-node", ["192.0.2.32", "192.0.2.31", "victim-node"]))
    reason = _refusal(cluster, "greedy-node")
    assert "192.0.2.31" in reason and "victim-node" in reason and "greedy-node does not have" in reason


def test_an_unregistered_node_is_refused(cluster: TestCluster) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    _ask(cluster, "ghost-node", certificate_request(key, "ghost-node", ["192.0.2.41"]))
    assert _refusal(cluster, "ghost-node") == "node ghost-node is not registered"


@pytest.mark.parametrize(
    ("label", "subject", "why"),
    [
        ("admin", [(NameOID.ORGANIZATION_NAME, "system:masters"), (NameOID.COMMON_NAME, "system:admin")],
         'the common name must be "system:node:<node name>"'),
        ("group", [(NameOID.ORGANIZATION_NAME, "system:masters"), (NameOID.COMMON_NAME, "system:node:admin-node")],
         'the organization must be exactly ["system:nodes"]'),
    ],
)  # fmt: skip
def test_requests_for_other_identities_are_refused(cluster: TestCluster, label: str, subject: list, why: str) -> None:
    node = f"{label}-node"
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in subject]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    _ask(cluster, node, csr.public_bytes(serialization.Encoding.PEM))
    assert _refusal(cluster, node) == why


def test_garbage_is_refused(cluster: TestCluster) -> None:
    _ask(cluster, "garbage-node", b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n")
    assert _refusal(cluster, "garbage-node").startswith("the request is not a PEM certificate request")
