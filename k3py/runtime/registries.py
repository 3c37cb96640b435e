"""The node's registries config: mirrors, rewrites, credentials and TLS per registry host.

The file has the shape of k3s' ``/etc/rancher/k3s/registries.yaml``; k3py reads
``/etc/k3py/registries.yaml`` unless ``K3PY_REGISTRIES_CONFIG`` (or ``--registries-config``)
names another one::

    mirrors:
      docker.io:                       # the registry an image name refers to ("*": any registry)
        endpoint: ["https://mirror.example:5000", "http://127.0.0.1:5001"]
        rewrite: {"^library/(.*)": "mirrored/$1"}   # repository rewrites, for the mirrors only
    configs:
      "mirror.example:5000":           # a host as written in an endpoint (or an image name)
        auth: {username: u, password: p}            # or auth: base64("u:p"), or identitytoken
        tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem, insecure_skip_verify: false}

Semantics follow containerd's CRI plugin as k3s configures it: the endpoints of the image's
registry (or of ``"*"`` when the registry has no entry of its own) are tried in order, and the
registry itself — the default endpoint — is tried last. Rewrites apply to mirror endpoints only,
never to the default endpoint. Credentials and TLS settings are chosen by the host being talked
to, so a mirror gets its own credentials, not those of the upstream registry.

A malformed file is refused as a whole with a ``RegistriesConfigError`` naming the file and the
offending key; a missing default file is simply an empty config.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from k3py.runtime.images import ImageError

DEFAULT_REGISTRIES_FILE = Path("/etc/k3py/registries.yaml")
REGISTRIES_FILE_ENV = "K3PY_REGISTRIES_CONFIG"
WILDCARD = "*"


class RegistriesConfigError(ImageError):
    """The registries file cannot be read or is not a valid config; says where and why."""


@dataclass(frozen=True)
class HostConfig:
    """Credentials and TLS settings for one registry host (a ``configs`` entry)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context honouring this host's settings, or None for the system defaults."""
        if not (self.ca_file or self.cert_file or self.insecure_skip_verify):
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file:
            context.load_cert_chain(
                str(self.cert_file), str(self.key_file) if self.key_file else None
            )
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True)
class Rewrite:
    """One repository rewrite: a regular expression and its replacement (``$1`` style)."""

    pattern: re.Pattern[str]
    replacement: str  # already in Python's \\g<1> syntax

    def apply(self, repository: str) -> str | None:
        """The rewritten repository, or None when the pattern does not match."""
        if not self.pattern.search(repository):
            return None
        return self.pattern.sub(self.replacement, repository, count=1)


@dataclass(frozen=True)
class Endpoint:
    """One place to pull from: a host, how to speak to it, and the repository to ask for."""

    host: str  # host[:port], the key into ``configs``
    plain_http: bool | None  # True: http://; False: https://; None: https, loopback may fall back
    path_prefix: str  # an endpoint URL's path, put before /v2
    repository: str  # after any rewrite
    is_mirror: bool

    def describe(self) -> str:
        scheme = {True: "http://", False: "https://", None: ""}[self.plain_http]
        return f"{scheme}{self.host}{self.path_prefix}"


@dataclass(frozen=True)
class Mirror:
    endpoints: tuple[str, ...] = ()
    rewrites: tuple[Rewrite, ...] = ()


@dataclass(frozen=True)
class RegistriesConfig:
    mirrors: dict[str, Mirror] = field(default_factory=dict)
    configs: dict[str, HostConfig] = field(default_factory=dict)
    source: str = ""  # the file it came from, for messages

    def endpoints_for(self, registry: str, repository: str) -> list[Endpoint]:
        """Where to look for ``registry``/``repository``, in order; the registry itself last."""
        mirror = self.mirrors.get(registry) or self.mirrors.get(WILDCARD) or Mirror()
        repository_on_mirror = repository
        for rewrite in mirror.rewrites:
            rewritten = rewrite.apply(repository)
            if rewritten is not None:
                repository_on_mirror = rewritten
                break
        endpoints = [
            _parse_endpoint(url, repository_on_mirror, is_mirror=True) for url in mirror.endpoints
        ]
        default = Endpoint(registry, None, "", repository, is_mirror=False)
        # A mirror listed as the registry itself is just the default endpoint, spelled out.
        endpoints = [e for e in endpoints if (e.host, e.path_prefix) != (registry, "")]
        return [*endpoints, default]

    def host_config(self, host: str) -> HostConfig:
        return self.configs.get(host) or HostConfig()


def _parse_endpoint(url: str, repository: str, *, is_mirror: bool) -> Endpoint:
    # Without a scheme: HTTPS, except that a loopback host may fall back to HTTP.
    parsed = urllib.parse.urlsplit(url if "://" in url else f"//{url}")
    plain_http = None if not parsed.scheme else parsed.scheme == "http"
    path = parsed.path.rstrip("/").removesuffix("/v2")
    return Endpoint(parsed.netloc, plain_http, path, repository, is_mirror)


# ---- loading -----------------------------------------------------------------------------------


def _go_replacement(text: str) -> str:
    """Go's regexp replacement syntax ($1, ${1}, $name) as Python's (\\g<1>); $$ is a dollar."""
    escaped = text.replace("\\", "\\\\")
    return re.sub(
        r"\$(\$|\{(\w+)\}|(\w+))",
        lambda m: "$" if m.group(1) == "$" else f"\\g<{m.group(2) or m.group(3)}>",
        escaped,
    )


