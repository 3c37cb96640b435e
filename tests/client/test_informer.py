"""Informer cache, indexes, relist on 410, and list+watch against the in-memory transport."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from k3py.client.informer import (
    NODE_NAME_INDEX,
    OWNER_UID_INDEX,
    Cache,
    Informer,
    index_by_node_name,
    index_by_owner_uid,
    object_key,
)
from k3py.client.interface import PODS, Client
from k3py.client.memory import MemoryTransport


def pod(name: str, ns: str = "default", node: str = "", owner: str = "", rv: str = "1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "resourceVersion": rv}
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "kind": "ReplicaSet", "name": "rs", "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": node}}


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def test_keys() -> None:
    assert object_key(pod("a", "ns1")) == "ns1/a"
    assert object_key({"metadata": {"name": "node1"}}) == "node1"


def test_cache_indexes_follow_updates_and_removals() -> None:
    cache = Cache({NODE_NAME_INDEX: index_by_node_name, OWNER_UID_INDEX: index_by_owner_uid})
    cache.upsert(pod("a", node="n1", owner="u1"))
    cache.upsert(pod("b", node="n1"))
    cache.upsert(pod("c", ns="other", node="n2", owner="u1"))
    assert {object_key(p) for p in cache.by_index(NODE_NAME_INDEX, "n1")} == {"default/a", "default/b"}
    assert {object_key(p) for p in cache.by_index(OWNER_UID_INDEX, "u1")} == {"default/a", "other/c"}
    assert {object_key(p) for p in cache.list("other")} == {"other/c"}
    cache.upsert(pod("a", node="n2", owner="u1"))  # moved node
    assert {object_key(p) for p in cache.by_index(NODE_NAME_INDEX, "n1")} == {"default/b"}
    assert cache.index_keys(NODE_NAME_INDEX, "n2") == {"default/a", "other/c"}
    cache.remove("other/c")
    assert cache.index_keys(OWNER_UID_INDEX, "u1") == {"default/a"}
    assert cache.list("other") == []


def test_index_added_later_covers_existing_objects() -> None:
    cache = Cache()
    cache.upsert(pod("a", node="n1"))
    cache.add_indexer(NODE_NAME_INDEX, index_by_node_name)
    assert cache.index_keys(NODE_NAME_INDEX, "n1") == {"default/a"}


def test_relist_emits_adds_updates_and_deletes_for_the_difference() -> None:
    informer = Informer(Client(MemoryTransport()), PODS)
    events: list[tuple[str, str]] = []
    informer.add_handler(
        on_add=lambda o: events.append(("add", object_key(o))),
        on_update=lambda old, new: events.append(("update", object_key(new))),
        on_delete=lambda o: events.append(("delete", object_key(o))),
    )
    informer.apply_list([pod("a"), pod("b")], "5")
    assert informer.synced.is_set() and informer.resource_version == "5"
    events.clear()
    informer.apply_list([pod("a"), pod("b", rv="7"), pod("c")], "9")  # after a 410
    assert sorted(events) == [("add", "default/c"), ("update", "default/b")]
    events.clear()
    informer.apply_list([pod("c")], "10")
    assert sorted(events) == [("delete", "default/a"), ("delete", "default/b")]


def test_watch_events_update_cache_and_resource_version() -> None:
    informer = Informer(Client(MemoryTransport()), PODS)
    informer.apply_list([], "1")
    informer.apply_event({"type": "ADDED", "object": pod("a", rv="2")})
    informer.apply_event({"type": "MODIFIED", "object": pod("a", node="n1", rv="3")})
    assert informer.cache.get("default/a")["spec"]["nodeName"] == "n1"
    informer.apply_event({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "8"}}})
    assert informer.resource_version == "8"
    informer.apply_event({"type": "DELETED", "object": pod("a", rv="9")})
    assert "default/a" not in informer.cache
    assert informer.resource_version == "9"


def test_cached_objects_carry_no_managed_fields() -> None:
    informer = Informer(Client(MemoryTransport()), PODS)
    owned = pod("listed")
    owned["metadata"]["managedFields"] = [{"manager": "kubectl-create", "operation": "Update", "fieldsV1": {}}]
    informer.apply_list([owned], "1")
    watched = pod("watched", rv="2")
    watched["metadata"]["managedFields"] = [{"manager": "kubelet", "operation": "Update", "fieldsV1": {}}]
    informer.apply_event({"type": "ADDED", "object": watched})
    for key in ("default/listed", "default/watched"):
        assert "managedFields" not in informer.cache.get(key)["metadata"]


async def test_list_watch_follows_the_server_and_relists_after_expiry() -> None:
    transport = MemoryTransport()
    client = Client(transport)
    await client.create(PODS, pod("before"), "default")
    informer = Informer(client, PODS, indexers={NODE_NAME_INDEX: index_by_node_name})
    deleted: list[str] = []
    informer.add_handler(on_delete=lambda o: deleted.append(object_key(o)))
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 2)
        assert "default/before" in informer.cache
        await client.create(PODS, pod("after", node="n1"), "default")
        await until(lambda: "default/after" in informer.cache)
        assert informer.cache.index_keys(NODE_NAME_INDEX, "n1") == {"default/after"}
        # The server compacts: the watch ends with 410 and the informer relists.
        transport.history.clear()
        await client.delete(PODS, "before", "default")
        await until(lambda: "default/before" not in informer.cache)
        relists = informer.relists
        transport.expire_watches()
        await until(lambda: informer.relists == relists + 1)
        await client.create(PODS, pod("third"), "default")
        await until(lambda: "default/third" in informer.cache)
        assert deleted == ["default/before"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
