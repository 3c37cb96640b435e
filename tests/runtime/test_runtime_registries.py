"""The registries config (mirrors, rewrites, per-host auth): parsing in milliseconds, then pulls
through REAL docker-registry mirrors on loopback.

No test may reach a public registry or even resolve a public name: image names use docker.io or
``*.invalid`` only when a loopback mirror is checked to serve the image first (so the upstream,
tried last, is never contacted); failure paths use a dead loopback port as the upstream.
"""

from __future__ import annotations

import base64
import subprocess
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from test_runtime_registry import PASSWORD, USER, Registry, free_port

from k3py.runtime.images import ImageStore
from k3py.runtime.registries import (
    RegistriesConfigError,
    load_registries,
    parse_registries,
    set_default_registries,
)
from k3py.runtime.registry import Credentials, RegistryError, pull_image

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt


# ---- parsing (pure) ----------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registries.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mirrors: [a, b]\n", r"registries\.yaml: mirrors must be a mapping, not list"),
        (
            "mirrors:\n  docker.io:\n    endpoint: http://x\n",
            r"mirrors\.docker\.io\.endpoint must be a list",
        ),
        ("mirrors:\n  docker.io:\n    endpoints: [x]\n", r"unknown key\(s\) endpoints"),
        ("mirrors:\n  docker.io:\n    endpoint: ['ftp://x']\n", r"must be http\(s\)://host"),
        ("mirrors:\n  d:\n    rewrite: {'(': x}\n", r"'\(' is not a valid regular expression"),
        ("configs:\n  h:\n    auth: {username: u}\n", r"configs\.h\.auth needs both"),
        ("configs:\n  h:\n    auth: {auth: '***'}\n", r"configs\.h\.auth\.auth is not base64"),
        (
            "configs:\n  h:\n    tls: {ca_file: /nonexistent/ca.pem}\n",
            r"ca_file: /nonexistent/ca.pem does not exist",
        ),
        ("configs:\n  h:\n    tls: {insecure_skip_verify: maybe}\n", r"must be true or false"),
        ("mirror: {}\n", r"unknown top-level key\(s\) mirror"),
        ("mirrors:\n  a: [\n", r"not valid YAML at line \d+, column \d+"),
    ],
)
def test_malformed_file_names_path_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RegistriesConfigError, match=message) as caught:
        load_registries(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RegistriesConfigError, match="does not exist"):
        load_registries(tmp_path / "nope.yaml")  # named explicitly: must exist
    monkeypatch.delenv("K3PY_REGISTRIES_CONFIG", raising=False)
    monkeypatch.setattr("k3py.runtime.registries.DEFAULT_REGISTRIES_FILE", tmp_path / "absent")
    assert load_registries().mirrors == {}  # the default file is optional
    assert parse_registries(None).mirrors == {}  # an empty file


def test_endpoint_order_wildcard_and_rewrite() -> None:
    config = parse_registries(
        {
            "mirrors": {
                "docker.io": {
                    "endpoint": [
                        "http://127.0.0.1:5001/prefix/v2",
                        "mirror.example:5000",
                        "docker.io",  # the registry itself: that is the default endpoint
                        "mirror.example:5001/some/path/",
                    ],
                    "rewrite": {"^library/(.*)$": "hub/${1}-copy"},
                },
                "*": {"endpoint": ["https://catch-all.example"]},
            },
            "configs": {
                "mirror.example:5000": {"auth": {"auth": base64.b64encode(b"u:p:q").decode()}}
            },
        }
    )
    endpoints = config.endpoints_for("docker.io", "library/busybox")
    assert [(e.describe(), e.repository, e.is_mirror) for e in endpoints] == [
        ("http://127.0.0.1:5001/prefix", "hub/busybox-copy", True),
        ("mirror.example:5000", "hub/busybox-copy", True),
        ("mirror.example:5001/some/path", "hub/busybox-copy", True),
        ("docker.io", "library/busybox", False),  # the default endpoint: last, never rewritten
    ]
    other = config.endpoints_for("quay.io", "a/b")
    assert [e.describe() for e in other] == ["https://catch-all.example", "quay.io"]
    host = config.host_config("mirror.example:5000")
    assert (host.username, host.password) == ("u", "p:q")
    assert config.host_config("elsewhere").username == ""


