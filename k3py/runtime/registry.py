"""Pulling images from registries over the distribution (Docker Registry HTTP API v2) protocol.

``pull_image(store, "busybox")`` resolves the reference, fetches the manifest (an image index or
Docker manifest list is narrowed to linux/<this arch>), then the config and the layers — layers
in parallel threads — each streamed to the store's tmp dir while hashed, verified against its
digest and only then renamed into ``blobs``. A dropped transfer is retried with an HTTP
``Range`` request from where it stopped (or from scratch when the server ignores ranges).
Finally the layers are unpacked (safe unpacking, diff_id check) and the name is tagged.

Authentication: a 401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` is
answered with the token flow (the credentials, if any, go to the token realm as basic auth);
``Basic`` asks for the credentials directly. Tokens are cached per scope. The authorization header
is never forwarded across a redirect (blob downloads are often redirected to object storage).

Registries on loopback are spoken to over plain HTTP when HTTPS fails, as Docker does for
``localhost``; any other registry needs HTTPS unless ``plain_http`` is set.

Mirrors (``k3py.runtime.registries``): the manifest is looked up at each endpoint the registries
config lists for the image's registry, in order, then at the registry itself; the first endpoint
that serves the manifest also serves its blobs. Each endpoint gets the credentials and TLS
settings configured for its host; credentials passed in (a pod's pull secret, ``--username``) are
for the image's own registry. Without an explicit config, the process-wide one is used
(``default_registries()``: ``$K3PY_REGISTRIES_CONFIG`` or ``/etc/k3py/registries.yaml``), which is
how the kubelet's pulls honour it without passing anything.

Progress: ``progress(digest, bytes_so_far, total_or_None)`` is called from the download threads
as each blob starts, grows and completes (blobs already in the store report complete at once).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import os
import re
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from k3py.runtime.images import (
    CONFIG_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Image,
    ImageError,
    ImageStore,
    digest_hex,
    go_arch,
)
from k3py.runtime.reference import ImageReference, ReferenceError_, parse_reference
from k3py.runtime.registries import Endpoint, RegistriesConfig, default_registries

# Called as progress(blob digest, bytes downloaded so far, expected size or None).
PullProgress = Callable[[str, int, int | None], None]

ACCEPT_MANIFESTS = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_CHUNK = 1 << 20
_MAX_MANIFEST = 4 << 20
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(ImageError):
    """The registry refused, failed, or sent content that does not verify."""


@dataclass
class Credentials:
    username: str
    password: str
    identity_token: str = ""  # an OAuth2 refresh token (registries.yaml ``identitytoken``)


def registry_endpoint(registry: str) -> str:
    """The host to talk to: Docker Hub's API lives on registry-1.docker.io."""
    return "registry-1.docker.io" if registry == "docker.io" else registry


def is_loopback(host: str) -> bool:
    name = host[1 : host.index("]")] if host.startswith("[") else host.split(":")[0]
    if name == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(name).is_loopback
    return False


class _TransientError(RegistryError):
    """A failure worth retrying: connection trouble or a 5xx."""


class RegistryUnreachable(_TransientError):
    """No answer at all from the registry (name resolution, connection or TLS failure), as
    opposed to a registry that answered with an error; the kubelet reports both as ErrImagePull."""


