"""Updates that start from the watch cache's copy still decide on the store's current object.

The registry's first update attempt reads the object from the watch cache instead of the store.
These tests stop the cache from following the store, so its copy is stale for certain, and
check that clients see exactly what a store read would have given them: no false 409, no
skipped write, the newest spec under a status write, and a real conflict still reported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k3py.api import errors
from k3py.api.resources import ResourceInfo, builtin_resources
from k3py.server.apiserver.registry import Registry, WriteOptions
from k3py.server.apiserver.watchcache import WatchCache
from k3py.store.factory import open_store


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    store = open_store("", tmp_path)
    await store.start()
    cache = WatchCache(store)
    await cache.start()
    reg = Registry(store, cache, builtin_resources())
    try:
        yield reg
    finally:
        await cache.close()
        await store.close()


def _info(reg: Registry, plural: str, group: str = "", version: str = "v1") -> ResourceInfo:
    info = reg.table.lookup(group, version, plural)
    assert info is not None
    return info


async def _freeze_cache(reg: Registry) -> None:
    """Stop the cache following the store: every later write leaves it behind."""
    task = reg.cache._task
    assert task is not None
    task.cancel()
    try:
        await task
    except BaseException:  # the cancellation we asked for
        pass


async def _setup(reg: Registry) -> tuple[ResourceInfo, dict[str, Any]]:
    ns = _info(reg, "namespaces")
    await reg.create(ns, "", {"metadata": {"name": "t"}}, WriteOptions())
    pods = _info(reg, "pods")
    pod = await reg.create(pods, "t", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}},
                           WriteOptions(field_manager="test"))
    assert await reg.cache.wait_for(int(pod["metadata"]["resourceVersion"]), 5)
    return pods, pod


async def test_put_with_the_stores_version_succeeds_while_the_cache_is_behind(registry: Registry) -> None:
    pods, pod = await _setup(registry)
    await _freeze_cache(registry)
    labelled = await registry.update(pods, "t", "p", {**pod, "metadata": {**pod["metadata"], "labels": {"a": "1"}}}, WriteOptions())
    # The cache still holds the first version; the client sends the store's current one.
    again = await registry.update(pods, "t", "p", {**labelled, "metadata": {**labelled["metadata"], "labels": {"a": "2"}}}, WriteOptions())
    assert again["metadata"]["labels"] == {"a": "2"}
    assert int(again["metadata"]["resourceVersion"]) > int(labelled["metadata"]["resourceVersion"])
    stored = await registry.store.get("/registry/core/pods/t/p")
    assert stored is not None and stored.mod_revision == int(again["metadata"]["resourceVersion"])


async def test_a_stale_resource_version_still_conflicts(registry: Registry) -> None:
    pods, pod = await _setup(registry)
    await _freeze_cache(registry)
    await registry.update(pods, "t", "p", {**pod, "metadata": {**pod["metadata"], "labels": {"a": "1"}}}, WriteOptions())
    with pytest.raises(errors.ApiError) as caught:
        await registry.update(pods, "t", "p", {**pod, "metadata": {**pod["metadata"], "labels": {"a": "2"}}}, WriteOptions())
    assert caught.value.code == 409


async def test_writing_back_what_the_stale_cache_holds_is_not_a_no_op(registry: Registry) -> None:
    pods, pod = await _setup(registry)
    await _freeze_cache(registry)
    changed = await registry.update(pods, "t", "p", {**pod, "metadata": {**pod["metadata"], "labels": {"a": "1"}}}, WriteOptions())
    # Back to the original labels (none): equal to the cache's stale copy, not to the store's.
    back = {**pod, "metadata": {**pod["metadata"], "resourceVersion": ""}}
    back["metadata"].pop("labels", None)
    written = await registry.update(pods, "t", "p", back, WriteOptions())
    assert not written["metadata"].get("labels")
    assert int(written["metadata"]["resourceVersion"]) > int(changed["metadata"]["resourceVersion"])


async def test_a_status_write_keeps_the_newest_spec_and_metadata(registry: Registry) -> None:
    pods, pod = await _setup(registry)
    await _freeze_cache(registry)
    labelled = await registry.update(pods, "t", "p", {**pod, "metadata": {**pod["metadata"], "labels": {"a": "1"}}}, WriteOptions())
    body = {**pod, "metadata": {**pod["metadata"], "resourceVersion": ""}, "status": {"phase": "Running"}}
    written = await registry.update(pods, "t", "p", body, WriteOptions(field_manager="kubelet"), "status")
    assert written["status"]["phase"] == "Running"
    assert written["metadata"]["labels"] == {"a": "1"}  # from the store, not the stale cache
    assert int(written["metadata"]["resourceVersion"]) > int(labelled["metadata"]["resourceVersion"])
    managers = {(e["manager"], e.get("subresource", "")) for e in written["metadata"]["managedFields"]}
    assert ("kubelet", "status") in managers


async def test_an_update_from_a_current_cache_does_not_touch_the_cached_object(registry: Registry) -> None:
    pods, pod = await _setup(registry)
    cached = registry.cache.cache("/registry/core/pods/").objects["/registry/core/pods/t/p"]
    before = repr(cached)
    body = {**pod, "status": {"phase": "Running", "podIP": "10.0.0.9"}}
    written = await registry.update(pods, "t", "p", body, WriteOptions(field_manager="kubelet"), "status")
    assert written["status"]["podIP"] == "10.0.0.9"
    assert repr(cached) == before  # shared by every reader: never mutated in place
