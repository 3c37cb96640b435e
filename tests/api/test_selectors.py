"""Label and field selectors behave like upstream's labels.Parse / fields.ParseSelector."""

from __future__ import annotations

import pytest

from k3py.api.selectors import (
    SelectorError,
    check_field_selector,
    label_selector_from_dict,
    object_fields,
    parse_field_selector,
    parse_label_selector,
    supported_field_labels,
)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {"a": "b"}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app=web", {}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("app!=web", {"app": "db"}, True),
        ("env in (prod, staging)", {"env": "staging"}, True),
        ("env in (prod,staging)", {"env": "dev"}, False),
        ("env in (prod)", {}, False),
        ("env notin (prod)", {}, True),
        ("env notin (prod)", {"env": "prod"}, False),
        ("tier", {"tier": ""}, True),
        ("tier", {}, False),
        ("!tier", {}, True),
        ("!tier", {"tier": "x"}, False),
        ("a=1,b in (x,y),!c", {"a": "1", "b": "y"}, True),
        ("a=1,b in (x,y),!c", {"a": "1", "b": "y", "c": ""}, False),
        ("a=", {"a": ""}, True),
        ("a=", {"a": "x"}, False),
        ("example.com/role=db", {"example.com/role": "db"}, True),
        ("n>5", {"n": "7"}, True),
        ("n>5", {"n": "3"}, False),
        ("n<5", {"n": "x"}, False),
        ("  app = web  ", {"app": "web"}, True),
    ],
)
def test_label_selector_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


# Messages exactly as k8s.io/apimachinery/pkg/labels.Parse words them.
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("=b", "found '=', expected: !, identifier, or 'end of string'"),
        ("a=b,", "found '', expected: identifier after ','"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("a!=(", "unable to parse requirement: found '(', expected: identifier"),
        (
            "n>x",
            'unable to parse requirement: values[0]: Invalid value: "x": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
    ],
)
def test_label_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse_label_selector(text)
    assert str(err.value) == message


def test_label_selector_key_and_value_errors() -> None:
    with pytest.raises(SelectorError) as err:
        parse_label_selector("-bad=x")
    assert str(err.value).startswith(
        'unable to parse requirement: <nil>: Invalid value: "-bad": name part must consist of'
    )
    with pytest.raises(SelectorError) as err:
        parse_label_selector("a=-x")
    assert str(err.value).startswith(
        'unable to parse requirement: values[0][a]: Invalid value: "-x": a valid label must be an empty string'
    )


def test_label_selector_empty_values_in_sets() -> None:
    # "()" and stray commas stand for the empty value, as upstream.
    assert str(parse_label_selector("a in ()")) == "a in ()"
    assert parse_label_selector("a in ()").matches({"a": ""})
    assert parse_label_selector("a in (,x)").matches({"a": ""})
    assert parse_label_selector("a in (x,)").matches({"a": ""})
    assert not parse_label_selector("a in (x)").matches({"a": ""})


def test_label_selector_on_missing_or_malformed_labels() -> None:
    assert parse_label_selector("!a").matches(None)
    assert not parse_label_selector("a").matches(None)
    assert parse_label_selector("a!=x").matches(["not", "a", "map"])  # type: ignore[arg-type]


def test_label_selector_string_is_canonical() -> None:
    sel = parse_label_selector("z=1, a in (y, x), !b, c")
    assert str(sel) == "a in (x,y),!b,c,z=1"
    assert not sel.empty
    assert parse_label_selector("").empty


def test_label_selector_from_dict() -> None:
    sel = label_selector_from_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"app": "web", "env": "dev"})
    assert not sel.matches({"app": "web", "env": "dev", "legacy": "1"})
    assert not sel.matches({"app": "web"})
    assert str(sel) == "app=web,env in (dev,prod),!legacy"
    assert label_selector_from_dict({}).matches({"x": "y"})
    assert label_selector_from_dict({}).empty
    nothing = label_selector_from_dict(None)
    assert not nothing.matches({}) and not nothing.empty