class RegistryClient:
    """One registry; thread-safe for concurrent blob downloads."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        plain_http: bool | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        ssl_context: ssl.SSLContext | None = None,
        path_prefix: str = "",
    ) -> None:
        self.host = registry_endpoint(registry)
        self.path_prefix = path_prefix
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.scheme = "http" if plain_http else "https"
        self._may_fall_back = plain_http is None and is_loopback(self.host)
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()
        handlers = [urllib.request.HTTPSHandler(context=ssl_context)] if ssl_context else []
        self._opener = urllib.request.build_opener(*handlers)

    # ---- HTTP with authentication --------------------------------------------------------------

    def _auth_header(self, scope: str) -> str | None:
        with self._lock:
            if scope in self._tokens:
                return f"Bearer {self._tokens[scope]}"
            if self._basic and self.credentials and self.credentials.username:
                raw = f"{self.credentials.username}:{self.credentials.password}".encode()
                return "Basic " + base64.b64encode(raw).decode()
        return None

    def _open(
        self, path: str, scope: str, headers: dict[str, str] | None = None
    ) -> http.client.HTTPResponse:
        """GET ``path`` on the registry, answering one auth challenge; raises RegistryError."""
        challenged = False
        while True:
            request = urllib.request.Request(
                f"{self.scheme}://{self.host}{self.path_prefix}{path}", headers=headers or {}
            )
            auth = self._auth_header(scope)
            if auth:
                request.add_unredirected_header("Authorization", auth)
            try:
                return self._opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and not challenged:
                    challenge = exc.headers.get("WWW-Authenticate", "")
                    exc.close()
                    self._answer_challenge(challenge, scope)
                    challenged = True
                    continue
                body = exc.read(2000).decode(errors="replace")
                exc.close()
                kind = _TransientError if exc.code >= 500 else RegistryError
                raise kind(self._describe_error(exc.code, path, body)) from None
            except (ssl.SSLError, urllib.error.URLError) as exc:
                reason = getattr(exc, "reason", exc)
                if (
                    self._may_fall_back
                    and self.scheme == "https"
                    and (isinstance(exc, ssl.SSLError) or isinstance(reason, ssl.SSLError))
                ):
                    self.scheme = "http"  # a loopback registry without TLS, as Docker allows
                    continue
                raise RegistryUnreachable(f"cannot reach registry {self.host}: {reason}") from None

    def _describe_error(self, code: int, path: str, body: str) -> str:
        detail = body.strip()
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
            errors = json.loads(body)["errors"]
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        if code == 401:
            why = "the credentials were refused" if self.credentials else "authentication required"
            return f"registry {self.host} denied access to {path}: {why} ({detail})"
        if code == 404:
            return f"not found on registry {self.host}: {path} ({detail})"
        return f"registry {self.host} answered {code} for {path}: {detail}"

    def _answer_challenge(self, challenge: str, scope: str) -> None:
        kind, _, params_text = challenge.partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        if kind.lower() == "basic":
            if not self.credentials or not self.credentials.username:
                raise RegistryError(f"registry {self.host} requires a username and password")
            with self._lock:
                self._basic = True
            return
        if kind.lower() != "bearer" or "realm" not in params:
            raise RegistryError(
                f"registry {self.host} sent an unsupported auth challenge: {challenge!r}"
            )
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        if self.credentials and self.credentials.identity_token:
            # OAuth2: trade the refresh token for an access token (a POST, as Docker does).
            form = {
                **query,
                "grant_type": "refresh_token",
                "client_id": "k3py",
                "refresh_token": self.credentials.identity_token,
            }
            request = urllib.request.Request(
                params["realm"], data=urllib.parse.urlencode(form).encode(), method="POST"
            )
        else:
            request = urllib.request.Request(params["realm"] + "?" + urllib.parse.urlencode(query))
        if self.credentials and self.credentials.username and not self.credentials.identity_token:
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            request.add_unredirected_header(
                "Authorization", "Basic " + base64.b64encode(raw).decode()
            )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                data = json.loads(response.read(1 << 20))
        except urllib.error.HTTPError as exc:
            exc.close()
            raise RegistryError(
                f"token server {params['realm']} refused us ({exc.code}): check the username and password"
            ) from None
        except (urllib.error.URLError, ValueError) as exc:
            raise RegistryError(f"token server {params['realm']} failed: {exc}") from None
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"token server {params['realm']} returned no token")
        with self._lock:
            self._tokens[scope] = token

    # ---- content -------------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest, verified when ``reference`` is a digest."""
        scope = f"repository:{repository}:pull"
        with self._open(
            f"/v2/{repository}/manifests/{reference}", scope, {"Accept": ACCEPT_MANIFESTS}
        ) as response:
            body = response.read(_MAX_MANIFEST + 1)
            media = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        if len(body) > _MAX_MANIFEST:
            raise RegistryError(
                f"manifest {repository}:{reference} is larger than {_MAX_MANIFEST} bytes"
            )
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"digest mismatch: manifest {reference} hashes to {digest}")
        try:
            parsed = json.loads(body)
        except ValueError:
            raise RegistryError(f"manifest {repository}:{reference} is not JSON") from None
        media = parsed.get("mediaType") or media
        if parsed.get("schemaVersion") == 1 or media not in MANIFEST_TYPES | INDEX_TYPES:
            raise RegistryError(
                f"unsupported manifest media type {media!r} for {repository}:{reference}"
            )
        return body, media, digest

    def fetch_blob(
        self,
        store: ImageStore,
        repository: str,
        digest: str,
        size: int | None,
        progress: PullProgress | None = None,
    ) -> bool:
        """Download a blob into the store, resuming after dropped connections, verifying its
        digest; True if it was added (False: it was there already).

        A blob past the layer budget is refused before the download when the manifest says so,
        and cut off as soon as the bytes received pass it (or the size announced) otherwise.
        """
        if store.has_blob(digest):
            if progress:
                have = store.blob_path(digest).stat().st_size
                progress(digest, have, have)
            return False
        digest_hex(digest)
        store.check_blob_size(size, f"blob {digest}")
        limit = store.budget.max_layer_bytes if size is None else min(size, store.budget.max_layer_bytes)
        scope = f"repository:{repository}:pull"
        fd, tmp_name = tempfile.mkstemp(dir=store.tmp, prefix="pull-")
        os.close(fd)
        if progress:
            progress(digest, 0, size)
        try:
            have = 0
            for attempt in range(self.retries + 1):
                headers = {"Range": f"bytes={have}-"} if have else {}
                try:
                    with self._open(f"/v2/{repository}/blobs/{digest}", scope, headers) as response:
                        mode = "ab" if have and response.status == 206 else "wb"
                        if mode == "wb":
                            have = 0
                        with open(tmp_name, mode) as out:
                            while True:
                                chunk = response.read(_CHUNK)
                                if not chunk:
                                    break
                                have += len(chunk)
                                if have > limit:
                                    if size is not None and have > size:
                                        raise RegistryError(
                                            f"blob {digest} is longer than the {size} bytes announced"
                                        )
                                    store.check_blob_size(have, f"blob {digest}")
                                out.write(chunk)
                                if progress:
                                    progress(digest, have, size)
                    if size is None or have >= size:
                        break
                except (OSError, http.client.HTTPException, _TransientError) as exc:
                    have = os.path.getsize(tmp_name)
                    if attempt == self.retries:
                        raise RegistryError(
                            f"download of {digest} failed after {attempt + 1} attempts: {exc}"
                        ) from None
                    time.sleep(min(2.0, 0.1 * 2**attempt))
            hasher = hashlib.sha256()
            with open(tmp_name, "rb") as done:
                while chunk := done.read(_CHUNK):
                    hasher.update(chunk)
            actual = "sha256:" + hasher.hexdigest()
            if size is not None and have != size:
                raise RegistryError(f"blob {digest} has {have} bytes, the manifest says {size}")
            if actual != digest:
                raise RegistryError(f"digest mismatch: blob {digest} hashes to {actual}")
            os.replace(tmp_name, store.blob_path(digest))
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)


