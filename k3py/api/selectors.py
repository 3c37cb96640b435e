"""Label and field selectors: parsing, matching, and the selectable fields of each kind.

Label selectors follow upstream's grammar (`k8s.io/apimachinery/pkg/labels`):

    selector    := requirement ("," requirement)*
    requirement := ["!"] KEY
                 | KEY ("=" | "==" | "!=") VALUE
                 | KEY ("in" | "notin") "(" VALUE ("," VALUE)* ")"
                 | KEY (">" | "<") INTEGER

A small lexer splits the text into identifiers and the operator symbols `! = == != ( ) , > <`;
`in`/`notin` are keywords only where an operator is expected. Keys must be qualified names and
values valid label values; an empty selector selects everything. `metav1.LabelSelector` dicts
(`matchLabels` + `matchExpressions`) become the same `LabelSelector`.

Field selectors are simpler: comma-separated `field=value`, `field==value` or `field!=value`
terms, where `\\`, `\\,` and `\\=` escape characters inside values. Which fields may be used is
decided per kind (`supported_field_labels`), and `object_fields` computes those fields' string
values from an object, so the API server filters lists and watches by comparing strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from k3py.api.validation import label_value_errors, qualified_name_errors


class SelectorError(ValueError):
    """A selector the user wrote that cannot be parsed or uses an unsupported field."""


# ---------------------------------------------------------------------------- label selectors

# Operators as upstream's selection.Operator spells them.
EQUALS = "="
DOUBLE_EQUALS = "=="
NOT_EQUALS = "!="
IN = "in"
NOT_IN = "notin"
EXISTS = "exists"
DOES_NOT_EXIST = "!"
GREATER_THAN = "gt"
LESS_THAN = "lt"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (EQUALS, DOUBLE_EQUALS, IN):
            return self.key in labels and labels[self.key] in self.values
        if op in (NOT_EQUALS, NOT_IN):
            return self.key not in labels or labels[self.key] not in self.values
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        # gt / lt: both sides must be integers, otherwise the label does not match.
        if self.key not in labels:
            return False
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        want = int(self.values[0])
        return have > want if op == GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        if op in (IN, NOT_IN):
            return f"{self.key} {op} ({','.join(self.values)})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(op, op)
        return f"{self.key}{symbol}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements; `nothing` marks the selector that matches no object."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    @property
    def empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.requirements and not self.nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        if not isinstance(labels, Mapping):
            labels = {}  # no labels (or a malformed labels field) is an empty set
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _validate_requirement(key: str, operator: str, values: tuple[str, ...]) -> Requirement:
    """Upstream's NewRequirement checks; messages are its field errors (path "key"/"values")."""
    problems = qualified_name_errors(key)
    if problems:
        raise SelectorError(f'key: Invalid value: "{key}": {"; ".join(problems)}')
    shown = "[" + ",".join(f'"{v}"' for v in values) + "]"
    if operator in (IN, NOT_IN):
        if not values:
            raise SelectorError(
                "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
            )
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if len(values) != 1:
            raise SelectorError(
                f"values: Invalid value: {shown}: exact-match compatibility requires one single value"
            )
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if values:
            raise SelectorError(
                f"values: Invalid value: {shown}: values set must be empty for exists and does not exist"
            )
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(values) != 1:
            raise SelectorError(
                f"values: Invalid value: {shown}: for 'Gt', 'Lt' operators, exactly one value is required"
            )
        try:
            int(values[0])
        except ValueError:
            raise SelectorError(
                f"values[0]: Invalid value: \"{values[0]}\": for 'Gt', 'Lt' operators, the value must be an integer"
            ) from None
    else:
        raise SelectorError(f'operator: Unsupported value: "{operator}"')
    for i, value in enumerate(values):
        problems = label_value_errors(value)
        if problems:
            raise SelectorError(
                f'values[{i}][{key}]: Invalid value: "{value}": {"; ".join(problems)}'
            )
    return Requirement(key, operator, values)