@pytest.mark.parametrize(
    "sel",
    [
        {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
        {"matchExpressions": [{"key": "a", "operator": "Bogus"}]},
        {"matchLabels": {"a": "not valid!"}},
        {"matchLabels": "a=b"},
    ],
)
def test_label_selector_from_dict_errors(sel: dict) -> None:
    with pytest.raises(SelectorError):
        label_selector_from_dict(sel)


def test_field_selector_parse_and_match() -> None:
    sel = parse_field_selector("metadata.name=web,status.phase!=Running")
    assert sel.requirements == [("metadata.name", "=", "web"), ("status.phase", "!=", "Running")]
    assert sel.matches({"metadata.name": "web", "status.phase": "Pending"})
    assert not sel.matches({"metadata.name": "web", "status.phase": "Running"})
    assert sel.value_for("metadata.name") == "web"
    assert parse_field_selector("spec.nodeName==").requirements == [("spec.nodeName", "=", "")]
    # An absent field compares as "".
    assert parse_field_selector("spec.nodeName=").matches({})
    assert parse_field_selector("").empty


def test_field_selector_escapes() -> None:
    sel = parse_field_selector(r"metadata.name=a\,b\=c\\d,type=x")
    assert sel.requirements == [("metadata.name", "=", "a,b=c\\d"), ("type", "=", "x")]
    assert str(sel) == r"metadata.name=a\,b\=c\\d,type=x"


@pytest.mark.parametrize("text", ["metadata.name", r"metadata.name=a\x", "a=b=c", "=x"])
def test_field_selector_errors(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_field_selector(text)


def test_supported_fields_per_kind() -> None:
    assert supported_field_labels("", "ConfigMap") == {"metadata.name", "metadata.namespace"}
    assert supported_field_labels("", "Node") == {"metadata.name", "spec.unschedulable"}
    assert "status.podIP" in supported_field_labels("", "Pod")
    assert "involvedObject.uid" in supported_field_labels("", "Event")
    assert "regarding.name" in supported_field_labels("events.k8s.io", "Event")
    svc = {"metadata": {"name": "dns"}, "spec": {"clusterIP": "None", "type": "ClusterIP"}}
    assert (
        parse_field_selector("spec.clusterIP!=None").matches(object_fields("", "Service", svc))
        is False
    )
    assert parse_field_selector("spec.type=ClusterIP").matches(object_fields("", "Service", svc))
    assert supported_field_labels("example.com", "Widget", namespaced=False) == {"metadata.name"}
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.foo"):
        check_field_selector(parse_field_selector("spec.foo=x"), "", "Pod")
    with pytest.raises(SelectorError, match=r"field label not supported: metadata\.namespace"):
        check_field_selector(parse_field_selector("metadata.namespace=x"), "", "Namespace")
    check_field_selector(parse_field_selector("spec.nodeName=n1,metadata.name=p"), "", "Pod")


def test_object_fields_pod_and_event() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "n1", "hostNetwork": True, "restartPolicy": "Always"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.5"}]},
    }
    fields = object_fields("", "Pod", pod)
    assert fields["metadata.name"] == "p"
    assert fields["metadata.namespace"] == "ns"
    assert fields["spec.nodeName"] == "n1"
    assert fields["spec.hostNetwork"] == "true"
    assert fields["status.podIP"] == "10.42.0.5"
    assert fields["spec.schedulerName"] == ""
    assert parse_field_selector("spec.nodeName=n1,status.phase=Running").matches(fields)

    event = {
        "metadata": {"name": "e", "namespace": "ns"},
        "involvedObject": {"kind": "Pod", "name": "p", "uid": "u1", "namespace": "ns"},
        "source": {"component": "kubelet"},
        "reason": "Started",
        "type": "Normal",
    }
    efields = object_fields("", "Event", event)
    assert efields["involvedObject.uid"] == "u1"
    assert efields["source"] == "kubelet"
    new_event = {
        "metadata": {"name": "e", "namespace": "ns"},
        "regarding": {"kind": "Pod", "name": "p"},
        "reportingController": "kubelet",
    }
    nfields = object_fields("events.k8s.io", "Event", new_event)
    assert nfields["regarding.name"] == "p"
    assert nfields["involvedObject.name"] == "p"
    assert nfields["reportingComponent"] == "kubelet"
    assert object_fields("", "Node", {"metadata": {"name": "n"}}) == {
        "metadata.name": "n",
        "spec.unschedulable": "false",
    }
    assert object_fields("apps", "ReplicaSet", {"metadata": {}})["status.replicas"] == "0"


def test_any_text_parses_or_raises_selector_error() -> None:
    """Whatever a user types ends as a selector or a SelectorError (a 400), never a crash."""
    import random

    alphabet = list("ab=!(),<> in notin 12-./\\x")
    rnd = random.Random(5)
    for _ in range(5000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 14)))
        for parse in (parse_label_selector, parse_field_selector):
            try:
                parse(text)
            except SelectorError:
                pass
