"""Kubelet serving certificates: signed by the cluster CA, each for one node and its addresses.

The API server trusts a kubelet only when its serving certificate chains to the cluster CA and
names the node (see ``k3py/util/kubelettls.py`` for the whole contract). This module issues
them:

- ``sign_kubelet_serving`` signs a node's public key as upstream's ``kubernetes.io/kubelet-
  serving`` signer does: CN ``system:node:<node>``, O ``system:nodes``, server auth only, the
  node's DNS names and IPs as SANs. The in-process kubelet of ``k3py server`` (``cli/wiring``)
  is signed with it directly.
- ``KubeletServingSigner`` serves joining agents: it watches the request Secrets in
  ``kube-system`` and signs a request only when it passes upstream's rules for that signer
  (``check_request``: subject exactly the node's, only DNS/IP SANs, at least one, an EC P-256+
  or RSA 2048+ key, a valid self-signature) *and* every name it asks for belongs to that Node
  object (its name, its addresses). A refused request gets the reason in an annotation, which
  the agent logs. A certificate once written is left alone until the request changes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from k3py.api.errors import ApiError
from k3py.client.informer import Informer, Obj, object_key, split_key
from k3py.client.interface import NODES, Client, Resource
from k3py.client.workqueue import ShutDown, WorkQueue
from k3py.server.bootstrap.certs import cert_pem, sign_leaf
from k3py.util.kubelettls import (
    CERT_KEY,
    CSR_KEY,
    DENIED_ANNOTATION,
    NODE_USER_PREFIX,
    NODES_GROUP,
    SERVING_REQUEST_NAMESPACE,
    SERVING_REQUEST_TYPE,
)

log = logging.getLogger("k3py.kubelet-serving-signer")

SECRETS = Resource("", "v1", "secrets", "Secret")
MAX_CSR_BYTES = 16 * 1024
# Node address types whose values may appear as DNS SANs, and as IP SANs.
DNS_ADDRESS_TYPES = ("Hostname", "InternalDNS", "ExternalDNS")
IP_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


class RequestRefused(ValueError):
    """A serving-certificate request that will not be signed; the message says why."""


def load_ca(ca_cert: Path, ca_key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key} is not an ECDSA key")
    return cert, key


def sign_kubelet_serving(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: Any,
    node_name: str,
    names: list[str],
) -> x509.Certificate:
    """A serving certificate for ``node_name``'s kubelet: the node's name first among the SANs."""
    return sign_leaf(
        ca_cert, ca_key, public_key, NODE_USER_PREFIX + node_name,
        organizations=[NODES_GROUP], sans=list(dict.fromkeys([node_name, *names])), server=True,
    )  # fmt: skip


def node_names(node: Obj) -> tuple[set[str], set[str]]:
    """(DNS names, IPs) a node may have in its serving certificate: its name and addresses."""
    dns = {str(node.get("metadata", {}).get("name", "")).lower()}
    ips: set[str] = set()
    for address in (node.get("status") or {}).get("addresses") or ():
        if not isinstance(address, dict) or not address.get("address"):
            continue
        value = str(address["address"])
        if address.get("type") in DNS_ADDRESS_TYPES:
            dns.add(value.lower())
        elif address.get("type") in IP_ADDRESS_TYPES:
            with contextlib.suppress(ValueError):
                ips.add(str(ipaddress.ip_address(value)))
    return dns, ips


def parse_request(pem: bytes) -> x509.CertificateSigningRequest:
    if len(pem) > MAX_CSR_BYTES:
        raise RequestRefused(f"the request is larger than {MAX_CSR_BYTES} bytes")
    try:
        return x509.load_pem_x509_csr(pem)
    except ValueError as e:
        raise RequestRefused(f"the request is not a PEM certificate request: {e}") from None


def check_request(csr: x509.CertificateSigningRequest) -> tuple[str, list[str], list[str]]:
    """(node name, DNS SANs, IP SANs) of a request that meets the kubelet-serving rules."""
    if not csr.is_signature_valid:
        raise RequestRefused("the request's signature does not match its key")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < 256:
            raise RequestRefused("an EC key must be P-256 or larger")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise RequestRefused("an RSA key must have 2048 bits or more")
    else:
        raise RequestRefused("only EC and RSA keys are signed")
    common_names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    organizations = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if len(common_names) != 1 or not str(common_names[0]).startswith(NODE_USER_PREFIX):
        raise RequestRefused(f'the common name must be "{NODE_USER_PREFIX}<node name>"')
    if organizations != [NODES_GROUP]:
        raise RequestRefused(f'the organization must be exactly ["{NODES_GROUP}"]')
    node_name = str(common_names[0])[len(NODE_USER_PREFIX):]
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise RequestRefused("the request names no DNS name or IP address") from None
    dns = [str(v).lower() for v in sans.get_values_for_type(x509.DNSName)]
    ips = [str(v) for v in sans.get_values_for_type(x509.IPAddress)]
    if len(dns) + len(ips) != len(list(sans)):
        raise RequestRefused("only DNS names and IP addresses may be requested (no email or URI)")
    if not dns and not ips:
        raise RequestRefused("the request names no DNS name or IP address")
    return node_name, dns, ips


def check_against_node(node_name: str, dns: list[str], ips: list[str], node: Obj) -> None:
    """Every requested name must be the node's own (its name or one of its addresses)."""
    allowed_dns, allowed_ips = node_names(node)
    foreign = [n for n in dns if n not in allowed_dns] + [ip for ip in ips if ip not in allowed_ips]
    if foreign:
        raise RequestRefused(
            f"node {node_name} does not have the name(s) or address(es) {', '.join(foreign)}"
        )


