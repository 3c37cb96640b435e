"""The official `kubernetes` Python client: CRUD and watch, unmodified, over TLS."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.cluster import TestCluster


def _api(cluster: TestCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


def test_python_client_crud(cluster: TestCluster) -> None:
    def run() -> None:
        api = _api(cluster)
        core = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="pyclient")))
        cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c", labels={"app": "x"}), data={"k": "v"})
        created = core.create_namespaced_config_map("pyclient", cm)
        assert created.metadata.uid and created.data == {"k": "v"}
        listed = core.list_namespaced_config_map("pyclient", label_selector="app=x")
        assert [i.metadata.name for i in listed.items] == ["c"]
        created.data = {"k": "v2"}
        replaced = core.replace_namespaced_config_map("c", "pyclient", created)
        assert replaced.data == {"k": "v2"}
        patched = core.patch_namespaced_config_map("c", "pyclient", {"metadata": {"annotations": {"a": "b"}}})
        assert patched.metadata.annotations == {"a": "b"}
        dep = client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels={"app": "web"}),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"app": "web"}),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
                ),
            ),
        )
        apps.create_namespaced_deployment("pyclient", dep)
        scale = apps.read_namespaced_deployment_scale("web", "pyclient")
        assert scale.spec.replicas == 2 and scale.status.selector == "app=web"
        core.delete_namespaced_config_map("c", "pyclient")
        try:
            core.read_namespaced_config_map("c", "pyclient")
            raise AssertionError("the ConfigMap should be gone")
        except ApiException as e:
            assert e.status == 404
        api.close()

    cluster.in_netns(run)


def test_python_client_watch(cluster: TestCluster) -> None:
    def run() -> list[tuple[str, str]]:
        api = _api(cluster)
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="pywatch")))
        rv = core.list_namespaced_config_map("pywatch").metadata.resource_version
        seen: list[tuple[str, str]] = []
        ready = threading.Event()

        def changes() -> None:
            ready.wait(10)
            core.create_namespaced_config_map("pywatch", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w")))
            core.patch_namespaced_config_map("w", "pywatch", {"data": {"a": "b"}})
            core.delete_namespaced_config_map("w", "pywatch")

        writer = threading.Thread(target=changes)
        writer.start()
        w = watch.Watch()
        stream: Any = w.stream(core.list_namespaced_config_map, "pywatch", resource_version=rv, timeout_seconds=20, field_selector="metadata.name=w")
        ready.set()
        for event in stream:
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                w.stop()
        writer.join()
        api.close()
        return seen

    assert cluster.in_netns(run) == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
