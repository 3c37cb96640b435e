"""The store verbs as the API server uses them: etcd semantics on every backend."""

from __future__ import annotations

import asyncio

import pytest

from k3py.store import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    CompactedError,
    FutureRevisionError,
    InvalidContinueTokenError,
    InvalidKeyError,
    KeyExistsError,
    Store,
    ValueTooLargeError,
)


async def test_fresh_store_is_at_revision_one_and_first_write_is_two(store: Store) -> None:
    assert await store.current_revision() == 1
    kv = await store.create("/registry/pods/default/a", b"v1")
    assert (kv.create_revision, kv.mod_revision) == (2, 2)
    assert await store.current_revision() == 2


async def test_create_refuses_a_live_key_and_reports_it(store: Store) -> None:
    first = await store.create("/k", b"one")
    with pytest.raises(KeyExistsError) as info:
        await store.create("/k", b"two")
    assert info.value.current == first
    assert (await store.get("/k")) == first


async def test_create_after_delete_starts_a_new_lifetime(store: Store) -> None:
    first = await store.create("/k", b"one")
    await store.delete("/k")
    again = await store.create("/k", b"two")
    assert again.create_revision == again.mod_revision > first.mod_revision
    assert (await store.get("/k")).value == b"two"


async def test_update_is_compare_and_swap(store: Store) -> None:
    kv = await store.create("/k", b"one")
    ok = await store.update("/k", b"two", kv.mod_revision)
    assert ok.succeeded and ok.kv.value == b"two" and ok.kv.create_revision == kv.mod_revision
    stale = await store.update("/k", b"three", kv.mod_revision)
    assert not stale.succeeded
    assert stale.kv == ok.kv  # the current version comes back on a mismatch
    assert stale.revision == ok.revision
    missing = await store.update("/nope", b"x", 5)
    assert not missing.succeeded and missing.kv is None


async def test_concurrent_updates_from_one_revision_let_exactly_one_win(store: Store) -> None:
    kv = await store.create("/k", b"0")
    results = await asyncio.gather(
        *(store.update("/k", str(i).encode(), kv.mod_revision) for i in range(50))
    )
    winners = [r for r in results if r.succeeded]
    assert len(winners) == 1
    assert all(r.kv == winners[0].kv for r in results if not r.succeeded)


async def test_delete_unconditional_and_compare_and_swap(store: Store) -> None:
    kv = await store.create("/k", b"one")
    mismatch = await store.delete("/k", kv.mod_revision + 100)
    assert not mismatch.succeeded and mismatch.kv == kv
    done = await store.delete("/k", kv.mod_revision)
    assert done.succeeded
    assert done.kv.value == b"one" and done.kv.mod_revision == done.revision > kv.mod_revision
    assert await store.get("/k") is None
    gone = await store.delete("/k")
    assert not gone.succeeded and gone.kv is None


async def test_get_reads_history_and_refuses_future_and_compacted(store: Store) -> None:
    v1 = await store.create("/k", b"1")
    v2 = (await store.update("/k", b"2", v1.mod_revision)).kv
    deleted = await store.delete("/k")
    assert await store.get("/k", v1.mod_revision) == v1
    assert await store.get("/k", v2.mod_revision) == v2
    assert await store.get("/k", deleted.revision) is None
    with pytest.raises(FutureRevisionError):
        await store.get("/k", deleted.revision + 10)
    await store.compact(v2.mod_revision)
    assert await store.compact_revision() == v2.mod_revision
    assert await store.get("/k", v2.mod_revision) == v2  # the compact revision itself stays
    with pytest.raises(CompactedError):
        await store.get("/k", v1.mod_revision)


async def test_list_is_a_prefix_snapshot_in_key_order(store: Store) -> None:
    for name in ("b", "a", "c"):
        await store.create(f"/registry/pods/ns/{name}", name.encode())
    await store.create("/registry/pods/ns2/x", b"x")
    await store.create("/registry/podsx/y", b"y")
    await store.delete("/registry/pods/ns/c")
    result = await store.list("/registry/pods/ns/")
    assert [kv.key for kv in result.items] == ["/registry/pods/ns/a", "/registry/pods/ns/b"]
    assert result.revision == await store.current_revision()
    assert result.continue_token is None
    everything = await store.list("/registry/pods/")
    assert len(everything.items) == 3
    assert await store.count("/registry/pods/") == (result.revision, 3)


async def test_list_at_an_old_revision_sees_the_old_state(store: Store) -> None:
    a = await store.create("/p/a", b"1")
    await store.update("/p/a", b"2", a.mod_revision)
    await store.create("/p/b", b"1")
    old = await store.list("/p/", revision=a.mod_revision)
    assert [(kv.key, kv.value) for kv in old.items] == [("/p/a", b"1")]
    assert old.revision == a.mod_revision


async def test_list_pages_share_one_snapshot(store: Store) -> None:
    for i in range(10):
        await store.create(f"/p/{i:02d}", b"x")
    page = await store.list("/p/", limit=4)
    assert [kv.key for kv in page.items] == [f"/p/{i:02d}" for i in range(4)]
    assert page.remaining == 6 and page.continue_token
    await store.create("/p/05a", b"late")  # written after the snapshot: not in later pages
    await store.delete("/p/09")
    keys = [kv.key for kv in page.items]
    token = page.continue_token
    while token:
        page2 = await store.list("/p/", limit=4, continue_token=token)
        assert page2.revision == page.revision
        keys += [kv.key for kv in page2.items]
        token = page2.continue_token
    assert keys == [f"/p/{i:02d}" for i in range(10)]


async def test_bad_input_gets_clear_errors(store: Store) -> None:
    with pytest.raises(InvalidKeyError, match="empty"):
        await store.create("", b"x")
    with pytest.raises(InvalidKeyError, match="1024"):
        await store.create("/" + "k" * MAX_KEY_BYTES, b"x")
    await store.create("/" + "k" * (MAX_KEY_BYTES - 1), b"x")  # exactly at the limit
    with pytest.raises(ValueTooLargeError, match="3 MiB"):
        await store.create("/big", b"x" * (MAX_VALUE_BYTES + 1))
    await store.create("/big", b"x" * MAX_VALUE_BYTES)
    with pytest.raises(InvalidContinueTokenError):
        await store.list("/p/", limit=1, continue_token="garbage!")
    with pytest.raises(ValueError):
        await store.create("/ttl", b"x", ttl=-1)
    assert await store.get("/big") is not None


async def test_unicode_keys_and_prefixes(store: Store) -> None:
    await store.create("/ns/\u00e9t\u00e9", b"1")
    await store.create("/ns/\U0001f600", b"2")
    await store.create("/nt/z", b"3")
    assert len((await store.list("/ns/")).items) == 2
    assert (await store.get("/ns/\U0001f600")).value == b"2"


async def test_empty_prefix_lists_everything(store: Store) -> None:
    await store.create("/a", b"1")
    await store.create("/b/c", b"2")
    assert [kv.key for kv in (await store.list("")).items] == ["/a", "/b/c"]
