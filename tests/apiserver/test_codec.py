"""Pure parts of the HTTP layer: body decoding, content negotiation, path parsing, Status errors."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.server.apiserver import codec
from k3py.server.apiserver.discovery import aggregated_version
from k3py.server.apiserver.handlers import parse_resource_path

BILLION_LAUGHS = b"""
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def test_yaml_body_decodes_to_plain_json_values() -> None:
    obj = codec.decode_body(b"kind: ConfigMap\nmetadata: {name: x}\ndata: {when: 2024-01-01}\n", "application/yaml")
    assert obj == {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"when": "2024-01-01"}}


def test_yaml_alias_bomb_is_refused_with_400() -> None:
    with pytest.raises(errors.ApiError) as info:
        codec.decode_body(BILLION_LAUGHS, "application/yaml")
    assert info.value.code == 400


def test_yaml_python_tags_are_refused() -> None:
    with pytest.raises(errors.ApiError) as info:
        codec.decode_body(b"!!python/object/apply:os.system ['true']", "application/yaml")
    assert info.value.code == 400


def test_malformed_json_is_400_and_unknown_media_type_415() -> None:
    with pytest.raises(errors.ApiError) as bad:
        codec.decode_body(b"{nope", "application/json")
    assert bad.value.code == 400
    with pytest.raises(errors.ApiError) as unknown:
        codec.decode_body(b"<x/>", "application/xml")
    assert unknown.value.code == 415


def test_body_over_3_mib_is_413() -> None:
    with pytest.raises(errors.ApiError) as info:
        codec.decode_body(b" " * (3 * 1024 * 1024 + 1), "application/json")
    assert info.value.code == 413


def test_negotiate_prefers_table_as_kubectl_asks() -> None:
    accept = (
        "application/json;as=Table;v=v1;g=meta.k8s.io,"
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    )
    assert codec.negotiate(accept) == codec.Negotiated("application/json", "Table", "v1")
    assert codec.negotiate("application/vnd.kubernetes.protobuf, application/json").as_kind == ""
    assert codec.negotiate("application/yaml").media == "application/yaml"
    with pytest.raises(errors.ApiError) as info:
        codec.negotiate("text/html")
    assert info.value.code == 406


def test_aggregated_discovery_is_chosen_by_accept() -> None:
    kubectl = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    )
    assert aggregated_version(kubectl) == "v2"
    assert aggregated_version("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList") == "v2beta1"
    assert aggregated_version("application/json") is None


def test_resource_paths_parse_like_upstream() -> None:
    rr = parse_resource_path(["api", "v1", "namespaces", "ns1", "pods", "p", "status"])
    assert rr is not None and (rr.namespace, rr.plural, rr.name, rr.subresource) == ("ns1", "pods", "p", "status")
    ns = parse_resource_path(["api", "v1", "namespaces", "ns1", "finalize"])
    assert ns is not None and (ns.namespace, ns.plural, ns.name, ns.subresource) == ("", "namespaces", "ns1", "finalize")
    grouped = parse_resource_path(["apis", "apps", "v1", "deployments"])
    assert grouped is not None and (grouped.group, grouped.namespace, grouped.plural) == ("apps", "", "deployments")


def test_status_errors_use_kubernetes_wording() -> None:
    assert errors.not_found("pods", "x").message == 'pods "x" not found'
    assert errors.already_exists("configmaps", "x").message == 'configmaps "x" already exists'
    assert errors.conflict("deployments", "web", "apps").message == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    status = errors.invalid("ConfigMap", "x", [{"field": "metadata.name", "message": "bad", "reason": "FieldValueInvalid"}]).to_status()
    assert status["code"] == 422 and status["details"]["causes"][0]["field"] == "metadata.name"
