"""Object-meta helpers: the bookkeeping fields the API server owns on every object.

``metadata.uid``, ``creationTimestamp``, ``resourceVersion``, ``generation`` and the
deletion fields are set by the server, never trusted from the client. These helpers keep the
formats exact (RFC 3339 seconds in UTC with ``Z``, random UUID4 uids) and decide what counts as
a change that bumps ``generation`` (anything outside metadata and status).
"""

from __future__ import annotations

import os
import random
import string
import time
import uuid
from datetime import UTC, datetime
from typing import Any

# Characters upstream uses for generateName suffixes (no vowels, no lookalike digits).
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
NAME_SUFFIX_LENGTH = 5
MAX_GENERATE_NAME_PREFIX = 63 - NAME_SUFFIX_LENGTH

# Metadata fields a client may not set; the server owns them.
SERVER_OWNED_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "selfLink")


_second_cache: tuple[int, str] = (-1, "")


def now_rfc3339(now: datetime | None = None) -> str:
    """RFC 3339 in whole seconds, UTC. The current time's text is reused within a second
    (strftime is a measurable part of a create)."""
    global _second_cache
    if now is not None:
        return now.strftime("%Y-%m-%dT%H:%M:%SZ")
    second = int(time.time())
    if _second_cache[0] != second:
        _second_cache = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _second_cache[1]


def now_rfc3339_micro(now: datetime | None = None) -> str:
    """MicroTime as Kubernetes formats it (events.k8s.io eventTime, leases)."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# UIDs must be unique, not secret: a PRNG seeded once from the OS is enough, and much cheaper
# than uuid4's per-call urandom read.
_uid_random = random.Random(int.from_bytes(os.urandom(16), "big"))


def new_uid() -> str:
    """A random (version 4) UUID."""
    return str(uuid.UUID(int=_uid_random.getrandbits(128), version=4))


def generate_name(prefix: str) -> str:
    """A name from ``metadata.generateName``: the prefix (cut to fit) plus 5 random characters."""
    prefix = prefix[:MAX_GENERATE_NAME_PREFIX]
    return prefix + "".join(random.choices(_NAME_SUFFIX_ALPHABET, k=NAME_SUFFIX_LENGTH))


def metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's metadata dict (created empty when missing or not a dict)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def section(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """``obj[name]`` as a dict, created when missing or null (``setdefault`` keeps a null)."""
    value = obj.get(name)
    if not isinstance(value, dict):
        value = {}
        obj[name] = value
    return value


def spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when anything but metadata and status differs: the rule that bumps generation."""
    keys = (set(old) | set(new)) - {"metadata", "status", "apiVersion", "kind"}
    return any(old.get(k) != new.get(k) for k in keys)


def is_controlled_by(obj: dict[str, Any], owner_uid: str) -> bool:
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("uid") == owner_uid:
            return True
    return False


def random_token(length: int = 32) -> str:
    alphabet = string.ascii_lowercase + string.digits
    rng = random.SystemRandom()
    return "".join(rng.choice(alphabet) for _ in range(length))
