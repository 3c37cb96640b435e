"""Value types and errors of the store, shared by every backend.

The store is shaped like etcd (and like kine, k3s's etcd shim): one revision counter for
the whole keyspace, every write appends a row whose id is its revision, and each key's
history is a chain of rows linked by ``prev_revision``. Keys are str, values are bytes;
the store knows nothing of Kubernetes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Bounds on input, enforced by every backend before anything is written.
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of one key.

    ``mod_revision`` is the revision of the write that produced this version (for a
    delete event's ``kv``, the revision of the delete). ``lease`` is the TTL in seconds the
    key was written with, 0 for none.
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    """A change seen by a watch. ``prev_kv`` is the version before it (None on create)."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class ListResult:
    """A consistent snapshot of a prefix at ``revision``.

    ``continue_token`` is set when ``limit`` cut the result; passing it back continues the
    same snapshot (same revision) after the last key returned. ``remaining`` counts the keys
    after this page, when the backend knows it cheaply (else None).
    """

    revision: int
    items: list[KeyValue]
    continue_token: str | None = None
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Result of a compare-and-swap ``update`` or ``delete``.

    On success ``succeeded`` is True and ``kv`` is the new version (for delete: the deleted
    value, with ``mod_revision`` set to the delete's revision). On a revision mismatch
    ``succeeded`` is False and ``kv`` is the current version, or None when the key does
    not exist.
    """

    succeeded: bool
    kv: KeyValue | None
    revision: int


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class InvalidKeyError(StoreError, ValueError):
    """The key is empty, too long or otherwise unusable."""


class ValueTooLargeError(StoreError, ValueError):
    """The value is over MAX_VALUE_BYTES."""


class KeyExistsError(StoreError):
    """``create`` found the key already present."""

    def __init__(self, key: str, current: KeyValue | None = None) -> None:
        super().__init__(f"key already exists: {key}")
        self.key = key
        self.current = current


class CompactedError(StoreError):
    """The requested revision is older than the compact revision."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(
            f"required revision {requested} has been compacted (compact revision {compact_revision})"
        )
        self.requested = requested
        self.compact_revision = compact_revision


class FutureRevisionError(StoreError):
    """The requested revision is newer than the current revision."""

    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"required revision {requested} is a future revision (current {current})")
        self.requested = requested
        self.current = current


class CorruptDatabaseError(StoreError):
    """The database file is damaged or is not a k3py store. Never silently re-initialised."""


class InvalidContinueTokenError(StoreError, ValueError):
    """A ``list`` continue token that this store did not issue (or was damaged)."""


class StoreClosedError(StoreError):
    """The store was closed while the operation was pending."""