def _data(secret: Obj, key: str) -> bytes | None:
    value = (secret.get("data") or {}).get(key)
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


class KubeletServingSigner:
    """Signs the kubelet serving-certificate requests of joining agents; see the module docstring."""

    def __init__(self, client: Client, ca_cert: Path, ca_key: Path) -> None:
        self.client = client
        self.ca_cert, self.ca_key = load_ca(ca_cert, ca_key)
        self.informer = Informer(
            client, SECRETS, namespace=SERVING_REQUEST_NAMESPACE,
            field_selector=f"type={SERVING_REQUEST_TYPE}",
        )  # fmt: skip
        self.queue = WorkQueue("kubelet-serving-signer")
        enqueue = self.queue.add
        self.informer.add_handler(
            on_add=lambda obj: enqueue(object_key(obj)),
            on_update=lambda _old, new: enqueue(object_key(new)),
        )

    async def run(self) -> None:
        informer = asyncio.create_task(self.informer.run(), name="kubelet-serving-requests")
        try:
            await self.informer.wait_synced()
            while True:
                try:
                    key = await self.queue.get()
                except ShutDown:
                    return
                try:
                    await self.reconcile(str(key))
                    self.queue.forget(key)
                except ApiError as e:
                    log.info("signing %s failed: %s; retrying", key, e.message)
                    self.queue.add_rate_limited(key)
                finally:
                    self.queue.done(key)
        finally:
            self.queue.shutdown()
            informer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await informer

    async def reconcile(self, key: str) -> None:
        secret = self.informer.cache.get(key)
        if secret is None or secret.get("type") != SERVING_REQUEST_TYPE:
            return
        if DENIED_ANNOTATION in ((secret.get("metadata") or {}).get("annotations") or {}):
            return  # refused; the agent writes a new request to try again
        pem = _data(secret, CSR_KEY)
        if pem is None:
            await self._deny(secret, f"no {CSR_KEY} in the request")
            return
        try:
            csr = parse_request(pem)
            node_name, dns, ips = check_request(csr)
        except RequestRefused as e:
            await self._deny(secret, str(e))
            return
        if self._already_signed(secret, csr):
            return
        try:
            node = await self.client.get(NODES, node_name)
        except ApiError as e:
            if e.code != 404:
                raise
            await self._deny(secret, f"node {node_name} is not registered")
            return
        try:
            check_against_node(node_name, dns, ips, node)
        except RequestRefused as e:
            await self._deny(secret, str(e))
            return
        cert = sign_kubelet_serving(self.ca_cert, self.ca_key, csr.public_key(), node_name, [*dns, *ips])
        updated = {**secret, "data": {**(secret.get("data") or {}), CERT_KEY: base64.b64encode(cert_pem(cert)).decode()}}
        await self.client.update(SECRETS, updated)
        log.info("signed the kubelet serving certificate of node %s for %s", node_name, ", ".join([*dns, *ips]))

    def _already_signed(self, secret: Obj, csr: x509.CertificateSigningRequest) -> bool:
        pem = _data(secret, CERT_KEY)
        if pem is None:
            return False
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return False
        return cert.issuer == self.ca_cert.subject and cert.public_key() == csr.public_key()

    async def _deny(self, secret: Obj, reason: str) -> None:
        meta = dict(secret.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), DENIED_ANNOTATION: reason}
        data = {k: v for k, v in (secret.get("data") or {}).items() if k != CERT_KEY}
        await self.client.update(SECRETS, {**secret, "metadata": meta, "data": data})
        namespace, name = split_key(object_key(secret))
        log.warning("refused the kubelet serving certificate request %s/%s: %s", namespace, name, reason)
