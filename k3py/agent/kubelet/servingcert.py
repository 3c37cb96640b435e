"""The serving certificate of a joining kubelet, signed by the cluster's CA on request.

The API server only talks to a kubelet whose certificate chains to the cluster CA and names the
node (``k3py/util/kubelettls.py``), so a ``k3py agent`` cannot sign its own, as upstream
kubelets without ``serverTLSBootstrap`` do. Instead it makes a key that never leaves the node,
writes a certificate request for its name and addresses into its request Secret and waits for
the server's signer to answer with the certificate (or a refusal, logged, then asked again).
The pair is kept under ``<data-dir>/tls`` (0600) and reused across starts while it is still
signed by the pinned CA, covers the wanted names and has more than 30 days left.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k3py.api.errors import ApiError
from k3py.client.interface import Client, Resource
from k3py.util.kubelettls import (
    CERT_KEY,
    CSR_KEY,
    DENIED_ANNOTATION,
    NODE_LABEL,
    NODES_GROUP,
    SERVING_REQUEST_NAMESPACE,
    SERVING_REQUEST_TYPE,
    node_user,
    serving_request_name,
)
from k3py.util.private import private_dir, write_private

log = logging.getLogger("k3py.kubelet.servingcert")

SECRETS = Resource("", "v1", "secrets", "Secret")
RENEW_BEFORE = datetime.timedelta(days=30)
POLL_FIRST, POLL_MAX = 0.1, 2.0
RETRY_AFTER_REFUSAL = 15.0
CERT_FILE, KEY_FILE = "serving-kubelet.crt", "serving-kubelet.key"


class ServingCertificateError(RuntimeError):
    """The server answered the request with something this kubelet cannot use."""


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v).lower() for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def _normalised(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        try:
            value = str(ipaddress.ip_address(name))
        except ValueError:
            value = name.lower()
        if value and value not in out:
            out.append(value)
    return out


def usable(cert: x509.Certificate, key: Any, ca: x509.Certificate, names: list[str]) -> str | None:
    """Why ``cert`` cannot serve this node (None when it can)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return "is not signed by the cluster CA"
    if cert.public_key() != key.public_key():
        return "is not the certificate of this key"
    if cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < RENEW_BEFORE:
        return "expires within 30 days"
    missing = set(_normalised(names)) - _sans(cert)
    if missing:
        return f"does not name {', '.join(sorted(missing))}"
    return None


def _load_pair(tls_dir: Path) -> tuple[x509.Certificate, Any] | None:
    try:
        cert = x509.load_pem_x509_certificate((tls_dir / CERT_FILE).read_bytes())
        key = serialization.load_pem_private_key((tls_dir / KEY_FILE).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return cert, key


def _current(tls_dir: Path, ca_file: Path, names: list[str]) -> tuple[x509.Certificate, str | None]:
    """The pinned CA, and why the kept pair cannot be used (None when it can)."""
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    private_dir(tls_dir)
    pair = _load_pair(tls_dir)
    if pair is None:
        return ca, "is missing"
    return ca, usable(pair[0], pair[1], ca, names)


def certificate_request(key: ec.EllipticCurvePrivateKey, node_name: str, names: list[str]) -> bytes:
    """The PEM request upstream's kubelet-serving signer expects: CN system:node:<node>,
    O system:nodes, the node's names and addresses as SANs."""
    sans: list[x509.GeneralName] = []
    for name in _normalised([node_name, *names]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, node_user(node_name)),
        ]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


async def _write_request(client: Client, node_name: str, csr_pem: bytes) -> None:
    """Create the node's request Secret, or replace its content (and any earlier answer)."""
    name = serving_request_name(node_name)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": SERVING_REQUEST_NAMESPACE, "labels": {NODE_LABEL: node_name}},
        "type": SERVING_REQUEST_TYPE,
        "data": {CSR_KEY: base64.b64encode(csr_pem).decode()},
    }
    try:
        current = await client.get(SECRETS, name, SERVING_REQUEST_NAMESPACE)
    except ApiError as e:
        if e.code != 404:
            raise
        await client.create(SECRETS, body, SERVING_REQUEST_NAMESPACE)
        return
    meta = current.get("metadata") or {}
    body["metadata"]["resourceVersion"] = meta.get("resourceVersion")
    await client.update(SECRETS, body)


async def _await_answer(client: Client, node_name: str, key: Any, stop: asyncio.Event) -> x509.Certificate | str:
    """The signed certificate for ``key``, or the signer's reason for refusing."""
    name = serving_request_name(node_name)
    delay = POLL_FIRST
    while not stop.is_set():
        try:
            secret = await client.get(SECRETS, name, SERVING_REQUEST_NAMESPACE)
        except ApiError as e:
            if e.code != 404:
                raise
            return "the request Secret was deleted"
        reason = ((secret.get("metadata") or {}).get("annotations") or {}).get(DENIED_ANNOTATION)
        if reason:
            return str(reason)
        pem = (secret.get("data") or {}).get(CERT_KEY)
        if pem:
            cert = x509.load_pem_x509_certificate(base64.b64decode(pem))
            if cert.public_key() == key.public_key():
                return cert
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
        delay = min(delay * 2, POLL_MAX)
    raise asyncio.CancelledError


async def ensure_serving_certificate(
    client: Client, node_name: str, names: list[str], tls_dir: Path, ca_file: Path, stop: asyncio.Event
) -> tuple[Path, Path]:
    """The kubelet's serving certificate and key files: reused, or requested until signed."""
    ca, why = await asyncio.to_thread(_current, tls_dir, ca_file, [node_name, *names])
    if why is None:
        return tls_dir / CERT_FILE, tls_dir / KEY_FILE
    log.info("requesting a serving certificate from the server: the current one %s", why)
    while True:
        key = ec.generate_private_key(ec.SECP256R1())
        await _write_request(client, node_name, certificate_request(key, node_name, names))
        answer = await _await_answer(client, node_name, key, stop)
        if isinstance(answer, str):
            log.error(
                "the server refused this node's serving certificate request: %s; asking again in %.0fs",
                answer, RETRY_AFTER_REFUSAL,
            )  # fmt: skip
            try:
                await asyncio.wait_for(stop.wait(), RETRY_AFTER_REFUSAL)
            except TimeoutError:
                continue
            raise asyncio.CancelledError
        why = usable(answer, key, ca, [node_name, *names])
        if why is not None:
            raise ServingCertificateError(f"the server's certificate for this node is unusable: it {why}")
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        await asyncio.to_thread(write_private, tls_dir / KEY_FILE, key_pem)
        await asyncio.to_thread(write_private, tls_dir / CERT_FILE, answer.public_bytes(serialization.Encoding.PEM))
        log.info("got a serving certificate for %s signed by the cluster CA", ", ".join(_normalised([node_name, *names])))
        return tls_dir / CERT_FILE, tls_dir / KEY_FILE
