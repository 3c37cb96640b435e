"""Pulling from a REAL registry: Debian's docker-registry on a random loopback port, images pushed
with skopeo; anonymous, htpasswd (basic) and token (Bearer) authentication; multi-arch indexes,
digests, corrupted blobs and connections dropped mid-blob."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from imagebuilder import Entry, layer_tar, oci_image_blobs, sha256, write_oci_layout_archive

from k3py.runtime.images import ImageStore
from k3py.runtime.registry import Credentials, RegistryError, pull_image

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt for the registry's htpasswd file (Python 3.11 still ships it)

USER, PASSWORD = "alice", "wonderland"
REFRESH_TOKEN = "refresh-me-" + "0" * 16  # an identity token the test token server accepts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # 401 also means it is up
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


class Registry:
    def __init__(self, root: Path, auth: dict | None = None, tls: dict | None = None) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = root / "storage"
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host},
        }
        if auth:
            config["auth"] = auth
        if tls:  # {"certificate": ..., "key": ..., "clientcas": [...]}: HTTPS (and mTLS)
            config["http"]["tls"] = tls
        config_path = root / "config.yml"
        config_path.write_text(json.dumps(config))  # YAML is a superset of JSON
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until_serving(f"http://{self.host}/v2/")

    def push(
        self, source: str, name: str, creds: str | None = None, all_platforms: bool = False
    ) -> None:
        command = ["skopeo", "copy", "--dest-tls-verify=false", "--retry-times", "0"]
        if all_platforms:
            command.append("--all")
        if creds:
            command += ["--dest-creds", creds]
        result = subprocess.run(
            [*command, source, f"docker://{self.host}/{name}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr

    def blob_file(self, digest: str) -> Path:
        hex_digest = digest.split(":")[1]
        return (
            self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def open_registry(registries: Callable[..., Registry], test_images: Path) -> Registry:
    registry = registries()
    registry.push(f"oci-archive:{test_images / 'busybox-oci.tar'}", "library/busybox:1")
    registry.push(f"docker-archive:{test_images / 'busybox-docker.tar'}", "team/app:v1")
    return registry


def test_pull_by_tag_unpacks_and_names(open_registry: Registry, store: ImageStore) -> None:
    image = pull_image(store, f"{open_registry.host}/library/busybox:1")
    assert image.names == [f"{open_registry.host}/library/busybox:1"]
    [layer] = store.unpack(image)
    assert (layer / "bin" / "busybox").exists()
    assert store.get(f"{open_registry.host}/library/busybox:1").id == image.id
    blobs_before = sorted(os.listdir(store.blobs))
    again = pull_image(store, f"{open_registry.host}/library/busybox:1")
    assert again.id == image.id and sorted(os.listdir(store.blobs)) == blobs_before
    other = pull_image(store, f"{open_registry.host}/team/app:v1")
    assert other.diff_ids == image.diff_ids  # the same layer content, stored once
    assert len(os.listdir(store.layers_dir)) == 1


def test_pull_by_digest(open_registry: Registry, store: ImageStore) -> None:
    first = pull_image(store, f"{open_registry.host}/library/busybox:1")
    by_digest = f"{open_registry.host}/library/busybox@{first.manifest_digest}"
    fresh = ImageStore(store.root.parent / "fresh")
    image = pull_image(fresh, by_digest)
    assert image.manifest_digest == first.manifest_digest
    assert fresh.get(by_digest).id == first.id
    with pytest.raises(RegistryError, match="not found"):
        pull_image(fresh, f"{open_registry.host}/library/busybox@sha256:{'0' * 64}")


def test_multi_arch_index_picks_this_platform(
    registries: Callable[..., Registry], store: ImageStore, tmp_path: Path
) -> None:
    registry = registries()
    amd_manifest, amd_blobs = oci_image_blobs([layer_tar([Entry("arch", data=b"amd64\n")])])
    arm_manifest, arm_blobs = oci_image_blobs([layer_tar([Entry("arch", data=b"arm64\n")])])
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(m),
                    "size": len(m),
                    "platform": {"os": "linux", "architecture": arch},
                }
                for m, arch in ((arm_manifest, "arm64"), (amd_manifest, "amd64"))
            ],
        }
    ).encode()
    archive = tmp_path / "multi.tar"
    write_oci_layout_archive(
        archive,
        [*amd_blobs, *arm_blobs, index],
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": sha256(index),
                    "size": len(index),
                    "annotations": {"org.opencontainers.image.ref.name": "multi"},
                }
            ],
        },
    )
    registry.push(f"oci-archive:{archive}:multi", "team/multi:1", all_platforms=True)
    image = pull_image(store, f"{registry.host}/team/multi:1")
    assert image.manifest_digest == sha256(amd_manifest)
    assert (store.unpack(image)[0] / "arch").read_text() == "amd64\n"
    assert not store.has_blob(sha256(arm_blobs[1]))  # the other platform's layer was not fetched


def test_basic_auth_registry(
    registries: Callable[..., Registry], store: ImageStore, test_images: Path, tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    # bcrypt cost 4 keeps the registry's per-request password check fast.
    htpasswd.write_text(
        f"{USER}:{crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n"
    )
    registry = registries({"htpasswd": {"realm": "k3py-test", "path": str(htpasswd)}})
    registry.push(
        f"oci-archive:{test_images / 'busybox-oci.tar'}",
        "private/busybox:1",
        creds=f"{USER}:{PASSWORD}",
    )
    ref = f"{registry.host}/private/busybox:1"
    with pytest.raises(RegistryError, match="requires a username and password"):
        pull_image(store, ref)
    with pytest.raises(RegistryError, match="credentials were refused"):
        pull_image(store, ref, credentials=Credentials(USER, "wrong"))
    image = pull_image(store, ref, credentials=Credentials(USER, PASSWORD))
    assert store.get(ref).id == image.id
    assert os.listdir(store.tmp) == []


class TokenServer:
    """A distribution token server: RS256 JWTs whose x5c chain the registry trusts."""

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3py test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict] = []
        server = self

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query))
                auth = self.headers.get("Authorization", "")
                user = ""
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if (user, password) != (USER, PASSWORD):
                        self.send_response(401)
                        self.end_headers()
                        return
                self.issue(user, query, "token")

            def do_POST(self) -> None:
                # The OAuth2 flow Docker uses with an identity token: a refresh token traded
                # for an access token (form-encoded POST, "access_token" in the answer).
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if (
                    form.pop("grant_type", "") != "refresh_token"
                    or form.pop("refresh_token", "") != REFRESH_TOKEN
                ):
                    self.send_response(401)
                    self.end_headers()
                    return
                self.issue(USER, form, "access_token")

            def issue(self, user: str, query: dict[str, str], field: str) -> None:
                server.requests.append({"user": user, **query})
                access = []
                for scope in query.get("scope", "").split(" "):
                    if scope.count(":") == 2 and user:
                        kind, repo, actions = scope.split(":")
                        access.append({"type": kind, "name": repo, "actions": actions.split(",")})
                now = int(time.time())
                header = {
                    "typ": "JWT",
                    "alg": "RS256",
                    "x5c": [
                        base64.b64encode(
                            server.cert.public_bytes(serialization.Encoding.DER)
                        ).decode()
                    ],
                }
                claims = {
                    "iss": "k3py-test-issuer",
                    "sub": user,
                    "aud": query.get("service", ""),
                    "exp": now + 300,
                    "nbf": now - 10,
                    "iat": now,
                    "jti": secrets.token_hex(8),
                    "access": access,
                }
                signing_input = (
                    f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
                )
                signature = server.key.sign(
                    signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
                )
                body = json.dumps(
                    {field: f"{signing_input}.{b64(signature)}", "expires_in": 300}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path)
    yield server
    server.stop()


def token_auth(server: TokenServer) -> dict:
    """The registry's auth section delegating to ``server`` (bearer tokens it signs)."""
    return {
        "token": {
            "realm": server.realm,
            "service": "k3py-test-registry",
            "issuer": "k3py-test-issuer",
            "rootcertbundle": str(server.bundle),
        }
    }


