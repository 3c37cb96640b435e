"""Registry credentials from a pod's ``imagePullSecrets``, matched to an image's registry.

Secrets of type ``kubernetes.io/dockerconfigjson`` (``.dockerconfigjson``: ``{"auths": {...}}``)
and the older ``kubernetes.io/dockercfg`` (``.dockercfg``: the ``auths`` map itself) are read.
Each entry gives ``username``/``password`` or an ``auth`` of base64 ``user:password``; its key
is a registry host, optionally with a scheme and path (``https://index.docker.io/v1/`` is Docker
Hub). The first secret (in the pod's order) with an entry for the image's registry wins, as the
kubelet's keyring does for a single match.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from k3py.runtime.reference import ReferenceError_, parse_reference
from k3py.runtime.registry import Credentials

Obj = dict[str, Any]

DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def _registry_of_key(key: str) -> str:
    text = key if "://" in key else f"//{key}"
    host = urlsplit(text).netloc or key
    return "docker.io" if host in DOCKER_HUB_ALIASES else host


def _entries(secret: Obj) -> dict[str, Obj]:
    data = secret.get("data") or {}
    try:
        if ".dockerconfigjson" in data:
            return dict(json.loads(base64.b64decode(data[".dockerconfigjson"])).get("auths") or {})
        if ".dockercfg" in data:
            return dict(json.loads(base64.b64decode(data[".dockercfg"])))
    except (ValueError, binascii.Error, AttributeError):
        return {}
    return {}


def _credentials(entry: Obj) -> Credentials | None:
    if entry.get("username") or entry.get("password"):
        return Credentials(str(entry.get("username", "")), str(entry.get("password", "")))
    auth = entry.get("auth")
    if auth:
        try:
            user, _, password = base64.b64decode(auth).decode().partition(":")
        except (ValueError, binascii.Error):
            return None
        return Credentials(user, password)
    return None


def credentials_for(image: str, secrets: Iterable[Obj | None]) -> Credentials | None:
    """The credentials for ``image``'s registry from the pull secrets, or None."""
    try:
        registry = parse_reference(image).registry
    except ReferenceError_:
        return None
    registry = "docker.io" if registry in DOCKER_HUB_ALIASES else registry
    for secret in secrets:
        if not secret:
            continue
        for key, entry in _entries(secret).items():
            if _registry_of_key(key) == registry and isinstance(entry, dict):
                found = _credentials(entry)
                if found is not None:
                    return found
    return None
