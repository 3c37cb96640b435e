"""The pure parts of the hostile-client defences, one by one: the connection guard's choices,
the log summary, the YAML decoder against PyYAML, the bounds, the JSON-patch copy limit and
the protobuf budget. The attacks themselves run against a real server in the other
``test_hostile_*`` modules."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import yaml

from k3py.api import patch
from k3py.api.bounds import BoundsError, check_bounds
from k3py.api.protobuf import ProtobufError, decode_k8s_protobuf
from k3py.api.yamldecode import YamlError, load_all
from k3py.server.apiserver.connections import (
    ConnectionGuard,
    ConnectionLimits,
    default_max_connections,
)
from k3py.util.logsummary import LogSummary


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


# -- the connection guard -------------------------------------------------------------------


def test_guard_evicts_the_oldest_idle_unauthenticated_connection_first() -> None:
    guard = ConnectionGuard(ConnectionLimits(max_connections=4))
    busy_anonymous, admin_idle, anonymous_old, anonymous_new = (guard.admit(FakeTransport()) for _ in range(4))
    assert None not in (busy_anonymous, admin_idle, anonymous_old, anonymous_new)
    assert busy_anonymous and admin_idle and anonymous_old and anonymous_new
    guard.request_started(busy_anonymous)
    guard.authenticated(admin_idle)
    guard.request_started(admin_idle)
    guard.request_finished(admin_idle)
    newcomer = guard.admit(FakeTransport())
    assert newcomer is not None and len(guard) == 4
    assert anonymous_old.transport.aborted  # type: ignore[attr-defined]
    assert not busy_anonymous.transport.aborted and not admin_idle.transport.aborted  # type: ignore[attr-defined]
    assert guard.evicted == 1


def test_guard_evicts_an_idle_authenticated_connection_only_when_nothing_else_is_idle() -> None:
    guard = ConnectionGuard(ConnectionLimits(max_connections=2))
    busy, admin = guard.admit(FakeTransport()), guard.admit(FakeTransport())
    assert busy and admin
    guard.request_started(busy)
    guard.authenticated(admin)
    guard.request_started(admin)
    guard.request_finished(admin)
    assert guard.admit(FakeTransport()) is not None
    assert admin.transport.aborted  # type: ignore[attr-defined]


def test_guard_refuses_a_new_connection_when_every_one_is_serving_a_request() -> None:
    guard = ConnectionGuard(ConnectionLimits(max_connections=2))
    for _ in range(2):
        conn = guard.admit(FakeTransport())
        assert conn
        guard.request_started(conn)
    assert guard.admit(FakeTransport()) is None
    assert guard.refused == 1 and len(guard) == 2


def test_guard_closes_connections_without_a_request_head_after_the_header_timeout() -> None:
    guard = ConnectionGuard(ConnectionLimits(header_timeout=10, max_connections=10))
    silent, talking = guard.admit(FakeTransport()), guard.admit(FakeTransport())
    assert silent and talking
    guard.request_started(talking)
    guard.request_finished(talking)
    assert guard.sweep(now=silent.accepted + 5) == 0
    assert guard.sweep(now=silent.accepted + 11) == 1
    assert silent.transport.aborted and not talking.transport.aborted  # type: ignore[attr-defined]
    assert len(guard) == 1 and guard.timed_out == 1


def test_default_connection_cap_leaves_file_descriptors_for_the_rest() -> None:
    assert default_max_connections(1024) == 768
    assert default_max_connections(20000) == 8192
    assert default_max_connections(100) == 64


# -- the log summary ------------------------------------------------------------------------


def test_log_summary_writes_each_failure_once_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    summary = LogSummary(logging.getLogger("test.summary"), window=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.summary"):
        for _ in range(1000):
            summary.log("boom", logging.ERROR, "it broke: %s", "details")
        summary.log("other", logging.WARNING, "something else")
        now[0] = 61
        summary.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "it broke: details",
        "something else",
        "999 more like this in the last 60 s: it broke: details",
    ]


# -- YAML ------------------------------------------------------------------------------------


COMPATIBLE = [
    "a: 1\nb: [1, 2.5, true, null, ~, yes, 'x', 0x1f, 1_000, -7]\nc: {d: e}\n",
    "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n",
    "b1: &b {x: 1, y: 2}\nb2: &c {z: 9, x: 7}\nd:\n  <<: [*b, *c]\n  y: 3\n",
    "k: &a [1, {x: [2]}]\nl: *a\nm: *a\n",
    "s: |\n  multi\n  line\nf: >\n  folded\n  text\n",
    "x: !!str 123\ny: !!int '5'\nz: !!float '1.5'\n",
    "q: 'it''s'\nr: \"tab\\tand \\u00e9\"\n",
    "- a\n- - b\n  - c\n- {d: e}\n",
]


@pytest.mark.parametrize("text", COMPATIBLE)
def test_yaml_decodes_as_pyyaml_does(text: str) -> None:
    assert load_all(text.encode()) == list(yaml.safe_load_all(text))


def test_yaml_keys_and_timestamps_keep_their_text_as_kubernetes_does() -> None:
    assert load_all(b"1: a\ntrue: b\nnull: c\nwhen: 2001-12-14t21:59:43.10-05:00\n") == [
        {"1": "a", "true": "b", "null": "c", "when": "2001-12-14t21:59:43.10-05:00"}
    ]


def test_yaml_aliases_are_independent_copies() -> None:
    doc = load_all(b"a: &x {k: [1]}\nb: *x\n")[0]
    doc["a"]["k"].append(2)
    assert doc["b"] == {"k": [1]}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"!!python/object/apply:os.system ['true']", "unsupported tag"),
        (b"a: &a [*a]", "contains it"),
        (b"x: " + b"[" * 150 + b"]" * 150, "nested more than 100 levels"),
        (b"x: " + b"9" * 5000, "64-bit integer range"),
        (b"x: 18446744073709551616", "64-bit integer range"),
        (b"x: .inf", "not finite"),
        (b"? [a]\n: b\n", "must be a scalar"),
        (b"a: !!set {x, y}", "unsupported tag"),
        (b"x: *nope", "unknown anchor"),
        (b"a: [unclosed", "yaml: line"),
    ],
)
def test_yaml_refusals(text: bytes, needle: str) -> None:
    with pytest.raises(YamlError, match=None) as info:
        load_all(text)
    assert needle in str(info.value)


def test_yaml_alias_expansion_counts_against_the_budget() -> None:
    laughs = b"a: &a [x,x,x,x,x,x,x,x,x,x]\n" + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n".encode() for i in range(6)
    )
    with pytest.raises(YamlError) as info:
        load_all(laughs, max_nodes=200_000)
    assert "too large" in str(info.value)


def test_yaml_nesting_of_a_million_levels_neither_recurses_nor_crashes() -> None:
    with pytest.raises(YamlError):
        load_all(b"x: " + b"[" * 1_000_000 + b"]" * 1_000_000)


# -- bounds, JSON patch, protobuf ------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_bounds() -> None:
    check_bounds(_nested(100))
    check_bounds({"n": [2**64 - 1, -(2**63), 1.5, True]})
    for bad in (_nested(101), {"n": 2**64}, {"n": [-(2**63) - 1]}, {"f": float("inf")}, {"f": float("nan")}):
        with pytest.raises(BoundsError):
            check_bounds(bad)


def test_json_patch_copies_stop_at_3_mib_like_upstream() -> None:
    doc = {"a": ["x" * 1000]}
    doubling = [{"op": "copy", "from": "/a", "path": "/a/-"}] * 40
    with pytest.raises(patch.PatchError) as info:
        patch.apply_json_patch(doc, doubling)
    assert info.value.code == 422
    assert str(info.value).startswith("Unable to complete the copy, the accumulated size increase of copy is ")
    assert str(info.value).endswith("exceeding the limit 3145728")
    # Copies adding up to less than the limit are fine.
    assert len(patch.apply_json_patch(doc, doubling[:10])["a"]) == 11


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 1 << 21
    length = len(payload)
    varint = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | 0x80 if length else byte)
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(varint) + payload


def test_protobuf_list_of_empty_items_runs_out_of_budget() -> None:
    envelope = _field(1, _field(1, b"v1") + _field(2, b"PodList"))
    small = b"k8s\x00" + envelope + _field(2, _field(2, b"") * 100)
    assert len(decode_k8s_protobuf(small)["items"]) == 100
    with pytest.raises(ProtobufError) as info:
        decode_k8s_protobuf(b"k8s\x00" + envelope + _field(2, _field(2, b"") * 100_000))
    assert "too many objects" in str(info.value)
