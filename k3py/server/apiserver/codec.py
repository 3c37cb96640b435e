"""Wire formats: decoding request bodies and choosing/encoding the response format.

In: JSON, YAML (safe loading only, and a document whose aliases expand past a bound is refused
— the "billion laughs" attack), and Kubernetes protobuf (``k8s\\0`` envelope, decoded by
``k3py.api.protobuf``). Out: JSON or YAML; the Accept header may also ask for the object
``as=Table`` or ``as=PartialObjectMetadata[List]`` (group meta.k8s.io). Protobuf responses are
not produced: every client that asks for protobuf also accepts JSON.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from k3py.api import errors
from k3py.api.protobuf import decode_k8s_protobuf

MAX_BODY_BYTES = 3 * 1024 * 1024
# A YAML document may expand (through aliases) to at most this many nodes.
MAX_YAML_NODES = 200_000

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH_YAML = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH_YAML)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader; the size check happens on the constructed value (see _bounded)."""


def _bounded(value: Any) -> None:
    """Refuse a value that (through shared, aliased subtrees) is bigger than MAX_YAML_NODES."""
    budget = MAX_YAML_NODES
    stack = [value]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise errors.bad_request("yaml: document is too large after expanding aliases")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _plain_json(value: Any) -> Any:
    """YAML may produce dates and non-string keys; the API only has JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def decode_yaml(body: bytes) -> Any:
    try:
        docs = list(yaml.load_all(body, Loader=_CountingLoader))
    except yaml.YAMLError as e:
        raise errors.bad_request(f"error converting YAML to JSON: {_yaml_message(e)}") from None
    docs = [d for d in docs if d is not None]
    if len(docs) > 1:
        raise errors.bad_request("error converting YAML to JSON: the body must hold one YAML document")
    value = docs[0] if docs else None
    _bounded(value)
    return _plain_json(value)


def _yaml_message(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is not None:
        return f"yaml: line {mark.line + 1}: {problem}"
    return f"yaml: {problem}"


def decode_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise errors.bad_request(f"error decoding JSON: {e}") from None


def decode_protobuf(body: bytes) -> Any:
    try:
        return decode_k8s_protobuf(body)
    except ValueError as e:  # ProtobufError is a ValueError
        raise errors.bad_request(f"the body of the request could not be decoded as protobuf: {e}") from None


def decode_body(body: bytes, content_type: str | None, *, allow_protobuf: bool = True) -> Any:
    """An object from a POST/PUT body (or DeleteOptions), by Content-Type."""
    if len(body) > MAX_BODY_BYTES:
        raise errors.request_entity_too_large()
    mt = media_type(content_type)
    if mt in ("", JSON, "*/*", "text/plain"):
        if mt == "" and body[:4] == b"k8s\x00" and allow_protobuf:
            return decode_protobuf(body)
        return decode_json(body)
    if mt in (YAML, "application/x-yaml", "text/yaml"):
        return decode_yaml(body)
    if mt == PROTOBUF and allow_protobuf:
        return decode_protobuf(body)
    raise errors.unsupported_media_type(mt)


@dataclass(frozen=True)
class Negotiated:
    """What the client asked to get back."""

    media: str = JSON  # JSON or YAML
    as_kind: str = ""  # "", "Table", "PartialObjectMetadata", "PartialObjectMetadataList"
    as_version: str = "v1"  # meta.k8s.io version of Table / PartialObjectMetadata


_SUPPORTED_AS = {"Table", "PartialObjectMetadata", "PartialObjectMetadataList"}


def negotiate(accept: str | None) -> Negotiated:
    """Pick the first Accept entry we can produce (kubectl lists Table first, JSON last)."""
    if not accept:
        return Negotiated()
    return _negotiate(accept)


@functools.lru_cache(maxsize=512)
def _negotiate(accept: str) -> Negotiated:
    """Clients send the same few Accept headers over and over: parse each once."""
    fallback: Negotiated | None = None
    for entry in accept.split(","):
        parts = [p.strip() for p in entry.split(";")]
        mt = parts[0].lower()
        params = {}
        for p in parts[1:]:
            if "=" in p:
                k, v = p.split("=", 1)
                params[k.strip()] = v.strip()
        as_kind = params.get("as", "")
        if mt in (JSON, YAML, "application/*", "*/*"):
            media = YAML if mt == YAML else JSON
            if as_kind:
                if as_kind in _SUPPORTED_AS and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
                    return Negotiated(media, as_kind, params["v"])
                continue
            return Negotiated(media)
        if mt == PROTOBUF and fallback is None and not as_kind:
            # We answer protobuf clients in JSON; they all decode JSON too.
            fallback = Negotiated(JSON)
    if fallback is not None:
        return fallback
    raise errors.not_acceptable(accept)


def encode(value: Any, media: str = JSON) -> bytes:
    if media == YAML:
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True).encode()
    return orjson.dumps(value)
