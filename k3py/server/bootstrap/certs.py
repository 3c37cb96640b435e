"""The cluster CA and the certificates signed by it, kept under ``<data-dir>/tls``.

On first start the server makes a self-signed CA (ECDSA P-256: fast to generate and to
handshake, which keeps API start-up well under a second), then a serving certificate for the
API server, a client certificate for the admin kubeconfig and the API server's client
certificate for kubelets (CN ``kube-apiserver-kubelet-client``, as kubeadm names it): the only
identity a kubelet's streaming server accepts, so the admin credential is never presented to a
kubelet. Later starts reuse the CA and the client certificates; the serving certificate is
re-issued whenever the wanted SANs change (a new ``--tls-san`` or host address), so clients
that pinned the CA keep trusting the server. The folder is 0700 and every file in it 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes as CertificatePublicKey,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k3py.util.private import private_dir, write_private

CA_VALIDITY = datetime.timedelta(days=3650)
# The API server's identity towards kubelets (kubeadm's apiserver-kubelet-client certificate).
KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"
LEAF_VALIDITY = datetime.timedelta(days=365)

# Names every serving certificate carries, as in k3s: the in-cluster service names and the
# first address of the service CIDR (the `kubernetes` Service's ClusterIP).
DEFAULT_SANS = (
    "localhost",
    "127.0.0.1",
    "::1",
    "10.43.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the PEM files one server uses."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    kubelet_client_cert: Path  # the API server's client certificate towards kubelets
    kubelet_client_key: Path


def tls_files(data_dir: Path) -> TLSFiles:
    tls = data_dir / "tls"
    return TLSFiles(
        ca_cert=tls / "server-ca.crt",
        ca_key=tls / "server-ca.key",
        serving_cert=tls / "serving-kube-apiserver.crt",
        serving_key=tls / "serving-kube-apiserver.key",
        admin_cert=tls / "client-admin.crt",
        admin_key=tls / "client-admin.key",
        kubelet_client_cert=tls / "client-kube-apiserver.crt",
        kubelet_client_key=tls / "client-kube-apiserver.key",
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def load_or_create_ca(files: TLSFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if files.ca_cert.exists() and files.ca_key.exists():
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey), "CA key must be ECDSA"
        return cert, key
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"k3py-server-ca@{int(_now().timestamp())}")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(files.ca_key, key_pem(key))
    write_private(files.ca_cert, cert_pem(cert))
    return cert, key


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in names:
        name = name.strip()
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def host_names_and_addresses() -> list[str]:
    """The host name and the addresses it resolves to, without touching the network."""
    names = [socket.gethostname()]
    try:
        for info in socket.getaddrinfo(names[0], None, proto=socket.IPPROTO_TCP):
            names.append(str(info[4][0]).split("%")[0])
    except OSError:
        pass
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for addr in addrs:
                if addr.family in (socket.AF_INET, socket.AF_INET6):
                    names.append(addr.address.split("%")[0])
    except Exception:  # psutil is optional here; the host name alone still works
        pass
    return names


def issue_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    organizations: Iterable[str] = (),
    sans: Iterable[str] = (),
    server: bool = False,
    client: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key and its certificate, signed by the CA."""
    key = _new_key()
    cert = sign_leaf(
        ca_cert, ca_key, key.public_key(), common_name,
        organizations=organizations, sans=sans, server=server, client=client,
    )  # fmt: skip
    return cert, key


def sign_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: CertificatePublicKey,
    common_name: str,
    *,
    organizations: Iterable[str] = (),
    sans: Iterable[str] = (),
    server: bool = False,
    client: bool = False,
) -> x509.Certificate:
    """A certificate for someone else's key (a kubelet's request), signed by the CA."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    san_entries = _san_entries(sans)
    if san_entries:
        builder = builder.add_extension(x509.SubjectAlternativeName(san_entries), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def cert_sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.value.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.value.get_values_for_type(x509.IPAddress)
    }


def matches_key(cert: x509.Certificate, key_path: Path) -> bool:
    """Whether ``key_path`` holds the private key of ``cert`` (a crash between writing the key
    and the certificate must not leave a pair that can never complete a handshake)."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    return key.public_key() == cert.public_key()


def still_valid(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _now() > datetime.timedelta(days=30)


def ensure_certificates(data_dir: Path, extra_sans: Iterable[str] = ()) -> TLSFiles:
    """Create or refresh every certificate the server needs; return their paths."""
    files = tls_files(data_dir)
    private_dir(files.ca_cert.parent)
    ca_cert, ca_key = load_or_create_ca(files)

    wanted = [*DEFAULT_SANS, *host_names_and_addresses(), *extra_sans]
    wanted_set = {str(e.value) for e in _san_entries(wanted)}
    reissue = True
    if files.serving_cert.exists() and files.serving_key.exists():
        current = x509.load_pem_x509_certificate(files.serving_cert.read_bytes())
        reissue = (
            current.issuer != ca_cert.subject
            or not wanted_set <= cert_sans(current)
            or not still_valid(current)
            or not matches_key(current, files.serving_key)
        )
    if reissue:
        cert, key = issue_leaf(ca_cert, ca_key, "kube-apiserver", sans=wanted, server=True)
        write_private(files.serving_key, key_pem(key))
        write_private(files.serving_cert, cert_pem(cert))

    _ensure_client(ca_cert, ca_key, files.admin_cert, files.admin_key, "system:admin", ["system:masters"])
    _ensure_client(
        ca_cert, ca_key, files.kubelet_client_cert, files.kubelet_client_key, KUBELET_CLIENT_CN, ["system:masters"]
    )
    return files


def _ensure_client(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cert_path: Path,
    key_path: Path,
    common_name: str,
    organizations: list[str],
) -> None:
    """A client certificate kept across starts; issued again when missing, from another CA,
    naming someone else or close to expiry."""
    if cert_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = current.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if (
            current.issuer == ca_cert.subject
            and still_valid(current)
            and [n.value for n in names] == [common_name]
            and matches_key(current, key_path)
        ):
            return
    cert, key = issue_leaf(ca_cert, ca_key, common_name, organizations=organizations, client=True)
    write_private(key_path, key_pem(key))
    write_private(cert_path, cert_pem(cert))
