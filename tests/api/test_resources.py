"""The built-in resource table says what a real 1.32 cluster's discovery says."""

from __future__ import annotations

import re

from k3py.api.resources import ResourceInfo, ResourceTable, builtin_resources, version_priority_key


def _short_names(table: ResourceTable) -> dict[str, str]:
    return {s: f"{i.group}/{i.plural}" for i in table.all() for s in i.short_names}


def test_short_names_match_upstream() -> None:
    short = _short_names(builtin_resources())
    expected = {
        "po": "/pods", "svc": "/services", "deploy": "apps/deployments", "rs": "apps/replicasets",
        "ds": "apps/daemonsets", "sts": "apps/statefulsets", "cm": "/configmaps",
        "ns": "/namespaces", "no": "/nodes", "pv": "/persistentvolumes",
        "pvc": "/persistentvolumeclaims", "sa": "/serviceaccounts", "ep": "/endpoints",
        "cj": "batch/cronjobs", "hpa": "autoscaling/horizontalpodautoscalers",
        "ing": "networking.k8s.io/ingresses", "netpol": "networking.k8s.io/networkpolicies",
        "pdb": "policy/poddisruptionbudgets", "pc": "scheduling.k8s.io/priorityclasses",
        "sc": "storage.k8s.io/storageclasses", "crd": "apiextensions.k8s.io/customresourcedefinitions",
        "crds": "apiextensions.k8s.io/customresourcedefinitions", "limits": "/limitranges",
        "quota": "/resourcequotas", "rc": "/replicationcontrollers", "cs": "/componentstatuses",
    }
    for name, resource in expected.items():
        assert short[name] == resource, name
    # "ev" names both core and events.k8s.io events; kubectl resolves it to core first.
    assert {i.group for i in builtin_resources().all() if "ev" in i.short_names} == {"", "events.k8s.io"}


def test_all_category_is_upstreams() -> None:
    in_all = sorted(
        f"{i.group}/{i.plural}" for i in builtin_resources().all() if "all" in i.categories
    )
    # autoscaling appears once per served version (v2 and v1).
    assert sorted(set(in_all)) == sorted([
        "/pods", "/services", "/replicationcontrollers", "apps/deployments", "apps/replicasets",
        "apps/statefulsets", "apps/daemonsets", "batch/jobs", "batch/cronjobs",
        "autoscaling/horizontalpodautoscalers",
    ])


def test_groups_order_and_preferred_versions() -> None:
    groups = builtin_resources().groups()
    names = [g for g, _ in groups]
    assert names[0] == ""
    assert names[:3] == ["", "apps", "events.k8s.io"]
    assert dict(groups)["autoscaling"] == ["v2", "v1"]
    assert set(names) == {
        "", "apps", "events.k8s.io", "autoscaling", "batch", "networking.k8s.io", "policy",
        "rbac.authorization.k8s.io", "storage.k8s.io", "apiextensions.k8s.io",
        "scheduling.k8s.io", "coordination.k8s.io", "discovery.k8s.io",
    }


def test_subresources_verbs_and_kinds() -> None:
    t = builtin_resources()
    pods = t.lookup("", "v1", "pods")
    assert pods is not None and pods.namespaced and pods.singular == "pod"
    assert [s.name for s in pods.subresources] == [
        "attach", "binding", "ephemeralcontainers", "eviction", "exec", "log", "portforward",
        "proxy", "status",
    ]
    eviction = pods.subresource("eviction")
    assert eviction is not None and (eviction.group, eviction.kind) == ("policy", "Eviction")
    for plural, group in (("deployments", "apps"), ("replicasets", "apps"),
                          ("statefulsets", "apps"), ("replicationcontrollers", "")):
        info = t.lookup(group, "v1", plural)
        assert info is not None
        scale = info.subresource("scale")
        assert scale is not None
        assert (scale.group, scale.version, scale.kind, scale.verbs) == (
            "autoscaling", "v1", "Scale", ("get", "patch", "update"))
        status = info.subresource("status")
        assert status is not None and status.kind == info.kind
    ds = t.lookup("apps", "v1", "daemonsets")
    assert ds is not None and ds.subresource("scale") is None
    ns = t.lookup("", "v1", "namespaces")
    assert ns is not None and "deletecollection" not in ns.verbs and not ns.namespaced
    fin = ns.subresource("finalize")
    assert fin is not None and fin.verbs == ("update",)
    binding = t.lookup("", "v1", "bindings")
    assert binding is not None and binding.verbs == ("create",)
    cs = t.lookup("", "v1", "componentstatuses")
    assert cs is not None and cs.verbs == ("get", "list")
    sa = t.lookup("", "v1", "serviceaccounts")
    assert sa is not None
    token = sa.subresource("token")
    assert token is not None and (token.group, token.kind) == ("authentication.k8s.io", "TokenRequest")
    for plural in ("services", "nodes"):
        info = t.lookup("", "v1", plural)
        assert info is not None and info.subresource("proxy") is not None