def test_bearer_token_registry(
    registries: Callable[..., Registry],
    token_server: TokenServer,
    store: ImageStore,
    test_images: Path,
) -> None:
    registry = registries(token_auth(token_server))
    registry.push(
        f"oci-archive:{test_images / 'busybox-oci.tar'}",
        "private/tokened:1",
        creds=f"{USER}:{PASSWORD}",
    )
    ref = f"{registry.host}/private/tokened:1"
    with pytest.raises(RegistryError, match="denied access"):
        pull_image(store, ref)  # an anonymous token grants nothing
    with pytest.raises(RegistryError, match="refused us"):
        pull_image(store, ref, credentials=Credentials(USER, "wrong"))
    token_server.requests.clear()
    image = pull_image(store, ref, credentials=Credentials(USER, PASSWORD))
    assert store.get(ref).id == image.id
    assert token_server.requests == [
        {"user": USER, "scope": "repository:private/tokened:pull", "service": "k3py-test-registry"}
    ]  # one token, cached for the manifest, config and layer requests


def test_identity_token_from_registries_config(
    registries: Callable[..., Registry],
    token_server: TokenServer,
    store: ImageStore,
    test_images: Path,
) -> None:
    from k3py.runtime.registries import RegistriesConfig, parse_registries

    registry = registries(token_auth(token_server))
    registry.push(
        f"oci-archive:{test_images / 'busybox-oci.tar'}",
        "private/oauth:1",
        creds=f"{USER}:{PASSWORD}",
    )
    ref = f"{registry.host}/private/oauth:1"

    def with_token(token: str) -> RegistriesConfig:
        return parse_registries({"configs": {registry.host: {"auth": {"identitytoken": token}}}})

    with pytest.raises(RegistryError, match="refused us"):
        pull_image(store, ref, registries=with_token("not-the-token"))
    token_server.requests.clear()
    image = pull_image(store, ref, registries=with_token(REFRESH_TOKEN))
    assert store.get(ref).id == image.id
    assert token_server.requests == [
        {
            "user": USER,
            "scope": "repository:private/oauth:pull",
            "service": "k3py-test-registry",
            "client_id": "k3py",
        }
    ]


