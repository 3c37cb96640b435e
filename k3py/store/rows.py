"""The log's row shape and the compare-and-swap decisions, shared by every SQL backend.

A row is one write: ``id`` is its revision, ``prev_revision`` links it to the key's previous
row (0 for none), ``created``/``deleted`` mark a key's first version and its tombstone. A
tombstone carries the deleted value, so a DELETE event and the ``delete`` result need no join.

``plan_create``/``plan_update``/``plan_delete`` are pure: given the key's latest row they
either describe the row to append (and the event it produces) or say why not. The backends
only fetch the latest row, call these, and insert — so SQLite and PostgreSQL cannot drift
apart in semantics.
"""

from __future__ import annotations

from dataclasses import dataclass

from k3py.store.types import Event, EventType, KeyExistsError, KeyValue, WriteResult

# The column list every query selects, in this order (see Row.from_tuple).
ROW_COLUMNS = "id, name, created, deleted, create_revision, prev_revision, lease, value"


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    name: str
    created: bool
    deleted: bool
    create_revision: int
    prev_revision: int
    lease: int
    value: bytes

    @classmethod
    def from_tuple(cls, t: tuple) -> Row:
        return cls(t[0], t[1], bool(t[2]), bool(t[3]), t[4], t[5], t[6], bytes(t[7]))

    def to_kv(self) -> KeyValue:
        return KeyValue(self.name, self.value, self.create_revision, self.id, self.lease)


@dataclass(frozen=True, slots=True)
class NewRow:
    """A row to append at revision ``id``, with what the caller and the watchers see."""

    id: int
    name: str
    created: bool
    deleted: bool
    create_revision: int
    prev_revision: int
    lease: int
    value: bytes
    event: Event

    def as_params(self, expires: float | None) -> dict:
        """Parameters for queries.INSERT_ROW (``expires``: absolute unix time or None)."""
        return {
            "id": self.id,
            "name": self.name,
            "created": int(self.created),
            "deleted": int(self.deleted),
            "create_revision": self.create_revision,
            "prev_revision": self.prev_revision,
            "lease": self.lease,
            "value": self.value,
            "expires": expires,
        }


def live(latest: Row | None) -> Row | None:
    """The latest row if it is a live version, None when the key is absent or deleted."""
    return latest if latest is not None and not latest.deleted else None


def plan_create(key: str, value: bytes, lease: int, latest: Row | None, revision: int) -> NewRow:
    current = live(latest)
    if current is not None:
        raise KeyExistsError(key, current.to_kv())
    kv = KeyValue(key, value, revision, revision, lease)
    prev = latest.id if latest is not None else 0
    return NewRow(
        revision, key, True, False, revision, prev, lease, value, Event(EventType.PUT, kv, None)
    )


def plan_update(
    key: str, value: bytes, lease: int, expected_revision: int, latest: Row | None, revision: int
) -> NewRow | WriteResult:
    """The new version, or a failed WriteResult when ``expected_revision`` is not current."""
    current = live(latest)
    if current is None or current.id != expected_revision:
        return WriteResult(False, current.to_kv() if current else None, revision - 1)
    kv = KeyValue(key, value, current.create_revision, revision, lease)
    return NewRow(
        revision, key, False, False, current.create_revision, current.id, lease, value,
        Event(EventType.PUT, kv, current.to_kv()),
    )  # fmt: skip


def plan_delete(
    key: str, expected_revision: int | None, latest: Row | None, revision: int
) -> NewRow | WriteResult:
    """A tombstone carrying the deleted value, or a failed WriteResult."""
    current = live(latest)
    if current is None or (expected_revision is not None and current.id != expected_revision):
        return WriteResult(False, current.to_kv() if current else None, revision - 1)
    kv = KeyValue(key, current.value, current.create_revision, revision, current.lease)
    return NewRow(
        revision, key, False, True, current.create_revision, current.id, current.lease,
        current.value, Event(EventType.DELETE, kv, current.to_kv()),
    )  # fmt: skip


def event_from_rows(row: Row, prev: Row | None) -> Event:
    """The watch event a stored row stands for; ``prev`` is the row it superseded."""
    prev_kv = prev.to_kv() if prev is not None and not prev.deleted else None
    if row.deleted:
        return Event(EventType.DELETE, row.to_kv(), prev_kv)
    return Event(EventType.PUT, row.to_kv(), None if row.created else prev_kv)
