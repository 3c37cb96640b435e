"""Wire formats: decoding request bodies and choosing/encoding the response format.

In: JSON, YAML (``k3py.api.yamldecode``: built iteratively from the parser's events, plain
JSON values only, with a node budget that counts alias expansion — the "billion laughs"), and
Kubernetes protobuf (``k8s\\0`` envelope, decoded by ``k3py.api.protobuf``). Every decoded
value keeps ``k3py.api.bounds``: at most 100 levels deep, 64-bit integers, finite floats; a body
that breaks them is malformed (400). Bodies larger than a few KiB (``heavy``) are decoded on
the heavy-work pool (``offload.py``) rather than on the event loop: ``decode_body_async``.

Out: JSON or YAML; the Accept header may also ask for the object ``as=Table`` or
``as=PartialObjectMetadata[List]`` (group meta.k8s.io). Protobuf responses are not produced:
every client that asks for protobuf also accepts JSON. YAML output is written by libyaml's
emitter, on the heavy-work pool (``encode_async``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from k3py.api import errors
from k3py.api.bounds import MAX_NESTING_DEPTH, BoundsError, check_bounds
from k3py.api.protobuf import decode_k8s_protobuf
from k3py.api.yamldecode import YamlError, load_all
from k3py.server.apiserver.offload import run_heavy

MAX_BODY_BYTES = 3 * 1024 * 1024
# A YAML document may hold (aliases expanded) at most this many values.
MAX_YAML_NODES = 200_000
# Bodies up to these sizes are decoded on the event loop (well under a millisecond); larger
# ones on the heavy-work pool. YAML is parsed in Python, protobuf decoded in Python.
INLINE_JSON_BYTES = 64 * 1024
INLINE_YAML_BYTES = 4 * 1024
INLINE_PROTOBUF_BYTES = 4 * 1024
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

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


def _bounded(value: Any) -> Any:
    try:
        check_bounds(value, MAX_NESTING_DEPTH)
    except BoundsError as e:
        raise errors.bad_request(f"error decoding the body: {e}") from None
    return value


def decode_yaml(body: bytes) -> Any:
    """One YAML document (a JSON text is decoded as JSON: it is YAML, and far quicker)."""
    if body.lstrip()[:1] in (b"{", b"["):
        try:
            return _bounded(orjson.loads(body))
        except orjson.JSONDecodeError:
            pass  # YAML flow style, not JSON
    try:
        docs = load_all(body, MAX_NESTING_DEPTH, MAX_YAML_NODES)
    except YamlError as e:
        raise errors.bad_request(f"error converting YAML to JSON: {e}") from None
    docs = [d for d in docs if d is not None]
    if len(docs) > 1:
        raise errors.bad_request("error converting YAML to JSON: the body must hold one YAML document")
    return docs[0] if docs else None


def decode_json(body: bytes) -> Any:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise errors.bad_request(f"error decoding JSON: {e}") from None
    return _bounded(value)


def decode_protobuf(body: bytes) -> Any:
    try:
        value = decode_k8s_protobuf(body)
    except ValueError as e:  # ProtobufError is a ValueError
        raise errors.bad_request(f"the body of the request could not be decoded as protobuf: {e}") from None
    return _bounded(value)


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


def heavy(body: bytes, content_type: str | None) -> bool:
    """Whether decoding ``body`` is worth taking off the event loop."""
    mt = media_type(content_type)
    if mt in (YAML, "application/x-yaml", "text/yaml", APPLY_PATCH_YAML):
        return len(body) > INLINE_YAML_BYTES
    if mt == PROTOBUF or body[:4] == b"k8s\x00":
        return len(body) > INLINE_PROTOBUF_BYTES
    return len(body) > INLINE_JSON_BYTES


async def decode_body_async(body: bytes, content_type: str | None, *, allow_protobuf: bool = True) -> Any:
    """``decode_body``, on the heavy-work pool when the body is large."""
    if heavy(body, content_type):
        return await run_heavy(decode_body, body, content_type, allow_protobuf=allow_protobuf)
    return decode_body(body, content_type, allow_protobuf=allow_protobuf)


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
        return yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True).encode()
    return orjson.dumps(value)


async def encode_async(value: Any, media: str = JSON) -> bytes:
    """``encode``; YAML (written in Python, and rarely asked for) on the heavy-work pool."""
    if media == YAML:
        return await run_heavy(encode, value, media)
    return orjson.dumps(value)
