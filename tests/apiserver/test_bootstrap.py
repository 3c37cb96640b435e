"""First-start bootstrap: CA reuse, serving-certificate names, admin identity, kubeconfig mode."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from k3py.server.bootstrap.certs import ensure_certificates
from k3py.server.bootstrap.kubeconfig import write_kubeconfig
from k3py.server.bootstrap.tokens import load_or_create_token


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def test_certificates_names_reuse_and_tls_san(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    sans = _sans(files.serving_cert)
    for name in ("localhost", "127.0.0.1", "10.43.0.1", "kubernetes", "kubernetes.default",
                 "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"):  # fmt: skip
        assert name in sans
    ca_before = files.ca_cert.read_bytes()
    admin_before = files.admin_cert.read_bytes()
    again = ensure_certificates(tmp_path, ["api.example.test", "192.0.2.10"])
    assert again.ca_cert.read_bytes() == ca_before and again.admin_cert.read_bytes() == admin_before
    sans = _sans(again.serving_cert)
    assert "api.example.test" in sans and str(ipaddress.ip_address("192.0.2.10")) in sans
    admin = x509.load_pem_x509_certificate(again.admin_cert.read_bytes())
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:admin"
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert oct(files.ca_key.stat().st_mode & 0o777) == "0o600"


def test_kubeconfig_mode_and_token_persistence(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    target = tmp_path / "out" / "k.yaml"
    write_kubeconfig(target, "https://127.0.0.1:6443", files, 0o644)
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    config = yaml.safe_load(target.read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    token = load_or_create_token(tmp_path)
    assert token == load_or_create_token(tmp_path) and len(token) >= 32
    assert load_or_create_token(tmp_path, "given") == "given"