# Lexer tokens: ("id", text) or ("op", symbol) or ("end", "").
_SPECIAL = "!=(),<>"
_SYMBOLS = ("!=", "==", "!", "=", "(", ")", ",", ">", "<")


def _lex(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in _SPECIAL:
            for sym in _SYMBOLS:
                if text.startswith(sym, i):
                    tokens.append(("op", sym))
                    i += len(sym)
                    break
            continue
        start = i
        while i < n and not text[i].isspace() and text[i] not in _SPECIAL:
            i += 1
        tokens.append(("id", text[start:i]))
    tokens.append(("end", ""))
    return tokens


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def fail(
        self, found: tuple[str, str], expected: str, in_requirement: bool = True
    ) -> SelectorError:
        # Upstream prints the end of the input as an empty literal: "found '', expected: ...".
        prefix = "unable to parse requirement: " if in_requirement else ""
        return SelectorError(f"{prefix}found '{found[1]}', expected: {expected}")

    def parse(self) -> LabelSelector:
        reqs: list[Requirement] = []
        first = self.peek()
        if first[0] == "end":
            return LabelSelector()
        if first[0] != "id" and first != ("op", "!"):
            raise self.fail(first, "!, identifier, or 'end of string'", in_requirement=False)
        while True:
            reqs.append(self.requirement())
            tok = self.take()
            if tok[0] == "end":
                break
            if tok != ("op", ","):
                raise self.fail(tok, "',' or 'end of string'", in_requirement=False)
            nxt = self.peek()
            if nxt[0] != "id" and nxt != ("op", "!"):
                raise self.fail(nxt, "identifier after ','", in_requirement=False)
        reqs.sort(key=lambda r: r.key)
        return LabelSelector(tuple(reqs))

    def requirement(self) -> Requirement:
        tok = self.take()
        negated = False
        if tok == ("op", "!"):
            negated = True
            tok = self.take()
        if tok[0] != "id":
            raise self.fail(tok, "identifier")
        key = tok[1]
        problems = qualified_name_errors(key)
        if problems:  # upstream checks the key before the operator, with no field path
            raise SelectorError(
                f'unable to parse requirement: <nil>: Invalid value: "{key}": {"; ".join(problems)}'
            )
        if negated:
            return self.wrapped(key, DOES_NOT_EXIST, ())
        nxt = self.peek()
        if nxt[0] == "end" or nxt == ("op", ","):
            return self.wrapped(key, EXISTS, ())
        op_tok = self.take()
        operator = {
            ("op", "="): EQUALS,
            ("op", "=="): DOUBLE_EQUALS,
            ("op", "!="): NOT_EQUALS,
            ("op", ">"): GREATER_THAN,
            ("op", "<"): LESS_THAN,
            ("id", "in"): IN,
            ("id", "notin"): NOT_IN,
        }.get(op_tok)
        if operator is None:
            raise self.fail(op_tok, "in, notin, =, ==, !=, gt, lt")
        if operator in (IN, NOT_IN):
            return self.wrapped(key, operator, self.value_set())
        # An exact-match value may be empty ("a=" selects a="" ).
        value_tok = self.peek()
        if value_tok[0] == "id":
            self.take()
            value = value_tok[1]
        elif value_tok[0] == "end" or value_tok == ("op", ","):
            value = ""
        else:
            raise self.fail(value_tok, "identifier")
        return self.wrapped(key, operator, (value,))

    def wrapped(self, key: str, operator: str, values: tuple[str, ...]) -> Requirement:
        try:
            return _validate_requirement(key, operator, values)
        except SelectorError as exc:
            raise SelectorError(f"unable to parse requirement: {exc}") from None

    def value_set(self) -> tuple[str, ...]:
        tok = self.take()
        if tok != ("op", "("):
            # upstream's message lacks the comma here
            return self._raise(f"unable to parse requirement: found '{tok[1]}' expected: '('")
        values: set[str] = set()
        tok = self.peek()
        if tok == ("op", ")"):
            self.take()
            return ("",)  # "()" selects the empty value, as upstream
        if tok[0] != "id" and tok != ("op", ","):
            raise self.fail(tok, "',', ')' or identifier")
        expect_value = True
        while True:
            tok = self.take()
            if tok[0] == "id" and expect_value:
                values.add(tok[1])
                expect_value = False
                nxt = self.peek()
                if nxt == ("op", ")"):
                    self.take()
                    break
                if nxt != ("op", ","):
                    raise self.fail(nxt, "',' or ')'")
                continue
            if tok == ("op", ","):
                if expect_value:
                    values.add("")  # "(,a)" and "(a,,b)" carry an empty value
                expect_value = True
                if self.peek() == ("op", ")"):
                    self.take()
                    values.add("")  # "(a,)" too
                    break
                continue
            raise self.fail(tok, "',', or identifier")
        return tuple(sorted(values))

    def _raise(self, message: str) -> tuple[str, ...]:
        raise SelectorError(message)


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a `labelSelector` query parameter; raises SelectorError on bad syntax."""
    return _LabelParser(text).parse()


_EXPRESSION_OPERATORS = {
    "In": IN,
    "NotIn": NOT_IN,
    "Exists": EXISTS,
    "DoesNotExist": DOES_NOT_EXIST,
}


def label_selector_from_dict(sel: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector as a selector: None matches nothing, {} matches everything."""
    if sel is None:
        return LabelSelector(nothing=True)
    if not isinstance(sel, Mapping):
        raise SelectorError("selector must be an object with matchLabels and/or matchExpressions")
    reqs: list[Requirement] = []
    match_labels = sel.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError("matchLabels must be a map of strings")
    for key, value in match_labels.items():
        if not isinstance(value, str):
            raise SelectorError(f"matchLabels[{key}] must be a string")
        reqs.append(_validate_requirement(str(key), EQUALS, (value,)))
    for i, expr in enumerate(sel.get("matchExpressions") or []):
        if not isinstance(expr, Mapping):
            raise SelectorError(f"matchExpressions[{i}] must be an object")
        op = expr.get("operator")
        operator = _EXPRESSION_OPERATORS.get(op) if isinstance(op, str) else None
        if operator is None:
            raise SelectorError(f'"{op}" is not a valid label selector operator')
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SelectorError(f"matchExpressions[{i}].values must be a list of strings")
        reqs.append(
            _validate_requirement(str(expr.get("key", "")), operator, tuple(sorted(set(values))))
        )
    reqs.sort(key=lambda r: r.key)
    return LabelSelector(tuple(reqs))


# ---------------------------------------------------------------------------- field selectors


@dataclass
class FieldSelector:
    requirements: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        # A field the object does not have compares as the empty string, like upstream.
        for name, op, value in self.requirements:
            have = fields.get(name, "")
            if (have == value) != (op == "="):
                return False
        return True

    def value_for(self, name: str) -> str | None:
        """The value a selector pins `name` to with `=` (e.g. metadata.name for a watch by name)."""
        for field_name, op, value in self.requirements:
            if field_name == name and op == "=":
                return value
        return None

    def __str__(self) -> str:
        return ",".join(f"{f}{op}{_escape(v)}" for f, op, v in self.requirements)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: {value!r}")
            out.append(value[i + 1])
            i += 2
            continue
        if c in ",=":
            raise SelectorError(f"invalid field selector: unescaped {c!r} in value {value!r}")
        out.append(c)
        i += 1
    return "".join(out)


def _split_term(term: str) -> tuple[str, str, str] | None:
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
        i += 1
    return None


def parse_field_selector(text: str) -> FieldSelector:
    """Parse a `fieldSelector` query parameter; raises SelectorError on bad syntax."""
    reqs: list[tuple[str, str, str]] = []
    if not text.strip():
        return FieldSelector(reqs)
    for term in _split_unescaped(text, ","):
        if not term:
            continue
        split = _split_term(term)
        if split is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        name, op, value = split
        name = name.strip()
        if not name:
            raise SelectorError(f"invalid selector: '{text}'; field name is empty in '{term}'")
        reqs.append((name, "!=" if op == "!=" else "=", _unescape(value)))
    return FieldSelector(reqs)


# Kinds served cluster-wide: their only metadata field is metadata.name.
CLUSTER_SCOPED_KINDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolume"),
        ("", "ComponentStatus"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("apiregistration.k8s.io", "APIService"),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
        ("networking.k8s.io", "IngressClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("authentication.k8s.io", "TokenReview"),
        ("authorization.k8s.io", "SelfSubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectRulesReview"),
        ("authorization.k8s.io", "SubjectAccessReview"),
    }
)

_CORE_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
# events.k8s.io names the same things differently (regarding, reportingController).
_EVENTS_API_FIELDS = (
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
)

_KIND_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    ("", "Event"): _CORE_EVENT_FIELDS,
    # The events.k8s.io API shares storage with core Events and accepts both spellings.
    ("events.k8s.io", "Event"): _EVENTS_API_FIELDS + _CORE_EVENT_FIELDS,
    ("", "Secret"): ("type",),
    # Since Kubernetes 1.31 (kube-proxy and kubelet skip headless Services with these).
    ("", "Service"): ("spec.clusterIP", "spec.type"),
    ("", "Node"): ("spec.unschedulable",),
    ("", "Namespace"): ("status.phase",),
    ("", "ReplicationController"): ("status.replicas",),
    ("apps", "ReplicaSet"): ("status.replicas",),
    ("batch", "Job"): ("status.successful",),
    ("certificates.k8s.io", "CertificateSigningRequest"): ("spec.signerName",),
}