def test_corrupted_blob_is_refused(
    registries: Callable[..., Registry], store: ImageStore, tmp_path: Path
) -> None:
    registry = registries()
    manifest, blobs = oci_image_blobs([layer_tar([Entry("f", data=os.urandom(4096))])])
    archive = tmp_path / "c.tar"
    write_oci_layout_archive(
        archive,
        blobs,
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(manifest),
                    "size": len(manifest),
                }
            ],
        },
    )
    registry.push(f"oci-archive:{archive}", "team/corrupt:1")
    layer_blob = registry.blob_file(sha256(blobs[1]))
    data = bytearray(layer_blob.read_bytes())
    data[100] ^= 0xFF  # same size, different content
    layer_blob.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="digest mismatch"):
        pull_image(store, f"{registry.host}/team/corrupt:1")
    assert not store.has_blob(sha256(blobs[1])) and os.listdir(store.tmp) == []
    with pytest.raises(Exception, match="not found"):
        store.get(f"{registry.host}/team/corrupt:1")


class CuttingProxy:
    """Forwards to the registry but cuts the first response of a blob GET after ``cut`` bytes."""

    def __init__(self, upstream_port: int, blob_digest: str, cut: int) -> None:
        self.upstream_port = upstream_port
        self.blob_digest = blob_digest
        self.cut = cut
        self.cuts = 0
        self.range_requests: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(65536)
                if not chunk:
                    return
                request += chunk
            head = request.decode(errors="replace")
            is_blob = f"/blobs/{self.blob_digest}" in head.split("\r\n")[0]
            if is_blob:
                for line in head.split("\r\n"):
                    if line.lower().startswith("range:"):
                        self.range_requests.append(line.split(":", 1)[1].strip())
            upstream.sendall(request)
            limit = self.cut if is_blob and self.cuts == 0 else None
            if limit is not None:
                self.cuts += 1
            sent = 0
            while True:
                data = upstream.recv(65536)
                if not data:
                    return
                if limit is not None and sent + len(data) > limit:
                    client.sendall(data[: limit - sent])
                    return  # drop the connection mid-body
                client.sendall(data)
                sent += len(data)

    def stop(self) -> None:
        self.listener.close()


def test_dropped_blob_download_resumes_with_range(
    registries: Callable[..., Registry], store: ImageStore, tmp_path: Path
) -> None:
    registry = registries()
    manifest, blobs = oci_image_blobs([layer_tar([Entry("big", data=os.urandom(3 << 20))])])
    archive = tmp_path / "big.tar"
    write_oci_layout_archive(
        archive,
        blobs,
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(manifest),
                    "size": len(manifest),
                }
            ],
        },
    )
    registry.push(f"oci-archive:{archive}", "team/big:1")
    proxy = CuttingProxy(registry.port, sha256(blobs[1]), cut=1 << 20)
    try:
        image = pull_image(store, f"127.0.0.1:{proxy.port}/team/big:1", plain_http=True)
    finally:
        proxy.stop()
    assert proxy.cuts == 1
    assert len(proxy.range_requests) == 1 and proxy.range_requests[0].startswith("bytes=")
    assert int(proxy.range_requests[0][6:].rstrip("-")) > 0  # resumed, not restarted
    assert (store.unpack(image)[0] / "big").stat().st_size == 3 << 20


def test_unreachable_registry_and_bad_reference(store: ImageStore) -> None:
    with pytest.raises(RegistryError, match="cannot reach registry"):
        pull_image(store, f"127.0.0.1:{free_port()}/x/y:1", timeout=5)
    with pytest.raises(RegistryError, match="invalid image reference"):
        pull_image(store, "UPPER/case")


def test_cli_pull(open_registry: Registry, tmp_path: Path) -> None:
    import sys

    run_image_app = (
        "import sys; from k3py.cli.image import image_app; sys.argv[0] = 'k3py image'; image_app()"
    )
    data = tmp_path / "data"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            run_image_app,
            "pull",
            f"{open_registry.host}/team/app:v1",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"pulled {open_registry.host}/team/app:v1 sha256:")
    assert ImageStore(data / "images").get(f"{open_registry.host}/team/app:v1")
