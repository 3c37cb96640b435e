"""Object validation as the Kubernetes API server applies it, with Kubernetes' own wording.

Two layers live here:

* **Syntax checks** for the string formats the API uses everywhere — RFC 1123 labels and
  subdomains, qualified names (label and annotation keys), label values, path-segment names.
  Each returns a list of human-readable problems, worded exactly like upstream's
  `k8s.io/apimachinery/pkg/util/validation`, so selector parsing and object validation print the
  same sentences a real cluster prints.
* **Object validation** (`validate_object`): first the object's JSON types are checked
  against its kind's typed structure (`k3py.api.proto.structure`; Kubernetes would refuse
  those while decoding, so they are reported alone), then metadata rules shared by every kind
  and the per-kind essentials kubectl users run into, returned as Status causes
  `{"field", "message", "reason"}`; with `old` set (an update) it also refuses changes to
  immutable fields.

Causes are built by the `_Errors` collector, whose methods mirror upstream's `field.Invalid`,
`field.Required`, ... so that a message reads `Invalid value: "Foo": <detail>` just like
`kubectl` users know it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import zoneinfo
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from k3py.api.proto.structure import check_object_meta, check_structure, type_causes_against
from k3py.api.quantity import parse_quantity

if TYPE_CHECKING:
    from k3py.api.resources import ResourceInfo

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + r"(\." + DNS1123_LABEL_FMT + ")*"
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)

_DNS1123_LABEL_RE = re.compile("^" + DNS1123_LABEL_FMT + "$")
_DNS1123_SUBDOMAIN_RE = re.compile("^" + DNS1123_SUBDOMAIN_FMT + "$")
_QUALIFIED_NAME_RE = re.compile("^" + QUALIFIED_NAME_FMT + "$")
_LABEL_VALUE_RE = re.compile("^" + LABEL_VALUE_FMT + "$")


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Upstream's RegexError sentence: the rule, examples, and the regex itself."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


def dns1123_label_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _DNS1123_LABEL_RE.match(value):
        errs.append(regex_error(DNS1123_LABEL_MSG, DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def dns1123_subdomain_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(regex_error(DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def path_segment_name_errors(value: str) -> list[str]:
    """RBAC objects (and a few others) only forbid names that break a URL path."""
    errs: list[str] = []
    if value in (".", ".."):
        errs.append(f"may not be '{value}'")
    for bad in ("/", "%"):
        if bad in value:
            errs.append(f"may not contain '{bad}'")
    return errs


def qualified_name_errors(value: str) -> list[str]:
    """A label/annotation key: optional DNS-subdomain prefix, '/', then a short name."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + e for e in dns1123_subdomain_errors(prefix))
    else:
        return [
            "a qualified name "
            + regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if name and not _QUALIFIED_NAME_RE.match(name):
        errs.append(
            "name part "
            + regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def label_value_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(max_len_error(LABEL_VALUE_MAX))
    if not _LABEL_VALUE_RE.match(value):
        errs.append(regex_error(LABEL_VALUE_MSG, LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character"
)
_DNS1035_LABEL_RE = re.compile("^" + DNS1035_LABEL_FMT + "$")
CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
CONFIG_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
_CONFIG_KEY_RE = re.compile("^" + CONFIG_KEY_FMT + "$")
_PORT_NAME_CHARS_RE = re.compile("^[-a-z0-9]+$")
_HAS_LETTER_RE = re.compile("[a-z]")

MAX_SECRET_SIZE = 1024 * 1024  # Secrets and ConfigMaps: 1 MiB of data
TOTAL_ANNOTATION_SIZE = 256 * 1024
CRONJOB_NAME_MAX = 52  # 63 minus the 11 characters the controller appends for Job names


def dns1035_label_errors(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _DNS1035_LABEL_RE.match(value):
        errs.append(regex_error(DNS1035_LABEL_MSG, DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def config_key_errors(value: str) -> list[str]:
    """Keys of ConfigMap and Secret data (they become file names in volumes)."""
    errs: list[str] = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _CONFIG_KEY_RE.match(value):
        errs.append(regex_error(CONFIG_KEY_MSG, CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def port_name_errors(value: str) -> list[str]:
    """An IANA service name, the only thing a named port may be called."""
    errs: list[str] = []
    if len(value) > 15:
        errs.append(max_len_error(15))
    if not _PORT_NAME_CHARS_RE.match(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _HAS_LETTER_RE.search(value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value and (value[0] == "-" or value[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def port_number_errors(value: Any) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return ["must be between 1 and 65535, inclusive"]
    return []


def env_var_name_errors(value: str) -> list[str]:
    # Kubernetes 1.32 relaxed env var names (RelaxedEnvironmentVariableValidation, on by default).
    if not value or any(c == "=" or not " " <= c <= "~" for c in value):
        return [
            "a valid environment variable name must consist only of printable ASCII characters "
            "other than '='"
        ]
    return []


def ip_errors(value: str) -> list[str]:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    return []


# ------------------------------------------------------------------------------ causes


def _go_value(value: Any) -> str:
    """A bad value as upstream's field errors print it: strings quoted, numbers and booleans
    bare, anything else as compact JSON with sorted keys (Go's json.Marshal)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class _Errors:
    """Collects causes; one method per upstream `field.*` error constructor."""

    def __init__(self) -> None:
        self.causes: list[dict[str, str]] = []

    def _add(self, reason: str, path: str, message: str) -> None:
        self.causes.append({"reason": reason, "message": message, "field": path})

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self._add("FieldValueInvalid", path, f"Invalid value: {_go_value(value)}: {detail}")

    def invalid_all(self, path: str, value: Any, problems: list[str]) -> None:
        for problem in problems:
            self.invalid(path, value, problem)

    def required(self, path: str, detail: str = "") -> None:
        self._add("FieldValueRequired", path, "Required value" + (f": {detail}" if detail else ""))

    def duplicate(self, path: str, value: Any) -> None:
        self._add("FieldValueDuplicate", path, f"Duplicate value: {_go_value(value)}")

    def not_found(self, path: str, value: Any) -> None:
        self._add("FieldValueNotFound", path, f"Not found: {_go_value(value)}")

    def not_supported(self, path: str, value: Any, supported: list[str]) -> None:
        shown = ", ".join(json.dumps(s) for s in supported)
        self._add(
            "FieldValueNotSupported",
            path,
            f"Unsupported value: {_go_value(value)}: supported values: {shown}",
        )

    def forbidden(self, path: str, detail: str) -> None:
        self._add("FieldValueForbidden", path, f"Forbidden: {detail}")

    def too_long(self, path: str, limit: int) -> None:
        self._add("FieldValueTooLong", path, f"Too long: may not be more than {limit} bytes")

    def immutable(self, path: str, value: Any) -> None:
        self.invalid(path, value, "field is immutable")

    def nonnegative(self, path: str, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            self.invalid(path, value, "must be greater than or equal to 0")

    def supported(self, path: str, value: Any, allowed: list[str], required: bool = True) -> None:
        if value in (None, ""):
            if required:
                self.required(path)
        elif value not in allowed:
            self.not_supported(path, value, allowed)


# ------------------------------------------------------------------------------ names


def _mask_trailing_dash(name: str) -> str:
    return name[:-1] + "a" if len(name) > 1 and name.endswith("-") else name


# Kinds whose names are not DNS-1123 subdomains.
_LABEL_NAMED = {("", "Namespace")}
_DNS1035_NAMED = {("", "Service")}
_PATH_SEGMENT_NAMED = {
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
}


def _name_errors(group: str, kind: str, name: str, prefix: bool = False) -> list[str]:
    if prefix:
        name = _mask_trailing_dash(name)
    if (group, kind) in _PATH_SEGMENT_NAMED:
        return path_segment_name_errors(name)
    if (group, kind) in _LABEL_NAMED:
        return dns1123_label_errors(name)
    if (group, kind) in _DNS1035_NAMED:
        return dns1035_label_errors(name)
    return dns1123_subdomain_errors(name)


def validate_name(info: ResourceInfo, name: str) -> list[str]:
    """Problems with `name` as the name of an object of this kind (empty list: valid)."""
    problems = _name_errors(info.group, info.kind, name)
    if (info.group, info.kind) == ("batch", "CronJob") and len(name) > CRONJOB_NAME_MAX:
        problems.append(max_len_error(CRONJOB_NAME_MAX))
    return problems


# ------------------------------------------------------------------------------ metadata


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _validate_labels(labels: Any, path: str, errs: _Errors) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        errs.invalid(path, labels, "must be a map of string keys to string values")
        return
    for key, value in labels.items():
        errs.invalid_all(path, key, qualified_name_errors(str(key)))
        if not isinstance(value, str):
            errs.invalid(path, value, "label values must be strings")
        else:
            errs.invalid_all(path, value, label_value_errors(value))


def _validate_annotations(annotations: Any, path: str, errs: _Errors) -> None:
    if annotations is None:
        return
    if not isinstance(annotations, dict):
        errs.invalid(path, annotations, "must be a map of string keys to string values")
        return
    total = 0
    for key, value in annotations.items():
        errs.invalid_all(path, key, qualified_name_errors(str(key).lower()))
        total += len(str(key).encode()) + len(str(value).encode())
    if total > TOTAL_ANNOTATION_SIZE:
        errs.too_long(path, TOTAL_ANNOTATION_SIZE)


def _validate_metadata(info: ResourceInfo, meta: Any, errs: _Errors) -> None:
    if not isinstance(meta, dict):
        errs.required("metadata")
        return
    group, kind = info.group, info.kind
    generate_name = meta.get("generateName")
    if generate_name:
        errs.invalid_all(
            "metadata.generateName", generate_name, _name_errors(group, kind, generate_name, True)
        )
    name = meta.get("name")
    if not name:
        errs.required("metadata.name", "name or generateName is required")
    else:
        errs.invalid_all("metadata.name", name, validate_name(info, str(name)))
    namespace = meta.get("namespace")
    if info.namespaced:
        if not namespace:
            errs.required("metadata.namespace")
        else:
            errs.invalid_all("metadata.namespace", namespace, dns1123_label_errors(str(namespace)))
    elif namespace:
        errs.forbidden("metadata.namespace", "not allowed on this type")
    errs.nonnegative("metadata.generation", meta.get("generation"))
    _validate_labels(meta.get("labels"), "metadata.labels", errs)
    _validate_annotations(meta.get("annotations"), "metadata.annotations", errs)
    for i, ref in _dicts(meta.get("ownerReferences")):
        path = f"metadata.ownerReferences[{i}]"
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                errs.invalid(f"{path}.{key}", ref.get(key) or "", f"{key} must not be empty")
    controllers = [r for _i, r in _dicts(meta.get("ownerReferences")) if r.get("controller")]
    if len(controllers) > 1:
        errs.invalid(
            "metadata.ownerReferences",
            [str(r.get("name", "")) for r in controllers],
            "Only one reference can have Controller set to true",
        )
    finalizers = meta.get("finalizers")
    if isinstance(finalizers, list):
        seen: set[str] = set()
        for i, finalizer in enumerate(finalizers):
            if not isinstance(finalizer, str):
                errs.invalid(f"metadata.finalizers[{i}]", finalizer, "must be a string")
                continue
            errs.invalid_all("metadata.finalizers", finalizer, qualified_name_errors(finalizer))
            if finalizer in seen:
                errs.duplicate(f"metadata.finalizers[{i}]", finalizer)
            seen.add(finalizer)


def _validate_metadata_update(
    meta: dict[str, Any], old_meta: dict[str, Any], errs: _Errors
) -> None:
    for key in ("name", "namespace"):
        if old_meta.get(key) and meta.get(key) != old_meta.get(key):
            errs.immutable(f"metadata.{key}", meta.get(key) or "")
    for key in ("uid", "creationTimestamp"):
        if old_meta.get(key) and meta.get(key) and meta.get(key) != old_meta.get(key):
            errs.immutable(f"metadata.{key}", meta.get(key))


# ------------------------------------------------------------------------------ pods


RESTART_POLICIES = ["Always", "OnFailure", "Never"]
DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]
_HANDLER_KEYS = ("exec", "httpGet", "tcpSocket", "grpc", "sleep")


def _validate_quantity(path: str, value: Any, errs: _Errors) -> Any:
    try:
        quantity = parse_quantity(value)
    except ValueError as exc:
        errs.invalid(path, value, str(exc))
        return None
    if quantity < 0:
        errs.invalid(path, value, "must be greater than or equal to 0")
    return quantity


def _validate_resources(resources: Any, path: str, errs: _Errors) -> None:
    if not isinstance(resources, dict):
        return
    parsed: dict[str, dict[str, Any]] = {}
    for part in ("limits", "requests"):
        values = resources.get(part)
        if not isinstance(values, dict):
            continue
        for name in values:
            _validate_container_resource_name(f"{path}.{part}[{name}]", str(name), errs)
        parsed[part] = {
            name: _validate_quantity(f"{path}.{part}[{name}]", value, errs)
            for name, value in values.items()
        }
    for name, request in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(name)
        if request is not None and limit is not None and request > limit:
            errs.invalid(
                f"{path}.requests[{name}]",
                resources["requests"][name],
                f"must be less than or equal to {name} limit of {resources['limits'][name]}",
            )


_CONTAINER_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
_STANDARD_RESOURCES = _CONTAINER_RESOURCES | {
    "storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
}


def _validate_container_resource_name(path: str, name: str, errs: _Errors) -> None:
    problems = qualified_name_errors(name)
    errs.invalid_all(path, name, problems)
    if problems or "/" in name:
        return
    hugepages = name.startswith("hugepages-")
    if name not in _STANDARD_RESOURCES and not hugepages:
        errs.invalid(path, name, "must be a standard resource type or fully qualified")
    if name not in _CONTAINER_RESOURCES and not hugepages:
        errs.invalid(path, name, "must be a standard resource for containers")


_TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]


def _validate_tolerations(tolerations: Any, path: str, errs: _Errors) -> None:
    for i, toleration in _dicts(tolerations):
        tpath = f"{path}[{i}]"
        key, operator = toleration.get("key") or "", toleration.get("operator") or ""
        value, effect = toleration.get("value") or "", toleration.get("effect") or ""
        if key:
            errs.invalid_all(f"{tpath}.key", key, qualified_name_errors(str(key)))
        if not key and operator != "Exists":
            errs.invalid(
                f"{tpath}.operator",
                operator,
                'operator must be Exists when `key` is empty, which means "match all values and all keys"',
            )
        if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.invalid(
                f"{tpath}.effect",
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            )
        if operator in ("", "Equal"):
            problems = label_value_errors(str(value))
            if problems:
                errs.invalid(f"{tpath}.operator", value, ";".join(problems))
        elif operator == "Exists":
            if value:
                errs.invalid(
                    f"{tpath}.operator",
                    toleration,
                    "value must be empty when `operator` is 'Exists'",
                )
        else:
            errs.not_supported(f"{tpath}.operator", operator, ["Equal", "Exists"])
        if effect and effect not in _TAINT_EFFECTS:
            errs.not_supported(f"{tpath}.effect", effect, _TAINT_EFFECTS)


_ENV_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")


def _validate_env_value_from(env: dict[str, Any], path: str, errs: _Errors) -> None:
    value_from = env.get("valueFrom")
    if not isinstance(value_from, dict):
        return
    sources = [key for key in _ENV_SOURCES if value_from.get(key) is not None]
    if not sources:
        errs.invalid(
            f"{path}.valueFrom",
            "",
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        )
    elif len(sources) > 1:
        errs.invalid(
            f"{path}.valueFrom", "", "may not have more than one field specified at a time"
        )
    if env.get("value"):
        errs.invalid(f"{path}.valueFrom", "", "may not be specified when `value` is not empty")
    for key in ("configMapKeyRef", "secretKeyRef"):
        ref = value_from.get(key)
        if isinstance(ref, dict):
            if not ref.get("name"):
                errs.required(f"{path}.valueFrom.{key}.name")
            if not ref.get("key"):
                errs.required(f"{path}.valueFrom.{key}.key")
            else:
                errs.invalid_all(
                    f"{path}.valueFrom.{key}.key", ref["key"], config_key_errors(str(ref["key"]))
                )
    field_ref = value_from.get("fieldRef")
    if isinstance(field_ref, dict) and not field_ref.get("fieldPath"):
        errs.required(f"{path}.valueFrom.fieldRef.fieldPath")


# The one field each common volume source cannot do without.
_VOLUME_REQUIRED = {
    "secret": "secretName",
    "configMap": "name",
    "persistentVolumeClaim": "claimName",
    "hostPath": "path",
    "nfs": "path",
}


def _validate_probe(probe: Any, path: str, errs: _Errors) -> None:
    if not isinstance(probe, dict):
        return
    handlers = [key for key in _HANDLER_KEYS if probe.get(key) is not None]
    if not handlers:
        errs.required(path, "must specify a handler type")
    elif len(handlers) > 1:
        errs.forbidden(f"{path}.{handlers[1]}", "may not specify more than 1 handler type")
    for key in (
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ):
        errs.nonnegative(f"{path}.{key}", probe.get(key))
    port = (
        _get(probe, "httpGet", "port")
        if probe.get("httpGet") is not None
        else _get(probe, "tcpSocket", "port")
    )
    if port is not None:
        sub = "httpGet" if probe.get("httpGet") is not None else "tcpSocket"
        _validate_port_num_or_name(f"{path}.{sub}.port", port, errs)


def _validate_port_num_or_name(path: str, port: Any, errs: _Errors) -> None:
    if isinstance(port, str):
        errs.invalid_all(path, port, port_name_errors(port))
    else:
        errs.invalid_all(path, port, port_number_errors(port))


def _validate_container(
    container: dict[str, Any], path: str, volumes: set[str], errs: _Errors
) -> None:
    name = container.get("name")
    if not name:
        errs.required(f"{path}.name")
    else:
        errs.invalid_all(f"{path}.name", name, dns1123_label_errors(str(name)))
    image = container.get("image")
    if not image:
        errs.required(f"{path}.image")
    elif isinstance(image, str) and image != image.strip():
        errs.invalid(f"{path}.image", image, "must not have leading or trailing whitespace")
    errs.supported(
        f"{path}.imagePullPolicy", container.get("imagePullPolicy"), PULL_POLICIES, required=False
    )
    port_names: set[str] = set()
    for i, port in _dicts(container.get("ports")):
        ppath = f"{path}.ports[{i}]"
        pname = port.get("name")
        if pname:
            errs.invalid_all(f"{ppath}.name", pname, port_name_errors(str(pname)))
            if pname in port_names:
                errs.duplicate(f"{ppath}.name", pname)
            port_names.add(pname)
        if port.get("containerPort") is None:
            errs.required(f"{ppath}.containerPort")
        else:
            errs.invalid_all(
                f"{ppath}.containerPort",
                port["containerPort"],
                port_number_errors(port["containerPort"]),
            )
        if port.get("hostPort"):
            errs.invalid_all(
                f"{ppath}.hostPort", port["hostPort"], port_number_errors(port["hostPort"])
            )
        errs.supported(f"{ppath}.protocol", port.get("protocol"), PROTOCOLS, required=False)
    for i, env in _dicts(container.get("env")):
        env_name = env.get("name")
        if not env_name:
            errs.required(f"{path}.env[{i}].name")
        else:
            errs.invalid_all(f"{path}.env[{i}].name", env_name, env_var_name_errors(str(env_name)))
        _validate_env_value_from(env, f"{path}.env[{i}]", errs)
    mount_paths: set[str] = set()
    for i, mount in _dicts(container.get("volumeMounts")):
        mpath = f"{path}.volumeMounts[{i}]"
        if not mount.get("name"):
            errs.required(f"{mpath}.name")
        elif mount["name"] not in volumes:
            errs.not_found(f"{mpath}.name", mount["name"])
        mount_path = mount.get("mountPath")
        if not mount_path:
            errs.required(f"{mpath}.mountPath")
        elif mount_path in mount_paths:
            errs.invalid(f"{mpath}.mountPath", mount_path, "must be unique")
        else:
            mount_paths.add(mount_path)
    _validate_resources(container.get("resources"), f"{path}.resources", errs)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _validate_probe(container.get(probe), f"{path}.{probe}", errs)


_VOLUME_SOURCES = (
    "hostPath emptyDir gcePersistentDisk awsElasticBlockStore gitRepo secret nfs iscsi glusterfs "
    "persistentVolumeClaim rbd flexVolume cinder cephfs flocker downwardAPI fc azureFile configMap "
    "vsphereVolume quobyte azureDisk photonPersistentDisk projected portworxVolume scaleIO "
    "storageos csi ephemeral image"
).split()


def _validate_container_restart_policy(
    key: str, container: dict[str, Any], path: str, errs: _Errors
) -> None:
    """Only init containers may set restartPolicy (Always: a sidecar); plain init containers
    run to completion, so they take no probes."""
    policy = container.get("restartPolicy")
    if key == "containers":
        if policy:
            errs.forbidden(f"{path}.restartPolicy", "may not be set for non-init containers")
        return
    if policy and policy != "Always":
        errs.not_supported(f"{path}.restartPolicy", policy, ["Always"])
    if policy != "Always":
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if container.get(probe) is not None:
                errs.forbidden(
                    f"{path}.{probe}",
                    "may not be set for init containers without restartPolicy=Always",
                )


def validate_pod_spec(spec: Any, path: str, errs: _Errors) -> None:
    """ValidatePodSpec's essentials, for Pods and every pod template."""
    if not isinstance(spec, dict):
        errs.required(path)
        return
    volumes: set[str] = set()
    for i, volume in _dicts(spec.get("volumes")):
        vpath = f"{path}.volumes[{i}]"
        vname = volume.get("name")
        if not vname:
            errs.required(f"{vpath}.name")
        else:
            errs.invalid_all(f"{vpath}.name", vname, dns1123_label_errors(str(vname)))
            if vname in volumes:
                errs.duplicate(f"{vpath}.name", vname)
            volumes.add(vname)
        for source, required_key in _VOLUME_REQUIRED.items():
            config = volume.get(source)
            if isinstance(config, dict) and not config.get(required_key):
                errs.required(f"{vpath}.{source}.{required_key}")
        sources = [s for s in _VOLUME_SOURCES if volume.get(s) is not None]
        if not sources:
            errs.required(vpath, "must specify a volume type")
        elif len(sources) > 1:
            errs.forbidden(f"{vpath}.{sources[1]}", "may not specify more than 1 volume type")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        errs.required(f"{path}.containers")
    names: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, container in _dicts(spec.get(key)):
            cpath = f"{path}.{key}[{i}]"
            _validate_container(container, cpath, volumes, errs)
            _validate_container_restart_policy(key, container, cpath, errs)
            cname = container.get("name")
            if cname:
                if cname in names:
                    errs.duplicate(f"{cpath}.name", cname)
                names.add(cname)
    errs.supported(
        f"{path}.restartPolicy", spec.get("restartPolicy"), RESTART_POLICIES, required=False
    )
    errs.supported(f"{path}.dnsPolicy", spec.get("dnsPolicy"), DNS_POLICIES, required=False)
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or not 1 <= deadline <= 2147483647):
        errs.invalid(
            f"{path}.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive"
        )
    for key in ("hostname", "subdomain"):
        if spec.get(key):
            errs.invalid_all(f"{path}.{key}", spec[key], dns1123_label_errors(str(spec[key])))
    if spec.get("serviceAccountName"):
        errs.invalid_all(
            f"{path}.serviceAccountName",
            spec["serviceAccountName"],
            dns1123_subdomain_errors(str(spec["serviceAccountName"])),
        )
    if spec.get("nodeName"):
        errs.invalid_all(
            f"{path}.nodeName", spec["nodeName"], dns1123_subdomain_errors(str(spec["nodeName"]))
        )
    _validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector", errs)
    _validate_tolerations(spec.get("tolerations"), f"{path}.tolerations", errs)
    _validate_pod_security(spec, path, errs)


# Pod security fields: user namespaces (hostUsers) and seccomp profiles. k3py has no user
# namespaces per pod, so ``hostUsers: false`` is refused here rather than silently ignored
# (upstream, with the feature off, drops the field; the pod would then run with the host's
# users, which is the opposite of what was asked).
USER_NAMESPACES_UNSUPPORTED = (
    "user namespaces are not supported by this k3py cluster: pods always run in the node's "
    "user namespace, so hostUsers must be true or unset"
)
SECCOMP_PROFILE_TYPES = ["Localhost", "RuntimeDefault", "Unconfined"]


def _validate_pod_security(spec: dict[str, Any], path: str, errs: _Errors) -> None:
    if spec.get("hostUsers") is False:
        errs.forbidden(f"{path}.hostUsers", USER_NAMESPACES_UNSUPPORTED)
        for key in ("hostNetwork", "hostPID", "hostIPC"):  # upstream's validateHostUsers
            if spec.get(key):
                errs.forbidden(f"{path}.{key}", "when `hostUsers` is false")
    security = spec.get("securityContext")
    if isinstance(security, dict):
        _validate_seccomp_profile(security.get("seccompProfile"), f"{path}.securityContext.seccompProfile", errs)
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for i, container in _dicts(spec.get(key)):
            security = container.get("securityContext")
            if isinstance(security, dict):
                _validate_seccomp_profile(
                    security.get("seccompProfile"), f"{path}.{key}[{i}].securityContext.seccompProfile", errs
                )


_HOST_USERS_CAUSES = (f"Forbidden: {USER_NAMESPACES_UNSUPPORTED}", "Forbidden: when `hostUsers` is false")


def _ratchet_host_users(causes: list[dict[str, str]], old: dict[str, Any]) -> list[dict[str, str]]:
    """An object stored before k3py refused ``hostUsers: false`` must still take updates
    (status writes, scaling), as upstream ratchets validation: drop the refusal where the
    stored object already had ``hostUsers: false`` at the same place."""

    def stored_false(spec_path: str) -> bool:
        node: Any = old
        for key in spec_path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        return isinstance(node, dict) and node.get("hostUsers") is False

    return [
        c for c in causes
        if not (c["message"] in _HOST_USERS_CAUSES and stored_false(c["field"].rpartition(".")[0]))
    ]  # fmt: skip


def _validate_seccomp_profile(profile: Any, path: str, errs: _Errors) -> None:
    """Upstream's validateSeccompProfileField: a known type; localhostProfile exactly for
    Localhost, and then a relative path that never steps up (it names a file in the
    kubelet's seccomp dir)."""
    if profile is None:
        return
    if not isinstance(profile, dict):
        errs.invalid(path, profile, "must be an object")
        return
    kind = profile.get("type")
    if not kind:
        errs.required(f"{path}.type", "type is required when seccompProfile is set")
    elif kind not in SECCOMP_PROFILE_TYPES:
        errs.not_supported(f"{path}.type", kind, SECCOMP_PROFILE_TYPES)
    local = profile.get("localhostProfile")
    if kind == "Localhost":
        if local is None:
            errs.required(f"{path}.localhostProfile", "must be set when seccomp type is Localhost")
            return
        text = str(local)
        if text.startswith("/"):
            errs.invalid(f"{path}.localhostProfile", local, "must be a relative path")
        if ".." in text.split("/"):
            errs.invalid(f"{path}.localhostProfile", local, "must not contain '..'")
    elif local is not None:
        errs.invalid(f"{path}.localhostProfile", profile, "can only be set when seccomp type is Localhost")


def _validate_pod_template(template: Any, path: str, errs: _Errors) -> None:
    if not isinstance(template, dict):
        errs.required(path)
        return
    meta = template.get("metadata") or {}
    _validate_labels(meta.get("labels"), f"{path}.metadata.labels", errs)
    _validate_annotations(meta.get("annotations"), f"{path}.metadata.annotations", errs)
    validate_pod_spec(template.get("spec"), f"{path}.spec", errs)


def _validate_pod(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    validate_pod_spec(obj.get("spec"), "spec", errs)
    if old is not None:
        _validate_pod_update(obj.get("spec") or {}, old.get("spec") or {}, errs)


# What a Pod update may change (upstream ValidatePodUpdate): images, activeDeadlineSeconds,
# added tolerations, terminationGracePeriodSeconds; nodeName may go from unset to set because
# a binding passes through the same validation here.
_POD_UPDATE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
    "set to 1 if it was previously negative)"
)


def _pod_spec_mutable_masked(spec: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    # Shallow copies down to the containers: only keys at those two levels are dropped.
    masked = dict(spec)
    for key in ("initContainers", "containers", "ephemeralContainers"):
        containers = masked.get(key)
        if isinstance(containers, list):
            masked[key] = [
                # in-place resize goes through its own subresource, so resources may change too
                {k: v for k, v in c.items() if k not in ("image", "resources")} if isinstance(c, dict) else c
                for c in containers
            ]
    for key in (
        "activeDeadlineSeconds",
        "tolerations",
        "terminationGracePeriodSeconds",
        "schedulingGates",
    ):
        masked.pop(key, None)
    if not old.get("nodeName"):
        masked.pop("nodeName", None)
    return masked


def _validate_pod_update(spec: dict[str, Any], old: dict[str, Any], errs: _Errors) -> None:
    # An unchanged spec (every status write) needs no masking to compare equal.
    if spec != old and _pod_spec_mutable_masked(spec, old) != _pod_spec_mutable_masked(old, old):
        errs.forbidden("spec", _POD_UPDATE_MESSAGE)
    old_tolerations = old.get("tolerations") or []
    new_tolerations = spec.get("tolerations") or []
    if any(t not in new_tolerations for t in old_tolerations):
        errs.forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        )


# ------------------------------------------------------------------------------ workloads


def _validate_selector(
    selector: Any, path: str, errs: _Errors, required: bool = True, owner: str = ""
) -> Any:
    """Check a metav1.LabelSelector; returns the parsed selector or None."""
    from k3py.api.selectors import SelectorError, label_selector_from_dict  # selectors uses us

    if selector is None:
        if required:
            errs.required(path)
        return None
    try:
        parsed = label_selector_from_dict(selector)
    except SelectorError as exc:
        errs.invalid(path, selector, str(exc))
        return None
    if owner and parsed.empty:
        errs.invalid(path, selector, f"empty selector is invalid for {owner}")
    return parsed


def _validate_template_for_selector(
    spec: dict[str, Any], selector: Any, path: str, errs: _Errors, restart_always: bool = True
) -> None:
    template = spec.get("template")
    _validate_pod_template(template, f"{path}.template", errs)
    if not isinstance(template, dict):
        return
    labels = _get(template, "metadata", "labels") or {}
    if selector is not None and not selector.empty and not selector.matches(labels):
        errs.invalid(
            f"{path}.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        )
    restart = _get(template, "spec", "restartPolicy")
    if restart_always and restart != "Always":
        errs.not_supported(f"{path}.template.spec.restartPolicy", restart or "", ["Always"])
    if restart_always and _get(template, "spec", "activeDeadlineSeconds") is not None:
        errs.forbidden(
            f"{path}.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        )


def _percent_or_int_zero(value: Any) -> bool:
    return value in (0, "0%", "0")


def _validate_int_or_percent(path: str, value: Any, errs: _Errors) -> None:
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]+%", value):
            errs.invalid(
                path,
                value,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )
        elif int(value[:-1]) > 100:
            errs.invalid(path, value, "must not be greater than 100%")
    elif isinstance(value, int):
        errs.nonnegative(path, value)


def _validate_deployment(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    errs.nonnegative("spec.replicas", spec.get("replicas"))
    selector = _validate_selector(spec.get("selector"), "spec.selector", errs, owner="deployment")
    _validate_template_for_selector(spec, selector, "spec", errs)
    strategy = spec.get("strategy") or {}
    errs.supported(
        "spec.strategy.type", strategy.get("type"), ["Recreate", "RollingUpdate"], required=False
    )
    rolling = strategy.get("rollingUpdate")
    if strategy.get("type") == "Recreate" and rolling is not None:
        errs.forbidden(
            "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"
        )
    if isinstance(rolling, dict):
        surge, unavailable = rolling.get("maxSurge"), rolling.get("maxUnavailable")
        _validate_int_or_percent("spec.strategy.rollingUpdate.maxUnavailable", unavailable, errs)
        _validate_int_or_percent("spec.strategy.rollingUpdate.maxSurge", surge, errs)
        if _percent_or_int_zero(surge) and _percent_or_int_zero(unavailable):
            errs.invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                unavailable,
                "may not be 0 when `maxSurge` is 0",
            )
    for key in ("minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds"):
        errs.nonnegative(f"spec.{key}", spec.get(key))
    deadline, ready = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds") or 0
    if isinstance(deadline, int) and isinstance(ready, int) and deadline <= ready:
        errs.invalid(
            "spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"
        )
    _immutable_selector(obj, old, errs)


def _immutable_selector(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    if old is None:
        return
    new_sel, old_sel = _get(obj, "spec", "selector"), _get(old, "spec", "selector")
    if old_sel is not None and new_sel != old_sel:
        errs.immutable("spec.selector", new_sel)


def _validate_replicaset(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    errs.nonnegative("spec.replicas", spec.get("replicas"))
    errs.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    selector = _validate_selector(spec.get("selector"), "spec.selector", errs, owner="replicaset")
    _validate_template_for_selector(spec, selector, "spec", errs)
    _immutable_selector(obj, old, errs)


def _validate_replication_controller(
    obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors
) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    errs.nonnegative("spec.replicas", spec.get("replicas"))
    selector_map = spec.get("selector")
    if not selector_map:
        errs.required("spec.selector")
        selector = None
    else:
        _validate_labels(selector_map, "spec.selector", errs)
        selector = _validate_selector({"matchLabels": selector_map}, "spec.selector", errs)
    _validate_template_for_selector(spec, selector, "spec", errs)


_STS_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _validate_statefulset(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    errs.nonnegative("spec.replicas", spec.get("replicas"))
    errs.supported(
        "spec.podManagementPolicy",
        spec.get("podManagementPolicy"),
        ["OrderedReady", "Parallel"],
        required=False,
    )
    errs.supported(
        "spec.updateStrategy.type",
        _get(spec, "updateStrategy", "type"),
        ["RollingUpdate", "OnDelete"],
        required=False,
    )
    selector = _validate_selector(spec.get("selector"), "spec.selector", errs, owner="statefulset")
    # The pods get a volume per claim template, so mounts may name those (as upstream allows).
    claim_names = [_get(c, "metadata", "name") for _, c in _dicts(spec.get("volumeClaimTemplates"))]
    template_spec = _get(spec, "template", "spec")
    volumes = template_spec.get("volumes") if isinstance(template_spec, dict) else None
    if claim_names and isinstance(template_spec, dict) and isinstance(volumes or [], list):
        own = {v.get("name") for _, v in _dicts(volumes)}
        extra = [{"name": n, "persistentVolumeClaim": {"claimName": n}} for n in claim_names if n and n not in own]
        template = {**spec["template"], "spec": {**template_spec, "volumes": [*(volumes or []), *extra]}}
        spec = {**spec, "template": template}
    _validate_template_for_selector(spec, selector, "spec", errs)
    for i, claim in _dicts(spec.get("volumeClaimTemplates")):
        cname = _get(claim, "metadata", "name")
        if not cname:
            errs.required(f"spec.volumeClaimTemplates[{i}].metadata.name")
    if old is not None:
        old_spec = old.get("spec") or {}
        rest = {k: v for k, v in spec.items() if k not in _STS_MUTABLE}
        old_rest = {k: v for k, v in old_spec.items() if k not in _STS_MUTABLE}
        if rest != old_rest:
            errs.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                "'minReadySeconds' are forbidden",
            )


def _validate_daemonset(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    selector = _validate_selector(spec.get("selector"), "spec.selector", errs, owner="daemonset")
    _validate_template_for_selector(spec, selector, "spec", errs)
    strategy = spec.get("updateStrategy") or {}
    errs.supported(
        "spec.updateStrategy.type",
        strategy.get("type"),
        ["OnDelete", "RollingUpdate"],
        required=False,
    )
    rolling = strategy.get("rollingUpdate")
    if isinstance(rolling, dict):
        _validate_int_or_percent(
            "spec.updateStrategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable"), errs
        )
        _validate_int_or_percent(
            "spec.updateStrategy.rollingUpdate.maxSurge", rolling.get("maxSurge"), errs
        )
        if _percent_or_int_zero(rolling.get("maxSurge")) and _percent_or_int_zero(
            rolling.get("maxUnavailable")
        ):
            errs.invalid(
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                rolling.get("maxUnavailable"),
                "may not be 0 when `maxSurge` is 0",
            )
    _immutable_selector(obj, old, errs)


def _validate_job_spec(spec: Any, path: str, errs: _Errors, old_spec: Any = None) -> None:
    if not isinstance(spec, dict):
        errs.required(path)
        return
    for key in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        errs.nonnegative(f"{path}.{key}", spec.get(key))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= 0:
        errs.invalid(
            f"{path}.activeDeadlineSeconds", deadline, "must be greater than or equal to 1"
        )
    errs.supported(
        f"{path}.completionMode",
        spec.get("completionMode"),
        ["NonIndexed", "Indexed"],
        required=False,
    )
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        errs.required(f"{path}.completions", "when completion mode is Indexed")
    selector = None
    if spec.get("selector") is not None:
        selector = _validate_selector(spec.get("selector"), f"{path}.selector", errs)
    _validate_template_for_selector(spec, selector, path, errs, restart_always=False)
    restart = _get(spec, "template", "spec", "restartPolicy")
    if restart not in ("OnFailure", "Never"):
        errs.not_supported(
            f"{path}.template.spec.restartPolicy", restart or "", ["OnFailure", "Never"]
        )
    if isinstance(old_spec, dict):
        for key in ("selector", "completionMode"):
            if old_spec.get(key) is not None and spec.get(key) != old_spec.get(key):
                errs.immutable(f"{path}.{key}", spec.get(key))
        if (
            old_spec.get("template") is not None
            and spec.get("template") != old_spec.get("template")
            and not old_spec.get("suspend")
        ):
            errs.immutable(f"{path}.template", spec.get("template"))


def _validate_job(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    _validate_job_spec(obj.get("spec"), "spec", errs, (old or {}).get("spec"))


_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
_CRON_NAMES = {
    3: {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
}
_CRON_DESCRIPTORS = {
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
}


def cron_schedule_errors(schedule: str) -> list[str]:
    """Standard 5-field cron (and @descriptors), as the CronJob controller's parser accepts."""
    text = schedule.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        return ["cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
    if text in _CRON_DESCRIPTORS:
        return []
    if text.startswith("@every "):
        return (
            []
            if re.fullmatch(r"@every (\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", text)
            else [f"failed to parse duration {text}"]
        )
    if text.startswith("@"):
        return [f"unrecognized descriptor: {text}"]
    fields = text.split()
    if len(fields) != 5:
        return [f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]"]
    for index, (field_text, (label, low, high)) in enumerate(
        zip(fields, _CRON_FIELDS, strict=True)
    ):
        names = _CRON_NAMES.get(index, {})
        for part in field_text.split(","):
            problem = _cron_part_error(part, low, high, names, allow_question=index in (2, 4))
            if problem:
                return [f"{problem} in {label} field"]
    return []


def time_zone_errors(name: str) -> list[str]:
    """A CronJob timeZone must be an IANA zone name the host's tz database knows."""
    if name.startswith((".", "/")) or ".." in name or name.lower() == "local":
        return [f"unknown time zone {name}"]
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return [f"unknown time zone {name}"]
    return []


def _cron_part_error(
    part: str, low: int, high: int, names: dict[str, int], allow_question: bool
) -> str:
    range_text, _, step = part.partition("/")
    if step and not step.isdigit():
        return f"failed to parse int from {step}"
    if step and int(step) == 0:
        return "step of range should be a positive number"
    if range_text == "*" or (allow_question and range_text == "?"):
        return ""

    def number(text: str) -> int | None:
        if text.lower() in names:
            return names[text.lower()]
        return int(text) if text.isdigit() else None

    start_text, _, end_text = range_text.partition("-")
    start = number(start_text)
    end = number(end_text) if end_text else start
    if start is None or end is None:
        return f"failed to parse int from {start_text if start is None else end_text}"
    if start < low:
        return f"beginning of range ({start}) below minimum ({low})"
    if end > high:
        return f"end of range ({end}) above maximum ({high})"
    if start > end:
        return f"beginning of range ({start}) beyond end of range ({end})"
    return ""


def _validate_cronjob(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    schedule = spec.get("schedule")
    if not schedule:
        errs.required("spec.schedule")
    else:
        errs.invalid_all("spec.schedule", schedule, cron_schedule_errors(str(schedule)))
    time_zone = spec.get("timeZone")
    if time_zone:
        errs.invalid_all("spec.timeZone", time_zone, time_zone_errors(str(time_zone)))
    errs.supported(
        "spec.concurrencyPolicy",
        spec.get("concurrencyPolicy"),
        ["Allow", "Forbid", "Replace"],
        required=False,
    )
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        errs.nonnegative(f"spec.{key}", spec.get(key))
    job_spec = _get(spec, "jobTemplate", "spec")
    _validate_job_spec(job_spec, "spec.jobTemplate.spec", errs)


# ------------------------------------------------------------------------------ core objects


SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]


def _validate_service(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    service_type = spec.get("type") or "ClusterIP"
    errs.supported("spec.type", spec.get("type"), SERVICE_TYPES, required=False)
    errs.supported(
        "spec.sessionAffinity", spec.get("sessionAffinity"), ["ClientIP", "None"], required=False
    )
    cluster_ip = spec.get("clusterIP") or ""
    ports = spec.get("ports")
    if service_type == "ExternalName":
        external = spec.get("externalName")
        if not external:
            errs.required("spec.externalName")
        else:
            errs.invalid_all(
                "spec.externalName", external, dns1123_subdomain_errors(str(external).rstrip("."))
            )
    elif not ports and cluster_ip != "None":
        errs.required("spec.ports")
    if cluster_ip and cluster_ip != "None":
        errs.invalid_all("spec.clusterIP", cluster_ip, ip_errors(cluster_ip))
    if cluster_ip == "None" and service_type in ("NodePort", "LoadBalancer"):
        errs.invalid(
            "spec.clusterIPs[0]",
            "None",
            "may not be set to 'None' for LoadBalancer or NodePort services",
        )
    port_list = _dicts(ports)
    names: set[str] = set()
    seen_ports: set[tuple[Any, Any]] = set()
    seen_node_ports: set[tuple[Any, Any]] = set()
    for i, port in port_list:
        path = f"spec.ports[{i}]"
        pname = port.get("name")
        if len(port_list) > 1 and not pname:
            errs.required(f"{path}.name")
        elif pname:
            errs.invalid_all(f"{path}.name", pname, dns1123_label_errors(str(pname)))
            if pname in names:
                errs.duplicate(f"{path}.name", pname)
            names.add(pname)
        errs.invalid_all(f"{path}.port", port.get("port"), port_number_errors(port.get("port")))
        errs.supported(f"{path}.protocol", port.get("protocol"), PROTOCOLS)
        target = port.get("targetPort")
        if target is not None:
            _validate_port_num_or_name(f"{path}.targetPort", target, errs)
        node_port = port.get("nodePort")
        if node_port:
            if service_type not in ("NodePort", "LoadBalancer"):
                errs.forbidden(
                    f"{path}.nodePort", f"may not be used when `type` is '{service_type}'"
                )
            else:
                errs.invalid_all(f"{path}.nodePort", node_port, port_number_errors(node_port))
            if (node_port, port.get("protocol")) in seen_node_ports:
                errs.duplicate(f"{path}.nodePort", node_port)
            seen_node_ports.add((node_port, port.get("protocol")))
        key = (port.get("port"), port.get("protocol"))
        if key in seen_ports:
            errs.duplicate(path, f"{key[0]}/{key[1]}")
        seen_ports.add(key)
    if spec.get("externalTrafficPolicy") and service_type not in ("NodePort", "LoadBalancer"):
        errs.invalid(
            "spec.externalTrafficPolicy",
            spec["externalTrafficPolicy"],
            "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        )
    errs.supported(
        "spec.externalTrafficPolicy",
        spec.get("externalTrafficPolicy"),
        ["Cluster", "Local"],
        required=False,
    )
    errs.supported(
        "spec.internalTrafficPolicy",
        spec.get("internalTrafficPolicy"),
        ["Cluster", "Local"],
        required=False,
    )
    _validate_service_addresses(spec, old, service_type, errs)
    _validate_labels(spec.get("selector"), "spec.selector", errs)
    if old is not None:
        old_ip = _get(old, "spec", "clusterIP")
        old_type = _get(old, "spec", "type") or "ClusterIP"
        # An unset clusterIP on update keeps the allocated one (the server fills it back in);
        # moving to or from ExternalName releases/allocates, as upstream allows.
        if (
            old_ip
            and cluster_ip
            and cluster_ip != old_ip
            and "ExternalName" not in (service_type, old_type)
        ):
            errs.immutable("spec.clusterIP", cluster_ip)


def _non_special_ip_errors(value: str) -> list[str]:
    """Upstream's ValidateNonSpecialIP (externalIPs): addresses that name no other host."""
    problems = ip_errors(value)
    if problems:
        return problems
    address = ipaddress.ip_address(value)
    if address.is_unspecified:
        return ["may not be unspecified (0.0.0.0, ::)"]
    if address.is_loopback:
        return ["may not be in the loopback range (127.0.0.0/8, ::1/128)"]
    if address.is_link_local:
        return ["may not be in the link-local range (169.254.0.0/16, fe80::/10)"]
    if address in ipaddress.ip_network("224.0.0.0/24") or address in ipaddress.ip_network("ff02::/10"):
        return ["may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"]
    return []


MAX_CLIENT_IP_AFFINITY_SECONDS = 86400


def _validate_service_addresses(spec: dict[str, Any], old: dict[str, Any] | None, service_type: str, errs: _Errors) -> None:
    """externalIPs, session affinity's timeout and healthCheckNodePort, as upstream."""
    external_ips = spec.get("externalIPs")
    if external_ips is not None and not isinstance(external_ips, list):
        errs.invalid("spec.externalIPs", external_ips, "must be a list of IP addresses")
    else:
        for i, ip in enumerate(external_ips or ()):
            errs.invalid_all(f"spec.externalIPs[{i}]", ip, _non_special_ip_errors(str(ip)) if isinstance(ip, str)
                             else ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"])
    config = spec.get("sessionAffinityConfig")
    if config:
        path = "spec.sessionAffinityConfig"
        if spec.get("sessionAffinity", "None") != "ClientIP":
            errs.invalid(path, config, "must not be set when session affinity is None")
        else:
            timeout = _get(config, "clientIP", "timeoutSeconds")
            if timeout is not None and (
                isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= MAX_CLIENT_IP_AFFINITY_SECONDS
            ):
                errs.invalid(f"{path}.clientIP.timeoutSeconds", timeout,
                             f"must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}")
    health = spec.get("healthCheckNodePort")
    if health:
        needs = service_type == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"
        kept = old is not None and _get(old, "spec", "healthCheckNodePort") == health  # released by the server
        if not needs and not kept:
            errs.invalid("spec.healthCheckNodePort", health,
                         "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
        elif needs:
            errs.invalid_all("spec.healthCheckNodePort", health, port_number_errors(health))


def _validate_data_keys(obj: dict[str, Any], errs: _Errors, binary_field: str, decode: bool) -> int:
    """Check ConfigMap/Secret keys; returns the total data size in bytes."""
    total = 0
    seen: dict[str, str] = {}
    for section in ("data", binary_field, "stringData"):
        values = obj.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            errs.invalid(section, values, "must be a map of string keys to values")
            continue
        for key, value in values.items():
            path = f"{section}[{key}]"
            errs.invalid_all(path, key, config_key_errors(str(key)))
            if key in seen and section != "stringData":
                errs.invalid(path, key, f"duplicate of key present in {seen[key]}")
            seen.setdefault(key, section)
            if not isinstance(value, str):
                errs.invalid(path, value, "must be a string")
                continue
            if section == binary_field or (decode and section == "data"):
                try:
                    total += len(base64.b64decode(value, validate=True))
                except (binascii.Error, ValueError):
                    errs.invalid(path, "<value omitted>", "must be base64-encoded")
            else:
                total += len(value.encode())
    return total


def _immutable_data(
    obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors, sections: tuple[str, ...]
) -> None:
    if old is None or not old.get("immutable"):
        return
    if not obj.get("immutable"):
        errs.forbidden("immutable", "field is immutable when `immutable` is set")
    for section in sections:
        if (obj.get(section) or {}) != (old.get(section) or {}):
            errs.forbidden(section, "field is immutable when `immutable` is set")


def _validate_configmap(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    total = _validate_data_keys(obj, errs, "binaryData", decode=False)
    if total > MAX_SECRET_SIZE:
        errs.too_long("", MAX_SECRET_SIZE)
    _immutable_data(obj, old, errs, ("data", "binaryData"))


_SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


def _validate_secret(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    total = _validate_data_keys(obj, errs, "", decode=True)
    if total > MAX_SECRET_SIZE:
        errs.too_long("data", MAX_SECRET_SIZE)
    secret_type = obj.get("type") or "Opaque"
    data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
    present = set(data) | set(obj.get("stringData") or {})
    for key in _SECRET_REQUIRED_KEYS.get(secret_type, ()):
        if key not in present:
            errs.required(f"data[{key}]")
    if secret_type == "kubernetes.io/service-account-token" and not _get(
        obj, "metadata", "annotations", "kubernetes.io/service-account.name"
    ):
        errs.required("metadata.annotations[kubernetes.io/service-account.name]")
    if secret_type == "kubernetes.io/basic-auth" and not present & {"username", "password"}:
        errs.required("data[username]")
        errs.required("data[password]")
    if secret_type == "kubernetes.io/dockerconfigjson" and ".dockerconfigjson" in data:
        try:
            json.loads(base64.b64decode(data[".dockerconfigjson"]))
        except (ValueError, binascii.Error):
            errs.invalid("data[.dockerconfigjson]", "<secret contents redacted>", "invalid JSON")
    if old is not None:
        old_type = old.get("type") or "Opaque"
        if old_type != secret_type:
            errs.immutable("type", secret_type)
    _immutable_data(obj, old, errs, ("data",))


def _validate_namespace(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    for i, finalizer in enumerate(_get(obj, "spec", "finalizers") or []):
        if not isinstance(finalizer, str):
            errs.invalid(f"spec.finalizers[{i}]", finalizer, "must be a string")
            continue
        errs.invalid_all("spec.finalizers", finalizer, qualified_name_errors(finalizer))


_ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]


def _validate_pvc(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    modes = spec.get("accessModes")
    if not modes:
        errs.required("spec.accessModes", "at least 1 access mode is required")
    for mode in modes or []:
        if mode not in _ACCESS_MODES:
            errs.not_supported("spec.accessModes", mode, _ACCESS_MODES)
    storage = _get(spec, "resources", "requests", "storage")
    if storage is None:
        errs.required("spec.resources[storage]")
    else:
        quantity = _validate_quantity("spec.resources[storage]", storage, errs)
        if quantity is not None and quantity <= 0:
            errs.invalid("spec.resources[storage]", storage, "must be greater than zero")
    errs.supported(
        "spec.volumeMode", spec.get("volumeMode"), ["Block", "Filesystem"], required=False
    )
    if old is not None:
        old_spec = old.get("spec") or {}

        old_annotations = _get(old, "metadata", "annotations") or {}
        new_annotations = _get(obj, "metadata", "annotations") or {}
        class_may_change = _storage_class_set_from_annotation(
            old_annotations, new_annotations, old_spec.get("storageClassName"), spec.get("storageClassName")
        )
        if not class_may_change:
            if old_annotations.get(_BETA_STORAGE_CLASS) != new_annotations.get(_BETA_STORAGE_CLASS):
                errs.invalid(
                    f"metadata.annotations[{_BETA_STORAGE_CLASS}]",
                    new_annotations.get(_BETA_STORAGE_CLASS, ""),
                    "field is immutable",
                )
            class_may_change = _storage_class_set_from_nil(
                old_annotations, old_spec.get("storageClassName"), spec.get("storageClassName")
            )

        def frozen(s: dict[str, Any]) -> dict[str, Any]:
            out = {
                k: v for k, v in s.items() if k not in ("resources", "volumeAttributesClassName")
            }
            if not old_spec.get("volumeName"):
                out.pop("volumeName", None)  # binding sets it once
            if class_may_change or out.get("storageClassName") is None:
                out.pop("storageClassName", None)  # null and absent are the same nil
            return out

        if frozen(spec) != frozen(old_spec):
            errs.forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and "
                "volumeAttributesClassName for bound claims",
            )


_BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"


def _storage_class_set_from_annotation(
    old_annotations: dict[str, Any], new_annotations: dict[str, Any], old_class: Any, new_class: Any
) -> bool:
    """A claim created with the beta annotation may copy that class into spec.storageClassName
    (once, while the field is unset, and only the annotation's value)."""
    if _BETA_STORAGE_CLASS not in old_annotations or old_class is not None:
        return False
    annotated = old_annotations[_BETA_STORAGE_CLASS]
    if new_annotations.get(_BETA_STORAGE_CLASS, annotated) != annotated:
        return False
    return new_class is not None and new_class == annotated


def _storage_class_set_from_nil(old_annotations: dict[str, Any], old_class: Any, new_class: Any) -> bool:
    """Retroactive default StorageClass (GA in 1.28): a claim without a class and without the
    beta annotation may be given a non-empty class later."""
    return _BETA_STORAGE_CLASS not in old_annotations and old_class is None and bool(new_class)


_RBAC_GROUP = "rbac.authorization.k8s.io"


def _validate_rules(obj: dict[str, Any], errs: _Errors, namespaced: bool) -> None:
    if obj.get("aggregationRule") is not None:
        return  # aggregated ClusterRoles get their rules from the controller
    for i, rule in _dicts(obj.get("rules")):
        path = f"rules[{i}]"
        if not rule.get("verbs"):
            errs.required(f"{path}.verbs", "verbs must contain at least one value")
        if rule.get("nonResourceURLs"):
            if namespaced:
                errs.invalid(
                    f"{path}.nonResourceURLs",
                    rule["nonResourceURLs"],
                    "namespaced rules cannot apply to non-resource URLs",
                )
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                errs.invalid(
                    f"{path}.nonResourceURLs",
                    rule["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            continue
        if not rule.get("apiGroups"):
            errs.required(f"{path}.apiGroups", "resource rules must supply at least one api group")
        if not rule.get("resources"):
            errs.required(f"{path}.resources", "resource rules must supply at least one resource")


def _validate_role(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    _validate_rules(obj, errs, namespaced=True)


def _validate_cluster_role(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    _validate_rules(obj, errs, namespaced=False)


def _validate_binding(
    obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors, kinds: list[str]
) -> None:
    ref = obj.get("roleRef")
    if not isinstance(ref, dict):
        errs.required("roleRef")
    else:
        if ref.get("apiGroup") != _RBAC_GROUP:
            errs.not_supported("roleRef.apiGroup", ref.get("apiGroup") or "", [_RBAC_GROUP])
        errs.supported("roleRef.kind", ref.get("kind"), kinds)
        if not ref.get("name"):
            errs.required("roleRef.name")
        else:
            errs.invalid_all(
                "roleRef.name", ref["name"], path_segment_name_errors(str(ref["name"]))
            )
    for i, subject in _dicts(obj.get("subjects")):
        path = f"subjects[{i}]"
        name, kind = subject.get("name"), subject.get("kind")
        if not name:
            errs.required(f"{path}.name")
        if kind == "ServiceAccount":
            if subject.get("apiGroup"):
                errs.not_supported(f"{path}.apiGroup", subject["apiGroup"], [""])
            if not subject.get("namespace") and obj.get("kind") != "RoleBinding":
                errs.required(f"{path}.namespace")
            if name:
                errs.invalid_all(f"{path}.name", name, dns1123_subdomain_errors(str(name)))
        elif kind in ("User", "Group"):
            if subject.get("apiGroup") != _RBAC_GROUP:
                errs.not_supported(f"{path}.apiGroup", subject.get("apiGroup") or "", [_RBAC_GROUP])
        else:
            errs.not_supported(f"{path}.kind", kind or "", ["ServiceAccount", "User", "Group"])
    if (
        old is not None
        and old.get("roleRef") is not None
        and obj.get("roleRef") != old.get("roleRef")
    ):
        errs.invalid("roleRef", obj.get("roleRef"), "cannot change roleRef")


def _validate_role_binding(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    _validate_binding(obj, old, errs, ["Role", "ClusterRole"])


def _validate_cluster_role_binding(
    obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors
) -> None:
    _validate_binding(obj, old, errs, ["ClusterRole"])


_PATH_TYPES = ["Exact", "ImplementationSpecific", "Prefix"]


def _validate_ingress(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    if not spec.get("rules") and spec.get("defaultBackend") is None:
        errs.invalid("spec", spec, "either `defaultBackend` or `rules` must be specified")
    for i, rule in _dicts(spec.get("rules")):
        host = rule.get("host")
        if host:
            check = host[2:] if host.startswith("*.") else host
            errs.invalid_all(f"spec.rules[{i}].host", host, dns1123_subdomain_errors(check))
        http = rule.get("http")
        if http is None:
            continue
        paths = _dicts((http or {}).get("paths"))
        if not paths:
            errs.required(f"spec.rules[{i}].http.paths")
        for j, entry in paths:
            path = f"spec.rules[{i}].http.paths[{j}]"
            path_type = entry.get("pathType")
            if not path_type:
                errs.required(f"{path}.pathType", "pathType must be specified")
            elif path_type not in _PATH_TYPES:
                errs.not_supported(f"{path}.pathType", path_type, _PATH_TYPES)
            elif path_type in ("Exact", "Prefix") and not str(entry.get("path") or "").startswith(
                "/"
            ):
                errs.invalid(f"{path}.path", entry.get("path") or "", "must be an absolute path")
            backend = entry.get("backend")
            if not isinstance(backend, dict) or not (
                backend.get("service") or backend.get("resource")
            ):
                errs.required(f"{path}.backend", "one of `service` or `resource` must be specified")
            elif isinstance(backend.get("service"), dict):
                service = backend["service"]
                if not service.get("name"):
                    errs.required(f"{path}.backend.service.name")
                port = service.get("port") or {}
                if port.get("name") and port.get("number"):
                    errs.invalid(
                        f"{path}.backend.service.port",
                        port,
                        "cannot specify both port name and port number",
                    )
                elif not port.get("name") and not port.get("number"):
                    errs.required(
                        f"{path}.backend.service.port.name", "port name or number is required"
                    )


def _validate_pod_template_object(
    obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors
) -> None:
    _validate_pod_template(obj.get("template"), "template", errs)


def _validate_node(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec") or {}
    seen: set[tuple[str, str]] = set()
    for i, taint in _dicts(spec.get("taints")):
        path = f"spec.taints[{i}]"
        key, value, effect = (
            taint.get("key") or "",
            taint.get("value") or "",
            taint.get("effect") or "",
        )
        if not key:
            errs.required(f"{path}.key")
        else:
            errs.invalid_all(f"{path}.key", key, qualified_name_errors(str(key)))
        if value:
            errs.invalid_all(f"{path}.value", value, label_value_errors(str(value)))
        if not effect:
            errs.required(f"{path}.effect")
        elif effect not in _TAINT_EFFECTS:
            errs.not_supported(f"{path}.effect", effect, _TAINT_EFFECTS)
        if (key, effect) in seen:
            errs.duplicate(path, f"{key}:{effect}")
        seen.add((key, effect))
    for i, cidr in enumerate(
        spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    ):
        try:
            ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            errs.invalid(
                f"spec.podCIDRs[{i}]",
                cidr,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )
    if old is not None:
        old_cidrs = (old.get("spec") or {}).get("podCIDRs") or []
        if old_cidrs and (spec.get("podCIDRs") or []) != old_cidrs:
            errs.forbidden(
                "spec.podCIDRs", 'node updates may not change podCIDR except from "" to valid'
            )


def _validate_pdb(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec") or {}
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        errs.invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set")
    for key in ("minAvailable", "maxUnavailable"):
        if spec.get(key) is not None:
            _validate_int_or_percent(f"spec.{key}", spec[key], errs)
    if spec.get("selector") is not None:
        _validate_selector(spec["selector"], "spec.selector", errs)
    errs.supported(
        "spec.unhealthyPodEvictionPolicy",
        spec.get("unhealthyPodEvictionPolicy"),
        ["AlwaysAllow", "IfHealthyBudget"],
        required=False,
    )


def _validate_resource_quota(
    obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors
) -> None:
    for section in ("spec", "status"):
        for part in ("hard", "used"):
            values = _get(obj, section, part)
            if isinstance(values, dict):
                for name, value in values.items():
                    _validate_quantity(f"{section}.{part}[{name}]", value, errs)


def _validate_limit_range(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    for i, item in _dicts(_get(obj, "spec", "limits")):
        errs.supported(
            f"spec.limits[{i}].type",
            item.get("type"),
            ["Container", "Pod", "PersistentVolumeClaim"],
        )
        for part in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            values = item.get(part)
            if isinstance(values, dict):
                for name, value in values.items():
                    _validate_quantity(f"spec.limits[{i}].{part}[{name}]", value, errs)


def _validate_hpa(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    ref = spec.get("scaleTargetRef")
    if not isinstance(ref, dict):
        errs.required("spec.scaleTargetRef")
    else:
        if not ref.get("kind"):
            errs.required("spec.scaleTargetRef.kind")
        if not ref.get("name"):
            errs.required("spec.scaleTargetRef.name")
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    if isinstance(low, int) and low < 1:
        errs.invalid("spec.minReplicas", low, "must be greater than or equal to 1")
    if not isinstance(high, int) or high < 1:
        errs.invalid("spec.maxReplicas", high, "must be greater than or equal to 1")
    elif isinstance(low, int) and high < low:
        errs.invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`")


def _validate_network_policy(
    obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors
) -> None:
    spec = obj.get("spec") or {}
    _validate_selector(spec.get("podSelector", {}), "spec.podSelector", errs, required=False)
    for direction in ("ingress", "egress"):
        for i, rule in _dicts(spec.get(direction)):
            for j, port in _dicts(rule.get("ports")):
                path = f"spec.{direction}[{i}].ports[{j}]"
                errs.supported(f"{path}.protocol", port.get("protocol"), PROTOCOLS, required=False)
                if port.get("port") is not None:
                    _validate_port_num_or_name(f"{path}.port", port["port"], errs)
    for i, policy in enumerate(spec.get("policyTypes") or []):
        if policy not in ("Ingress", "Egress"):
            errs.not_supported(f"spec.policyTypes[{i}]", policy, ["Ingress", "Egress"])


def _validate_priority_class(
    obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors
) -> None:
    value = obj.get("value")
    name = _get(obj, "metadata", "name") or ""
    if not isinstance(value, int) or isinstance(value, bool):
        errs.required("value")
    elif value > 1_000_000_000 and not str(name).startswith("system-"):
        errs.forbidden("value", "maximum allowed value of a user defined priority is 1000000000")
    errs.supported(
        "preemptionPolicy",
        obj.get("preemptionPolicy"),
        ["Never", "PreemptLowerPriority"],
        required=False,
    )
    if old is not None and old.get("value") != value:
        errs.forbidden("value", "may not be changed in an update.")


def _validate_storage_class(obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors) -> None:
    provisioner = obj.get("provisioner")
    if not provisioner:
        errs.required("provisioner")
    errs.supported("reclaimPolicy", obj.get("reclaimPolicy"), ["Delete", "Retain"], required=False)
    errs.supported(
        "volumeBindingMode",
        obj.get("volumeBindingMode"),
        ["Immediate", "WaitForFirstConsumer"],
        required=False,
    )
    if old is not None:
        for key in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"):
            if obj.get(key) != old.get(key):
                errs.forbidden(key, "updates to " + key + " are forbidden.")


def _validate_endpoint_slice(
    obj: dict[str, Any], old: dict[str, Any] | None, errs: _Errors
) -> None:
    errs.supported("addressType", obj.get("addressType"), ["IPv4", "IPv6", "FQDN"])
    for i, endpoint in _dicts(obj.get("endpoints")):
        addresses = endpoint.get("addresses")
        if not addresses:
            errs.required(f"endpoints[{i}].addresses", "must contain at least 1 address")
    for i, port in _dicts(obj.get("ports")):
        errs.supported(f"ports[{i}].protocol", port.get("protocol"), PROTOCOLS, required=False)
        if port.get("port") is not None:
            errs.invalid_all(f"ports[{i}].port", port["port"], port_number_errors(port["port"]))


_Validator = Callable[[dict[str, Any], "dict[str, Any] | None", _Errors], None]

_VALIDATORS: dict[tuple[str, str], _Validator] = {
    ("", "Pod"): _validate_pod,
    ("", "PodTemplate"): _validate_pod_template_object,
    ("", "ReplicationController"): _validate_replication_controller,
    ("", "Service"): _validate_service,
    ("", "ConfigMap"): _validate_configmap,
    ("", "Secret"): _validate_secret,
    ("", "Namespace"): _validate_namespace,
    ("", "PersistentVolumeClaim"): _validate_pvc,
    ("apps", "Deployment"): _validate_deployment,
    ("apps", "ReplicaSet"): _validate_replicaset,
    ("apps", "StatefulSet"): _validate_statefulset,
    ("apps", "DaemonSet"): _validate_daemonset,
    ("batch", "Job"): _validate_job,
    ("batch", "CronJob"): _validate_cronjob,
    ("", "ResourceQuota"): _validate_resource_quota,
    ("", "Node"): _validate_node,
    ("", "LimitRange"): _validate_limit_range,
    ("networking.k8s.io", "Ingress"): _validate_ingress,
    ("networking.k8s.io", "NetworkPolicy"): _validate_network_policy,
    ("policy", "PodDisruptionBudget"): _validate_pdb,
    ("autoscaling", "HorizontalPodAutoscaler"): _validate_hpa,
    ("scheduling.k8s.io", "PriorityClass"): _validate_priority_class,
    ("storage.k8s.io", "StorageClass"): _validate_storage_class,
    ("discovery.k8s.io", "EndpointSlice"): _validate_endpoint_slice,
    (_RBAC_GROUP, "Role"): _validate_role,
    (_RBAC_GROUP, "ClusterRole"): _validate_cluster_role,
    (_RBAC_GROUP, "RoleBinding"): _validate_role_binding,
    (_RBAC_GROUP, "ClusterRoleBinding"): _validate_cluster_role_binding,
}


def _api_version(info: ResourceInfo) -> str:
    return f"{info.group}/{info.version}" if info.group else info.version


def type_causes(info: ResourceInfo, obj: Any, old: Any = None) -> list[dict[str, str]]:
    """Causes for values of the wrong JSON type (the object's structure cannot be trusted).

    With `old` (an already checked stored object), parts of `obj` that are the very same
    Python objects as in `old` are not walked again (see `type_causes_against`).
    """
    if not isinstance(obj, dict):
        return [
            {
                "reason": "FieldValueTypeInvalid",
                "field": "",
                "message": "Invalid value: the object must be a JSON object",
            }
        ]
    if old is not None:
        report = type_causes_against(_api_version(info), info.kind, obj, old)
    else:
        report = check_structure(_api_version(info), info.kind, obj)
    if not report.known:
        report = check_object_meta(obj.get("metadata"))
    return report.type_causes


def validate_object(
    info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None, *, types_checked: bool = False
) -> list[dict[str, Any]]:
    """Causes ({"field","message","reason"}) that make `obj` invalid; [] when it is valid.

    `old` is the stored object on an update (enables the immutable-field checks), else None.
    Values of the wrong JSON type are reported alone: nothing else can be judged until the
    object has the shape of its kind. `types_checked` says the caller already found no
    `type_causes` (the registry checks types once, before defaulting).
    """
    wrong_types = [] if types_checked else type_causes(info, obj)
    if wrong_types:
        return wrong_types
    errs = _Errors()
    try:
        _validate_metadata(info, obj.get("metadata"), errs)
        if old is not None and isinstance(obj.get("metadata"), dict):
            old_meta = old.get("metadata") if isinstance(old, dict) else None
            _validate_metadata_update(
                obj["metadata"], old_meta if isinstance(old_meta, dict) else {}, errs
            )
        validator = _VALIDATORS.get((info.group, info.kind))
        if validator is not None:
            validator(obj, old if isinstance(old, dict) else None, errs)
            if isinstance(old, dict):
                errs.causes = _ratchet_host_users(errs.causes, old)
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
        # A shape the checks above did not foresee must still end as a 422, not a 500.
        errs.invalid("", info.kind, f"the object could not be validated: {exc}")
    return errs.causes