def supported_field_labels(group: str, kind: str, namespaced: bool | None = None) -> set[str]:
    """The field names a fieldSelector may use for this kind.

    `namespaced` overrides the built-in scope table (custom resources pass their own scope);
    a kind the table does not know is treated as namespaced.
    """
    if namespaced is None:
        namespaced = (group, kind) not in CLUSTER_SCOPED_KINDS
    fields = {"metadata.name"}
    if namespaced:
        fields.add("metadata.namespace")
    fields.update(_KIND_FIELDS.get((group, kind), ()))
    return fields


def check_field_selector(
    selector: FieldSelector, group: str, kind: str, namespaced: bool | None = None
) -> None:
    """Raise SelectorError (`field label not supported: X`) for fields the kind does not offer."""
    supported = supported_field_labels(group, kind, namespaced)
    for name, _op, _value in selector.requirements:
        if name not in supported:
            raise SelectorError(f"field label not supported: {name}")


def _dig(obj: Mapping[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _as_field_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def object_fields(
    info_group: str, kind: str, obj: Mapping[str, Any], namespaced: bool | None = None
) -> dict[str, str]:
    """The selectable fields of `obj` as strings (booleans "true"/"false", absent → "")."""
    names = supported_field_labels(info_group, kind, namespaced)
    fields: dict[str, str] = {}
    for name in names:
        if name == "source":
            value = _dig(obj, "source.component")
        elif name == "status.podIP":
            ips = _dig(obj, "status.podIPs") or []
            value = _dig(obj, "status.podIP") or (
                ips[0].get("ip") if ips and isinstance(ips[0], Mapping) else None
            )
        elif name.startswith("involvedObject.") and info_group == "events.k8s.io":
            value = _dig(obj, "regarding." + name.split(".", 1)[1])
        elif name == "reportingComponent" and info_group == "events.k8s.io":
            value = obj.get("reportingController")
        elif name.startswith("regarding."):
            value = _dig(obj, name)
        elif name == "spec.unschedulable" or name == "spec.hostNetwork":
            value = bool(_dig(obj, name))
        elif name in ("status.replicas", "status.successful"):
            value = _dig(obj, name) or 0
        else:
            value = _dig(obj, name)
        fields[name] = _as_field_string(value)
    return fields