# ---- pulls through real mirrors ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(registries: Callable[..., Registry], test_images: Path) -> Registry:
    registry = registries()
    registry.push(f"oci-archive:{test_images / 'busybox-oci.tar'}", "library/busybox:latest")
    registry.push(f"docker-archive:{test_images / 'busybox-docker.tar'}", "mirrored/busybox:1")
    return registry


def assert_serves(registry: Registry, repository: str, tag: str) -> None:
    """The mirror answers for this image, so the upstream tried after it is never contacted."""
    request = urllib.request.Request(
        f"http://{registry.host}/v2/{repository}/manifests/{tag}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },
        method="HEAD",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_docker_hub_name_served_by_loopback_mirror(mirror: Registry, store: ImageStore) -> None:
    assert_serves(mirror, "library/busybox", "latest")
    dead = f"127.0.0.1:{free_port()}"
    config = parse_registries(
        {"mirrors": {"docker.io": {"endpoint": [f"http://{dead}", f"http://{mirror.host}"]}}}
    )
    image = pull_image(store, "busybox", registries=config, timeout=5)
    assert image.names == ["docker.io/library/busybox:latest"]
    assert store.get("busybox:latest").id == image.id
    assert (store.unpack(image)[0] / "bin").is_dir()


def test_wildcard_mirror_and_rewrite(mirror: Registry, store: ImageStore) -> None:
    assert_serves(mirror, "mirrored/busybox", "1")
    config = parse_registries(
        {
            "mirrors": {
                "*": {
                    "endpoint": [f"http://{mirror.host}"],
                    "rewrite": {"^team/(.*)$": "mirrored/$1"},
                }
            }
        }
    )
    image = pull_image(store, "registry.invalid/team/busybox:1", registries=config)
    assert image.names == ["registry.invalid/team/busybox:1"]  # named as asked, not as mirrored


def test_all_endpoints_failing_lists_each(mirror: Registry, store: ImageStore) -> None:
    upstream = f"127.0.0.1:{free_port()}"  # dead, on loopback: the fallback contacts nothing real
    config = parse_registries({"mirrors": {upstream: {"endpoint": [f"http://{mirror.host}"]}}})
    with pytest.raises(RegistryError) as caught:
        pull_image(store, f"{upstream}/nothere/busybox:1", registries=config, timeout=5)
    message = str(caught.value)
    assert message.startswith(f"cannot pull {upstream}/nothere/busybox:1: every endpoint failed")
    assert f"http://{mirror.host}/nothere/busybox: not found" in message
    assert f"{upstream}/nothere/busybox: cannot reach registry {upstream}" in message


def test_authenticated_mirror_uses_configs(
    registries: Callable[..., Registry], test_images: Path, store: ImageStore, tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(
        f"{USER}:{crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n"
    )
    private = registries({"htpasswd": {"realm": "k3py-test", "path": str(htpasswd)}})
    private.push(
        f"oci-archive:{test_images / 'busybox-oci.tar'}",
        "apps/busybox:2",
        creds=f"{USER}:{PASSWORD}",
    )
    upstream = f"127.0.0.1:{free_port()}"
    mirrors = {upstream: {"endpoint": [f"http://{private.host}"]}}
    reference = f"{upstream}/apps/busybox:2"
    without = parse_registries({"mirrors": mirrors})
    with pytest.raises(RegistryError, match="requires a username and password"):
        pull_image(store, reference, registries=without, timeout=5)
    wrong = parse_registries(
        {
            "mirrors": mirrors,
            "configs": {private.host: {"auth": {"username": USER, "password": "x"}}},
        }
    )
    with pytest.raises(RegistryError, match="credentials were refused"):
        pull_image(store, reference, registries=wrong, timeout=5)
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    right = parse_registries(
        {"mirrors": mirrors, "configs": {private.host: {"auth": {"auth": encoded}}}}
    )
    image = pull_image(store, reference, registries=right, timeout=5)
    assert store.get(reference).id == image.id
    # configs also apply to the image's own registry when no credentials are passed in.
    direct = f"{private.host}/apps/busybox:2"
    assert pull_image(store, direct, registries=right, timeout=5).id == image.id
    assert pull_image(store, direct, registries=wrong, credentials=Credentials(USER, PASSWORD))


def test_default_config_reaches_pulls_that_pass_none(
    mirror: Registry, store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet calls pull_image(store, image, credentials=...): the node's file applies."""
    assert_serves(mirror, "library/busybox", "latest")
    path = write(
        tmp_path, f"mirrors:\n  registry.invalid:\n    endpoint: ['http://{mirror.host}']\n"
    )
    monkeypatch.setenv("K3PY_REGISTRIES_CONFIG", str(path))
    set_default_registries(None)
    try:
        image = pull_image(store, "registry.invalid/library/busybox:latest", credentials=None)
    finally:
        set_default_registries(None)
    assert image.names == ["registry.invalid/library/busybox:latest"]


# ---- TLS: a custom CA, insecure_skip_verify and client certificates ----------------------------


def issue(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    files: dict[str, Path] = {}

    def save(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        files[f"{name}_cert"] = directory / f"{name}.crt"
        files[f"{name}_key"] = directory / f"{name}.key"
        files[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def build(subject: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3py test CA")])
    ca = (
        build("k3py test CA", ca_key)
        .issuer_name(ca_name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    save("ca", ca, ca_key)
    import ipaddress

    for name, usage, san in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, ipaddress.ip_address("127.0.0.1")),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, None),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = build(name, key).issuer_name(ca_name)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(san)]), critical=False
            )
        save(name, builder.sign(ca_key, hashes.SHA256()), key)
    return files


def test_tls_mirror_with_ca_client_cert_and_skip_verify(
    registries: Callable[..., Registry], test_images: Path, store: ImageStore, tmp_path: Path
) -> None:
    pki = issue(tmp_path)
    secured = registries(
        tls={
            "certificate": str(pki["server_cert"]),
            "key": str(pki["server_key"]),
            "clientcas": [str(pki["ca_cert"])],  # mutual TLS: clients need a cert from our CA
        }
    )
    cert_dir = tmp_path / "skopeo-certs"
    cert_dir.mkdir()
    (cert_dir / "client.cert").write_bytes(pki["client_cert"].read_bytes())
    (cert_dir / "client.key").write_bytes(pki["client_key"].read_bytes())
    result = subprocess.run(
        [
            "skopeo", "copy", "--dest-tls-verify=false", "--dest-cert-dir", str(cert_dir),
            f"oci-archive:{test_images / 'busybox-oci.tar'}",
            f"docker://{secured.host}/secure/busybox:1",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    upstream = f"127.0.0.1:{free_port()}"
    reference = f"{upstream}/secure/busybox:1"
    mirrors = {upstream: {"endpoint": [f"https://{secured.host}"]}}

    def pull(tls: dict | None) -> None:
        configs = (
            {
                secured.host: {
                    "tls": {k: v if isinstance(v, bool) else str(v) for k, v in tls.items()}
                }
            }
            if tls
            else {}
        )
        config = parse_registries({"mirrors": mirrors, "configs": configs})
        pull_image(store, reference, registries=config, timeout=5)

    with pytest.raises(RegistryError, match="CERTIFICATE_VERIFY_FAILED"):
        pull(None)  # our CA is not the system's
    refused_client = (
        f"https://{secured.host}/secure/busybox: cannot reach registry {secured.host}: "
    )
    with pytest.raises(
        RegistryError, match=refused_client + ".*ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED)"
    ):
        pull({"ca_file": pki["ca_cert"]})  # server verified, but we have no client certificate
    pull(
        {"ca_file": pki["ca_cert"], "cert_file": pki["client_cert"], "key_file": pki["client_key"]}
    )
    assert store.get(reference)
    store.remove(reference)
    pull(
        {
            "insecure_skip_verify": True,
            "cert_file": pki["client_cert"],
            "key_file": pki["client_key"],
        }
    )
    assert store.get(reference)


def test_malformed_default_config_fails_pulls_clearly(
    store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet reports this message in the pod's ErrImagePull; nothing is contacted."""
    path = write(tmp_path, "configs:\n  127.0.0.1:1:\n    auth: {username: only}\n")
    monkeypatch.setenv("K3PY_REGISTRIES_CONFIG", str(path))
    set_default_registries(None)
    try:
        with pytest.raises(RegistriesConfigError) as caught:
            pull_image(store, "127.0.0.1:1/any/image:1")
    finally:
        set_default_registries(None)
    assert str(caught.value) == f"{path}: configs.127.0.0.1:1.auth needs both username and password"
