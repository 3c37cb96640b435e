"""Input checks and key-range helpers shared by every backend.

Keys are compared as UTF-8 bytes (SQLite's BINARY collation, PostgreSQL's ``COLLATE "C"``),
which orders strings exactly like their code points. So "every key starting with P" is the
half-open range ``[P, upper_bound(P))`` and both databases answer it from the name index.
"""

from __future__ import annotations

import base64
import binascii
import json

from k3py.store.types import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    InvalidContinueTokenError,
    InvalidKeyError,
    ValueTooLargeError,
)


def check_key(key: str) -> None:
    """Refuse keys the store cannot hold: not str, empty, over MAX_KEY_BYTES, or with NUL."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError("key must not be empty")
    if "\x00" in key:
        raise InvalidKeyError("key must not contain NUL characters")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates cannot be stored as text
        raise InvalidKeyError(f"key is not valid Unicode text: {exc.reason}") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key is {size} bytes long, the limit is {MAX_KEY_BYTES} bytes")


def check_value(value: bytes) -> None:
    """Refuse values that are not bytes or are over MAX_VALUE_BYTES."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"value must be bytes, got {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise ValueTooLargeError(
            f"value is {len(value)} bytes, the limit is {MAX_VALUE_BYTES} bytes (3 MiB)"
        )


def check_ttl(ttl: int | None) -> int:
    """Return the lease in seconds (0 for none); refuse negative or non-integer TTLs."""
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise ValueError(f"ttl must be a non-negative number of seconds, got {ttl!r}")
    return ttl


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    None means "no upper bound" (empty prefix, or a prefix ending in the last code point,
    which no realistic key does; callers then filter with startswith).
    """
    if not prefix:
        return None
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return None
    bumped = last + 1
    if 0xD800 <= bumped <= 0xDFFF:  # skip the surrogate block, which UTF-8 cannot encode
        bumped = 0xE000
    return prefix[:-1] + chr(bumped)


def encode_continue(revision: int, last_key: str) -> str:
    """An opaque token meaning "the same snapshot, keys after last_key"."""
    raw = json.dumps({"rev": revision, "after": last_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str, prefix: str) -> tuple[int, str]:
    """Return (revision, last key) from a token; refuse tokens that are not ours."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        revision = data["rev"]
        after = data["after"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidContinueTokenError("continue token is malformed") from None
    if not isinstance(revision, int) or revision < 1 or not isinstance(after, str):
        raise InvalidContinueTokenError("continue token is malformed")
    if not after.startswith(prefix):
        raise InvalidContinueTokenError("continue token does not belong to this prefix")
    return revision, after