def test_properties_and_shared_storage() -> None:
    t = builtin_resources()
    deploy = t.by_kind("apps", "v1", "Deployment")
    assert deploy is not None
    assert (deploy.api_version, deploy.group_version, deploy.list_kind) == (
        "apps/v1", "apps/v1", "DeploymentList")
    cm = t.by_kind("", "v1", "ConfigMap")
    assert cm is not None and cm.api_version == "v1"
    assert (cm.storage_group, cm.storage_plural) == ("", "configmaps")
    hpa1 = t.lookup("autoscaling", "v1", "horizontalpodautoscalers")
    hpa2 = t.lookup("autoscaling", "v2", "horizontalpodautoscalers")
    assert hpa1 is not None and hpa2 is not None
    assert (hpa1.storage_group, hpa1.storage_plural) == (hpa2.storage_group, hpa2.storage_plural)
    ev = t.lookup("events.k8s.io", "v1", "events")
    assert ev is not None and (ev.storage_group, ev.storage_plural) == ("", "events")
    assert t.preferred("autoscaling", "horizontalpodautoscalers") is hpa2


def test_crds_come_and_go() -> None:
    t = builtin_resources()
    gen = t.generation
    crd = ResourceInfo("example.com", "v1beta1", "Widget", "widgets", "widget", True,
                       ("get", "list"), short_names=("wd",))
    t.add(crd)
    t.add(ResourceInfo("example.com", "v1", "Widget", "widgets", "widget", True, ("get",)))
    assert t.generation > gen
    assert t.lookup("example.com", "v1beta1", "widgets") == crd
    assert t.by_kind("example.com", "v1beta1", "Widget") == crd
    assert t.groups()[-1] == ("example.com", ["v1", "v1beta1"])
    gen = t.generation
    t.set_schema("example.com", "v1", "Widget", {"type": "object"})
    assert t.schema("example.com", "v1", "Widget") == {"type": "object"} and t.generation > gen
    t.remove("example.com", "v1beta1", "widgets")
    t.remove("example.com", "v1", "widgets")
    assert t.schema("example.com", "v1", "Widget") is None
    t.remove("example.com", "v1", "widgets")  # removing twice is harmless
    assert t.lookup("example.com", "v1beta1", "widgets") is None
    assert t.by_kind("example.com", "v1beta1", "Widget") is None
    assert "example.com" not in dict(t.groups())


def test_version_priority() -> None:
    versions = ["v1alpha1", "v1", "v2beta1", "v1beta2", "v2", "foo", "v1beta1", "v10"]
    assert sorted(versions, key=version_priority_key) == [
        "v10", "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"]


# --- cross-check with the official Python client (generated from upstream's OpenAPI) --------

# Subresources the installed client (generated for a newer Kubernetes than 1.32) knows that a
# 1.32 server does not serve: pods/resize is alpha and off by default in 1.32, and CSINode
# has no status in 1.32's API.
NOT_IN_1_32 = {("", "pods", "resize"), ("storage.k8s.io", "csinodes", "status")}


def _snake(kind: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", kind).lower()


def _api_class(group: str, version: str) -> type:
    from kubernetes import client

    base = "Core" if not group else "".join(
        p.capitalize() for p in group.removesuffix(".k8s.io").split("."))
    return getattr(client, f"{base}{version.capitalize()}Api")


_CONNECT = ("get", "post", "put", "patch", "delete", "head", "options")


def _client_operations(group: str, version: str, kinds: dict[str, ResourceInfo]) -> set[tuple[str, str, str]]:
    """(plural, subresource, verb) for every client method of the kinds we serve."""
    ops: set[tuple[str, str, str]] = set()
    methods = [m for m in dir(_api_class(group, version))
               if not m.startswith("_") and not m.endswith("_with_http_info") and m != "get_api_resources"]
    prefixes = [("delete_collection_", "deletecollection"), ("read_", "get"), ("list_", "list"),
                ("create_", "create"), ("replace_", "update"), ("patch_", "patch"), ("delete_", "delete")]
    prefixes += [(f"connect_{m}_", "connect") for m in _CONNECT]
    for method in methods:
        for prefix, verb in prefixes:
            if method.startswith(prefix):
                rest = method[len(prefix):].removeprefix("namespaced_")
                rest = rest.removesuffix("_for_all_namespaces").removesuffix("_with_path")
                for snake in sorted(kinds, key=len, reverse=True):
                    if rest == snake or rest.startswith(snake + "_"):
                        sub = rest[len(snake) + 1:]
                        ops.add((kinds[snake].plural, sub, verb))
                        break
                break
    return ops


def _our_operations(info: ResourceInfo) -> set[tuple[str, str, str]]:
    ops = {(info.plural, "", v) for v in info.verbs if v != "watch"}
    for sub in info.subresources:
        if sub.name in ("exec", "attach", "portforward", "proxy"):
            ops.add((info.plural, sub.name, "connect"))
        else:
            ops |= {(info.plural, sub.name, v) for v in sub.verbs}
    return ops


def test_verbs_and_subresources_match_the_official_client() -> None:
    t = builtin_resources()
    for group, versions in t.groups():
        for version in versions:
            infos = t.resources(group, version)
            kinds = {_snake(i.kind): i for i in infos}
            theirs = {op for op in _client_operations(group, version, kinds)
                      if (group, op[0], op[1]) not in NOT_IN_1_32}
            ours: set[tuple[str, str, str]] = set()
            for info in infos:
                ours |= _our_operations(info)
            # the client names one method per HTTP verb of a connect subresource; compare sets
            assert ours == theirs, (group, version, sorted(ours ^ theirs))
