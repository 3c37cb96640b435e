"""The revisioned key-value log under the API server (kine-shaped; etcd semantics).

``open_store(endpoint, data_dir)`` picks a backend from the endpoint: empty or
``sqlite://<path>`` for the embedded default, ``postgres://...`` for several servers sharing
one database. See ``interface.Store`` for the semantics every backend provides.
"""

from k3py.store.interface import Store
from k3py.store.types import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    CompactedError,
    CorruptDatabaseError,
    Event,
    EventType,
    FutureRevisionError,
    InvalidContinueTokenError,
    InvalidKeyError,
    KeyExistsError,
    KeyValue,
    ListResult,
    StoreClosedError,
    StoreError,
    ValueTooLargeError,
    WriteResult,
)

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "CompactedError",
    "CorruptDatabaseError",
    "Event",
    "EventType",
    "FutureRevisionError",
    "InvalidContinueTokenError",
    "InvalidKeyError",
    "KeyExistsError",
    "KeyValue",
    "ListResult",
    "Store",
    "StoreClosedError",
    "StoreError",
    "ValueTooLargeError",
    "WriteResult",
]
