"""The HTTPS transport against a real k3py server: CRUD, patches, errors, watch, auth.

(410 handling is covered by the informer tests: a fresh server still holds all history.)

The client runs an asyncio loop on a thread inside the cluster's network namespace
(``cluster.in_netns``), so its connections reach the server's loopback listener.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from k3py.api.errors import ApiError
from k3py.client.https import (
    KubeconfigError,
    client_from_files,
    client_from_kubeconfig,
    load_kubeconfig,
)
from k3py.client.interface import CONFIGMAPS, NAMESPACES, Client
from tests.cluster import TestCluster

T = TypeVar("T")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    with TestCluster(tmp_path_factory.mktemp("https")) as running:
        yield running


def run(cluster: TestCluster, body: Callable[[Client], Awaitable[T]], client: Callable[[], Client] | None = None) -> T:
    async def main() -> T:
        c = client() if client else client_from_kubeconfig(cluster.kubeconfig, field_manager="https-test")
        try:
            return await body(c)
        finally:
            await c.close()

    return cluster.in_netns(asyncio.run, main())


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_crud_and_patches(server: TestCluster) -> None:
    async def body(c: Client) -> None:
        await c.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "crud"}})
        created = await c.create(CONFIGMAPS, configmap("cfg", {"a": "1"}), "crud")
        assert created["metadata"]["uid"] and created["metadata"]["namespace"] == "crud"
        got = await c.get(CONFIGMAPS, "cfg", "crud")
        got["data"]["b"] = "2"
        updated = await c.update(CONFIGMAPS, got)
        assert updated["data"] == {"a": "1", "b": "2"}
        merged = await c.patch(CONFIGMAPS, "cfg", {"data": {"a": None, "c": "3"}}, "crud")
        assert merged["data"] == {"b": "2", "c": "3"}
        jsonp = await c.patch(CONFIGMAPS, "cfg", [{"op": "replace", "path": "/data/b", "value": "x"}], "crud", patch_type="json")
        assert jsonp["data"]["b"] == "x"
        strategic = await c.patch(CONFIGMAPS, "cfg", {"metadata": {"labels": {"k": "v"}}}, "crud", patch_type="strategic")
        assert strategic["metadata"]["labels"] == {"k": "v"}
        listed = await c.list(CONFIGMAPS, "crud", label_selector={"k": "v"})
        assert [i["metadata"]["name"] for i in listed["items"]] == ["cfg"]
        assert int(listed["metadata"]["resourceVersion"]) > 0
        await c.delete(CONFIGMAPS, "cfg", "crud")
        with pytest.raises(ApiError) as err:
            await c.get(CONFIGMAPS, "cfg", "crud")
        assert (err.value.code, err.value.reason, err.value.message) == (404, "NotFound", 'configmaps "cfg" not found')

    run(server, body)


def test_conflict_and_already_exists_are_api_errors(server: TestCluster) -> None:
    async def body(c: Client) -> None:
        await c.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "errs"}})
        first = await c.create(CONFIGMAPS, configmap("dup", {}), "errs")
        with pytest.raises(ApiError) as err:
            await c.create(CONFIGMAPS, configmap("dup", {}), "errs")
        assert (err.value.code, err.value.reason) == (409, "AlreadyExists")
        await c.update(CONFIGMAPS, {**first, "data": {"x": "1"}})
        with pytest.raises(ApiError) as err:
            await c.update(CONFIGMAPS, {**first, "data": {"x": "2"}})  # stale resourceVersion
        assert (err.value.code, err.value.reason) == (409, "Conflict")

    run(server, body)


def test_watch_from_resource_version(server: TestCluster) -> None:
    async def body(c: Client) -> None:
        await c.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "watching"}})
        listed = await c.list(CONFIGMAPS, "watching")
        rv = listed["metadata"]["resourceVersion"]
        events: list[tuple[str, str]] = []

        async def consume() -> None:
            async for event in c.watch(CONFIGMAPS, "watching", resource_version=rv, timeout_seconds=30,
                                      field_selector="metadata.name=w1"):
                if event["type"] != "BOOKMARK":
                    events.append((event["type"], event["object"]["metadata"]["name"]))
                if len(events) == 3:
                    return

        task = asyncio.create_task(consume())
        await c.create(CONFIGMAPS, configmap("w1", {}), "watching")
        await c.patch(CONFIGMAPS, "w1", {"data": {"a": "1"}}, "watching")
        await c.delete(CONFIGMAPS, "w1", "watching")
        await asyncio.wait_for(task, 20)
        assert events == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]

    run(server, body)


def test_bearer_token_and_explicit_ca(server: TestCluster, tmp_path: Path) -> None:
    config = yaml.safe_load(server.kubeconfig.read_text())
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]))
    token = (server.data_dir / "token").read_text().strip()
    url = config["clusters"][0]["cluster"]["server"]

    async def body(c: Client) -> list[str]:
        return [n["metadata"]["name"] for n in (await c.list(NAMESPACES))["items"]]

    names = run(server, body, client=lambda: client_from_files(url, ca=ca, token=token))
    assert "default" in names
    with pytest.raises(ApiError) as err:
        run(server, body, client=lambda: client_from_files(url, ca=ca, token="wrong"))
    assert err.value.code == 401


def test_kubeconfig_errors_are_clear(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(KubeconfigError, match="cannot read kubeconfig"):
        load_kubeconfig(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Config\ncurrent-context: x\ncontexts: []\n")
    with pytest.raises(KubeconfigError, match="no context named 'x'"):
        load_kubeconfig(bad)


def test_subresources_scale_binding_eviction(server: TestCluster) -> None:
    from k3py.client.interface import DEPLOYMENTS, NODES, PODS

    async def body(c: Client) -> None:
        await c.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "subres"}})
        await c.create(DEPLOYMENTS, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}, "subres")
        # Let the deployment controller finish its first writes: the server's PATCH of /scale
        # does not yet retry internally when the object changes underneath (reported).
        for _ in range(200):
            d = await c.get(DEPLOYMENTS, "d", "subres")
            if (d.get("status") or {}).get("observedGeneration") == d["metadata"]["generation"] and (
                    d["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision"):
                break
            await asyncio.sleep(0.05)
        scale = await c.get_scale(DEPLOYMENTS, "d", "subres")
        assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1
        await c.set_scale(DEPLOYMENTS, "d", "subres", 4)
        assert (await c.get(DEPLOYMENTS, "d", "subres"))["spec"]["replicas"] == 4

        # A pod no scheduler handles, bound by hand to a node registered by hand.
        await c.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "manual-node"}})
        pod = await c.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                    "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "nginx"}]}}, "subres")
        await c.bind("subres", "p", "manual-node", pod["metadata"]["uid"])
        assert (await c.get(PODS, "p", "subres"))["spec"]["nodeName"] == "manual-node"
        with pytest.raises(ApiError) as err:
            await c.bind("subres", "p", "manual-node")
        assert err.value.code == 409
        await c.evict("subres", "p", grace_period_seconds=0)
        with pytest.raises(ApiError) as err:
            await c.get(PODS, "p", "subres")
        assert err.value.code == 404

    run(server, body)