def _choose_platform(index: dict[str, Any]) -> dict[str, Any]:
    for child in index.get("manifests") or []:
        platform = child.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == go_arch():
            return child
    raise RegistryError(f"the image index has no manifest for linux/{go_arch()}")


def pull_image(
    store: ImageStore,
    reference: str,
    *,
    credentials: Credentials | None = None,
    plain_http: bool | None = None,
    max_parallel: int = 3,
    timeout: float = 30.0,
    registries: RegistriesConfig | None = None,
    progress: PullProgress | None = None,
) -> Image:
    """Pull ``reference`` into ``store``; returns the image, tagged with the normalised name.

    ``registries`` None means the process-wide config (see the module docstring).
    """
    try:
        ref = parse_reference(reference)
    except ReferenceError_ as exc:
        raise RegistryError(str(exc)) from None
    config = registries if registries is not None else default_registries()
    with store.adding():
        return _pull(store, ref, config, credentials, plain_http, max_parallel, timeout, progress)


def _client_for(
    endpoint: Endpoint,
    config: RegistriesConfig,
    credentials: Credentials | None,
    plain_http: bool | None,
    timeout: float,
) -> RegistryClient:
    host = config.host_config(endpoint.host)
    if endpoint.is_mirror or credentials is None:
        credentials = (
            Credentials(host.username, host.password, host.identity_token)
            if host.username or host.identity_token
            else None
        )
    try:
        context = host.ssl_context()
    except (OSError, ssl.SSLError) as exc:
        raise RegistryError(f"TLS settings for {endpoint.host} are unusable: {exc}") from None
    return RegistryClient(
        endpoint.host,
        credentials=credentials,
        plain_http=endpoint.plain_http if endpoint.is_mirror else plain_http,
        timeout=timeout,
        ssl_context=context,
        path_prefix=endpoint.path_prefix,
    )


