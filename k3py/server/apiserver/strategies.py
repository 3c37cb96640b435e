"""What differs between kinds on the write path: Kubernetes' per-kind "REST strategies".

The generic registry calls these hooks; everything not listed here behaves the same for every
kind (built-in or CRD). Kept small on purpose: defaulting and validation of fields live in
``k3py.api.defaults`` / ``k3py.api.validation``, this module only holds the server-side rules
upstream hard-codes in each kind's strategy (which status a new object starts with, what
counts as a spec change, where Secret.stringData goes).
"""

from __future__ import annotations

import base64
from typing import Any

from k3py.api import errors
from k3py.api.meta import section
from k3py.api.resources import BUILTIN_GROUP_ORDER, ResourceInfo

# Kinds whose objects carry metadata.generation (those with a spec, plus every CRD: the registry
# decides for CRDs). ConfigMaps, Secrets, Events... have no generation upstream.
_NO_GENERATION_KINDS = frozenset(
    {
        ("", "ConfigMap"), ("", "Secret"), ("", "Event"), ("", "Endpoints"),
        ("", "ServiceAccount"), ("", "Binding"), ("", "ComponentStatus"),
        ("events.k8s.io", "Event"), ("discovery.k8s.io", "EndpointSlice"),
        ("rbac.authorization.k8s.io", "Role"), ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "RoleBinding"), ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("storage.k8s.io", "StorageClass"), ("scheduling.k8s.io", "PriorityClass"),
        ("apps", "ControllerRevision"), ("node.k8s.io", "RuntimeClass"),
    }
)  # fmt: skip

# Kinds whose status a client may set on create (the kubelet registers a Node with its status).
_STATUS_KEPT_ON_CREATE = frozenset({("", "Node"), ("", "Event")})


def has_status_subresource(info: ResourceInfo) -> bool:
    return info.subresource("status") is not None


def tracks_generation(info: ResourceInfo) -> bool:
    return (info.group, info.kind) not in _NO_GENERATION_KINDS


def _require_objects(info: ResourceInfo, obj: dict[str, Any], *fields: str) -> None:
    """The top-level fields the server reads must be JSON objects (else a 400, not a crash).

    Only for built-in kinds (a custom resource's schema decides its own shapes), and data /
    stringData only where they are string maps (ConfigMap, Secret)."""
    if info.group not in BUILTIN_GROUP_ORDER:
        return
    for name in fields:
        if name in ("data", "stringData") and info.kind not in ("ConfigMap", "Secret"):
            continue
        value = obj.get(name)
        if value is not None and not isinstance(value, dict):
            raise errors.bad_request(
                f"json: cannot unmarshal {type(value).__name__} into Go struct field {info.kind}.{name} of type object"
            )


def prepare_for_create(info: ResourceInfo, obj: dict[str, Any]) -> None:
    """Reset what a client may not choose on create (in place)."""
    _require_objects(info, obj, "spec", "status", "data", "stringData")
    key = (info.group, info.kind)
    if has_status_subresource(info) and key not in _STATUS_KEPT_ON_CREATE:
        if key == ("", "Pod"):
            obj["status"] = {"phase": "Pending"}
        elif key == ("", "Namespace"):
            obj["status"] = {"phase": "Active"}
        elif key in (("", "PersistentVolumeClaim"), ("", "PersistentVolume")):
            obj["status"] = {"phase": "Pending"}
        elif info.group in BUILTIN_GROUP_ORDER:
            obj["status"] = {}  # built-in status structs always print, even empty
        else:
            obj.pop("status", None)  # custom resources start without a status
    if key == ("", "Namespace"):
        spec = section(obj, "spec")
        if not spec.get("finalizers"):
            spec["finalizers"] = ["kubernetes"]
    if key == ("", "Secret"):
        fold_string_data(obj)


def prepare_for_update(info: ResourceInfo, new: dict[str, Any], old: dict[str, Any]) -> None:
    """Main-resource update: the status stays as stored when the kind has a status subresource."""
    _require_objects(info, new, "spec", "status", "data", "stringData")
    if has_status_subresource(info):
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    key = (info.group, info.kind)
    if key == ("", "Secret"):
        fold_string_data(new)
    if key == ("", "Namespace"):
        # Namespace finalizers are changed only through the /finalize subresource.
        section(new, "spec")["finalizers"] = (old.get("spec") or {}).get("finalizers", [])
        new["status"] = old.get("status", {})


def status_update(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A /status write: the stored object with only its status (and no spec) taken from the body."""
    result = {**old, "metadata": dict(old["metadata"])}
    if "status" in new:
        result["status"] = new["status"]
    else:
        result.pop("status", None)
    return result


def fold_string_data(secret: dict[str, Any]) -> None:
    """Secret.stringData is write-only: merged into data (base64) and never stored."""
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = dict(secret.get("data") or {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        secret["data"] = data


def ttl_seconds(info: ResourceInfo) -> int | None:
    """Events expire after an hour, as with the upstream default --event-ttl."""
    if info.kind == "Event" and info.group in ("", "events.k8s.io"):
        return 3600
    return None