def _mapping(value: Any, where: str, fail: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(f"{where} must be a mapping, not {type(value).__name__}")
    return value


def parse_registries(data: Any, source: str = "<registries config>") -> RegistriesConfig:
    """Check and convert a decoded registries document; raises RegistriesConfigError."""

    def fail(message: str) -> None:
        raise RegistriesConfigError(f"{source}: {message}")

    top = _mapping(data, "the document", fail)
    unknown = set(top) - {"mirrors", "configs"}
    if unknown:
        fail(
            f"unknown top-level key(s) {', '.join(sorted(map(str, unknown)))} (expected mirrors, configs)"
        )
    mirrors: dict[str, Mirror] = {}
    for registry, entry in _mapping(top.get("mirrors"), "mirrors", fail).items():
        where = f"mirrors.{registry!s}"
        entry = _mapping(entry, where, fail)
        extra = set(entry) - {"endpoint", "rewrite"}
        if extra:
            fail(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, extra)))} (expected endpoint, rewrite)"
            )
        urls = entry.get("endpoint") or []
        if isinstance(urls, str) or not isinstance(urls, list):
            fail(f"{where}.endpoint must be a list of URLs")
        for url in urls:
            if not isinstance(url, str) or not url:
                fail(f"{where}.endpoint has an entry that is not a URL: {url!r}")
            if "://" in url:
                parsed = urllib.parse.urlsplit(url)
                if parsed.scheme not in ("http", "https") or not parsed.netloc:
                    fail(f"{where}.endpoint {url!r} must be http(s)://host[:port][/path]")
        rewrites = []
        for pattern, replacement in _mapping(
            entry.get("rewrite"), f"{where}.rewrite", fail
        ).items():
            if not isinstance(replacement, str):
                fail(f"{where}.rewrite[{pattern!r}] must be a string")
            try:
                compiled = re.compile(str(pattern))
            except re.error as exc:
                fail(f"{where}.rewrite: {pattern!r} is not a valid regular expression: {exc}")
            rewrites.append(Rewrite(compiled, _go_replacement(replacement)))
        mirrors[str(registry)] = Mirror(tuple(urls), tuple(rewrites))
    configs: dict[str, HostConfig] = {}
    for host, entry in _mapping(top.get("configs"), "configs", fail).items():
        configs[str(host)] = _host_config(entry, f"configs.{host!s}", fail)
    return RegistriesConfig(mirrors, configs, source)


def _host_config(entry: Any, where: str, fail: Any) -> HostConfig:
    entry = _mapping(entry, where, fail)
    extra = set(entry) - {"auth", "tls"}
    if extra:
        fail(f"{where}: unknown key(s) {', '.join(sorted(map(str, extra)))} (expected auth, tls)")
    auth = _mapping(entry.get("auth"), f"{where}.auth", fail)
    tls = _mapping(entry.get("tls"), f"{where}.tls", fail)
    allowed_auth = {"username", "password", "auth", "identitytoken"}
    allowed_tls = {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}
    for name, keys, allowed in (("auth", auth, allowed_auth), ("tls", tls, allowed_tls)):
        extra = set(keys) - allowed
        if extra:
            fail(f"{where}.{name}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
        for key, value in keys.items():
            if key != "insecure_skip_verify" and not isinstance(value, str):
                fail(f"{where}.{name}.{key} must be a string")
    username, password = auth.get("username", ""), auth.get("password", "")
    if auth.get("auth"):
        try:
            decoded = base64.b64decode(auth["auth"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            fail(f"{where}.auth.auth is not base64 of 'username:password'")
        if ":" not in decoded:
            fail(f"{where}.auth.auth is not base64 of 'username:password'")
        username, _, password = decoded.partition(":")
    if bool(username) != bool(password):
        fail(f"{where}.auth needs both username and password")
    skip = tls.get("insecure_skip_verify", False)
    if not isinstance(skip, bool):
        fail(f"{where}.tls.insecure_skip_verify must be true or false")
    files: dict[str, Path | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        files[key] = Path(tls[key]) if tls.get(key) else None
        if files[key] is not None and not files[key].is_file():  # type: ignore[union-attr]
            fail(f"{where}.tls.{key}: {tls[key]} does not exist")
    if files["key_file"] and not files["cert_file"]:
        fail(f"{where}.tls.key_file needs cert_file")
    return HostConfig(
        username=username,
        password=password,
        identity_token=auth.get("identitytoken", ""),
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        insecure_skip_verify=skip,
    )


def load_registries(path: Path | str | None = None) -> RegistriesConfig:
    """Read a registries file. ``path`` None: ``$K3PY_REGISTRIES_CONFIG`` or the default file,
    either of which may be absent (an empty config); an explicit path must exist."""
    explicit = path is not None or bool(os.environ.get(REGISTRIES_FILE_ENV))
    chosen = Path(path or os.environ.get(REGISTRIES_FILE_ENV) or DEFAULT_REGISTRIES_FILE)
    try:
        text = chosen.read_text()
    except FileNotFoundError:
        if explicit:
            raise RegistriesConfigError(
                f"{chosen}: registries config file does not exist"
            ) from None
        return RegistriesConfig(source=str(chosen))
    except OSError as exc:
        raise RegistriesConfigError(
            f"{chosen}: cannot read registries config: {exc.strerror}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RegistriesConfigError(f"{chosen}: not valid YAML{where}: {problem}") from None
    return parse_registries(data, str(chosen))


# ---- the process-wide config the kubelet's pulls use ---------------------------------------------

_default: RegistriesConfig | None = None
_default_lock = threading.Lock()


def set_default_registries(config: RegistriesConfig | None) -> None:
    """Use ``config`` for pulls that pass none (None: load the file again on next use)."""
    global _default
    with _default_lock:
        _default = config


def default_registries() -> RegistriesConfig:
    """The config for pulls that pass none: set_default_registries', else the file (read once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = load_registries()
        return _default