def _resolve(
    client: RegistryClient, repository: str, ref: ImageReference
) -> tuple[bytes, str, str]:
    """The image manifest for this platform: (body, media type, digest)."""
    body, media, digest = client.get_manifest(repository, ref.digest or ref.tag or "latest")
    if media in INDEX_TYPES:
        chosen = _choose_platform(json.loads(body))
        body, media, digest = client.get_manifest(repository, chosen["digest"])
        if media not in MANIFEST_TYPES:
            raise RegistryError(f"platform manifest {digest} is a {media!r}, not an image manifest")
    return body, media, digest


def _pull(
    store: ImageStore,
    ref: ImageReference,
    config: RegistriesConfig,
    credentials: Credentials | None,
    plain_http: bool | None,
    max_parallel: int,
    timeout: float,
    progress: PullProgress | None,
) -> Image:
    endpoints = config.endpoints_for(ref.registry, ref.repository)
    failures: list[str] = []
    unreachable = True
    for endpoint in endpoints:
        try:
            client = _client_for(endpoint, config, credentials, plain_http, timeout)
            body, _media, digest = _resolve(client, endpoint.repository, ref)
            break
        except RegistryError as exc:
            if len(endpoints) == 1:
                raise
            unreachable = unreachable and isinstance(exc, RegistryUnreachable)
            failures.append(f"{endpoint.describe()}/{endpoint.repository}: {exc}")
    else:
        kind = RegistryUnreachable if unreachable else RegistryError
        raise kind(f"cannot pull {ref}: every endpoint failed: " + "; ".join(failures))
    repository = endpoint.repository
    manifest = json.loads(body)
    image_config = manifest.get("config") or {}
    if image_config.get("mediaType") not in CONFIG_TYPES:
        raise RegistryError(
            f"unsupported image config media type {image_config.get('mediaType')!r}"
        )
    added: list[str] = []  # blobs this pull put in the store: removed again if it fails
    try:
        if client.fetch_blob(
            store, repository, image_config["digest"], image_config.get("size"), progress
        ):
            added.append(image_config["digest"])
        layers = manifest.get("layers") or []
        with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
            futures = {
                layer["digest"]: pool.submit(
                    client.fetch_blob,
                    store,
                    repository,
                    layer["digest"],
                    layer.get("size"),
                    progress,
                )
                for layer in layers
            }
            failure: BaseException | None = None
            for layer_digest, future in futures.items():
                try:
                    if future.result():
                        added.append(layer_digest)
                except BaseException as exc:  # the other downloads finish; then we fail
                    failure = failure or exc
            if failure is not None:
                raise failure
        manifest_known = store.has_blob(digest)
        stored_digest = store.write_blob_bytes(body)
        assert stored_digest == digest
        if not manifest_known:
            added.append(digest)
        image = store.load_manifest(digest)
        store.unpack(image)
    except BaseException:
        for blob in added:
            with contextlib.suppress(FileNotFoundError):
                store.blob_path(blob).unlink()
        raise
    store.tag(str(ref), digest)
    image.names = [str(ref)]
    return image
