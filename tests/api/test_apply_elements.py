"""managedFields list elements (``k:{...}``, ``v:...``) are written byte for byte as before the
orjson fast path: compact JSON with sorted keys, non-ASCII and DEL escaped, floats by repr."""

from __future__ import annotations

import json
import random

from k3py.api.apply import _compact_json, _key_element


def _reference(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def test_key_elements_of_the_usual_list_map_keys() -> None:
    assert _key_element({"type": "Ready", "status": "True"}, ["type"]) == 'k:{"type":"Ready"}'
    assert _key_element({"protocol": "TCP", "containerPort": 80}, ["containerPort", "protocol"]) == \
        'k:{"containerPort":80,"protocol":"TCP"}'


def test_same_text_as_json_for_awkward_values() -> None:
    awkward: list[object] = [
        {"name": "ünï"}, {"a": None, "b": True}, {"x": 1.5}, {"x": 1e16}, 'a"b\\c\n\x01\x7f', 2**70,
        {"k": 2**70}, {"b": 1, "a": {"z": 1, "y": [1, 2]}}, "</script>&", {"": ""}, "\u2028",
    ]
    rnd = random.Random(7)
    for _ in range(2000):
        text = "".join(chr(rnd.randrange(0, 400)) for _ in range(rnd.randrange(0, 6)))
        awkward.append({"k": text, "n": rnd.randrange(-(10**20), 10**20)})
    for value in awkward:
        assert _compact_json(value) == _reference(value), value
