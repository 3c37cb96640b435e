"""YAML documents to JSON values, built iteratively from the parser's events, under budgets.

PyYAML's own loaders build a node graph recursively (``RecursionError`` past a few hundred
levels; libyaml's Cython composer simply overflows the C stack and crashes the process on a
document nested deeply enough), construct values recursively again, and keep aliased subtrees
shared (the "billion laughs": a 1 KiB document that expands to gigabytes). This module takes
only the parser's event stream — libyaml's when PyYAML has it, which is a state machine with
its own heap stack — and builds plain JSON values with an explicit stack:

* nesting deeper than ``k3py.api.bounds.MAX_NESTING_DEPTH`` is refused as it is reached;
* every value counts against a node budget, and an alias counts the whole size of what it
  copies, so expansion is bounded before it happens;
* an alias to a collection that is still open (a recursive structure) is refused;
* scalars get YAML 1.1 implicit types as PyYAML resolves them (``true``, ``1``, ``1.5``,
  ``null``) and must fit JSON: integers in 64 bits, floats finite; timestamps keep their text,
  as Kubernetes' YAML-to-JSON conversion does; mapping keys are the key scalars' text;
* merge keys (``<<: *base``) work as in PyYAML: explicit keys win, then earlier merges;
* any other explicit tag (``!!python/...``, ``!!set``, custom ones) is refused.

Errors are ``YamlError`` with a message in the style of Kubernetes' ("yaml: line 3: ...").
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from k3py.api.bounds import MAX_NESTING_DEPTH, describe_number, int_in_range

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml: the pure-Python parser, same events
    _Loader = yaml.SafeLoader

TAG = "tag:yaml.org,2002:"
_MAP_TAGS = frozenset({None, "!", TAG + "map"})
_SEQ_TAGS = frozenset({None, "!", TAG + "seq"})
_KEPT_AS_TEXT = frozenset({TAG + "str", TAG + "timestamp", TAG + "binary", TAG + "value"})
# A YAML 1.1 integer literal of more characters than this cannot fit 64 bits (octal and
# binary literals are the longest, with separators); checked before Python converts it.
_MAX_INT_LITERAL = 90


class YamlError(ValueError):
    """A document that is not YAML, or not one this server accepts."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}: " if mark is not None else ""


class _Open:
    """A collection being built: its value, what the next item is, and its merge keys."""

    __slots__ = ("anchor", "key", "merges", "size", "value")

    def __init__(self, value: dict[str, Any] | list[Any], anchor: str | None) -> None:
        self.value = value
        self.anchor = anchor
        self.key: Any = _NO_KEY  # a mapping's pending key (text), or _MERGE
        self.merges: list[dict[str, Any]] = []
        self.size = 1  # nodes in this collection, itself included


_NO_KEY = object()
_MERGE = object()


def load_all(body: bytes | str, max_depth: int = MAX_NESTING_DEPTH, max_nodes: int = 200_000) -> list[Any]:
    """The documents of a YAML stream as JSON values (``None`` for an empty document)."""
    loader = _Loader(body)
    try:
        return _Builder(loader, max_depth, max_nodes).documents()
    except yaml.YAMLError as e:
        raise YamlError(_yaml_message(e)) from None
    finally:
        loader.dispose()


def _yaml_message(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"yaml: {_where(mark)}{problem}"


class _Builder:
    def __init__(self, loader: Any, max_depth: int, max_nodes: int) -> None:
        self.loader = loader
        self.max_depth = max_depth
        self.budget = max_nodes
        self.max_nodes = max_nodes
        # anchor → (value, node count, depth, key text); collections only once closed
        self.anchors: dict[str, tuple[Any, int, int, str | None]] = {}
        self.open_anchors: set[str] = set()

    def documents(self) -> list[Any]:
        loader = self.loader
        docs: list[Any] = []
        loader.get_event()  # StreamStart
        while not loader.check_event(yaml.StreamEndEvent):
            loader.get_event()  # DocumentStart
            self.anchors = {}
            docs.append(self._document())
            loader.get_event()  # DocumentEnd
        return docs

    def _spend(self, nodes: int, mark: Any) -> None:
        self.budget -= nodes
        if self.budget < 0:
            raise YamlError(f"yaml: {_where(mark)}the document is too large (more than {self.max_nodes} values, aliases expanded)")

    def _document(self) -> Any:
        loader = self.loader
        stack: list[_Open] = []
        result: Any = None
        while True:
            event = loader.get_event()
            if isinstance(event, yaml.ScalarEvent):
                self._spend(1, event.start_mark)
                if stack and stack[-1].key is _NO_KEY and isinstance(stack[-1].value, dict):
                    if event.tag is None and event.value == "<<" and event.implicit[0]:
                        stack[-1].key = _MERGE
                    else:
                        stack[-1].key = self._key_text(event)
                    if event.anchor is not None:
                        self.anchors[event.anchor] = (event.value, 1, 0, event.value)
                    continue
                value = self._scalar(event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, 1, 0, event.value)
                done, result = self._add(stack, value, 1, event)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor in self.open_anchors:
                    raise YamlError(f"yaml: {_where(event.start_mark)}alias *{event.anchor} refers to a value that contains it")
                anchored = self.anchors.get(event.anchor)
                if anchored is None:
                    raise YamlError(f"yaml: {_where(event.start_mark)}unknown anchor '{event.anchor}' referenced")
                value, size, depth, text = anchored
                self._spend(size, event.start_mark)
                if stack and stack[-1].key is _NO_KEY and isinstance(stack[-1].value, dict):
                    if text is None:
                        raise YamlError(f"yaml: {_where(event.start_mark)}a mapping key must be a scalar")
                    stack[-1].key = text
                    continue
                if len(stack) + depth > self.max_depth:
                    raise self._too_deep(event)
                done, result = self._add(stack, _copy(value), size, event)
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                is_map = isinstance(event, yaml.MappingStartEvent)
                if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
                    raise YamlError(f"yaml: {_where(event.start_mark)}unsupported tag {event.tag}")
                if stack and stack[-1].key is _NO_KEY and isinstance(stack[-1].value, dict):
                    raise YamlError(f"yaml: {_where(event.start_mark)}a mapping key must be a scalar")
                if len(stack) >= self.max_depth:
                    raise self._too_deep(event)
                self._spend(1, event.start_mark)
                stack.append(_Open({} if is_map else [], event.anchor))
                if event.anchor is not None:
                    self.open_anchors.add(event.anchor)
                continue
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                closed = stack.pop()
                value = closed.value
                if closed.merges:
                    value = _merged(closed.merges, value)
                if closed.anchor is not None:
                    self.open_anchors.discard(closed.anchor)
                    self.anchors[closed.anchor] = (value, closed.size, _depth(value), None)
                done, result = self._add(stack, value, closed.size, event)
            else:
                raise YamlError(f"yaml: unexpected {type(event).__name__}")
            if done:
                return result

    def _too_deep(self, event: Any) -> YamlError:
        return YamlError(f"yaml: {_where(event.start_mark)}the document is nested more than {self.max_depth} levels deep")

    @staticmethod
    def _add(stack: list[_Open], value: Any, size: int, event: Any) -> tuple[bool, Any]:
        """Put a finished value into the open collection; (True, value) when it was the root."""
        if not stack:
            return True, value
        parent = stack[-1]
        parent.size += size
        if isinstance(parent.value, list):
            parent.value.append(value)
        elif parent.key is _MERGE:
            if isinstance(value, dict):
                parent.merges.append(value)
            elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
                parent.merges.extend(value)
            else:
                raise YamlError(f"yaml: {_where(event.start_mark)}map merge requires map or sequence of maps as the value")
            parent.key = _NO_KEY
        else:
            parent.value[parent.key] = value
            parent.key = _NO_KEY
        return False, None

    def _key_text(self, event: Any) -> str:
        if event.tag is not None and event.tag not in ("!", TAG + "str"):
            self._scalar(event)  # refuses unsupported tags
        return event.value

    def _scalar(self, event: Any) -> Any:
        loader = self.loader
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag in _KEPT_AS_TEXT:
            return event.value
        if tag == TAG + "int":
            text = event.value
            if len(text) > _MAX_INT_LITERAL:
                raise YamlError(f"yaml: {_where(event.start_mark)}the number {text[:20]}... is out of the 64-bit integer range")
            number = loader.construct_yaml_int(_node(tag, event))
            if not int_in_range(number):
                raise YamlError(f"yaml: {_where(event.start_mark)}the number {describe_number(number)} is out of the 64-bit integer range")
            return number
        if tag == TAG + "float":
            number = loader.construct_yaml_float(_node(tag, event))
            if not math.isfinite(number):
                raise YamlError(f"yaml: {_where(event.start_mark)}the number {event.value} is not finite")
            return number
        if tag == TAG + "bool":
            return loader.construct_yaml_bool(_node(tag, event))
        if tag == TAG + "null":
            return None
        raise YamlError(f"yaml: {_where(event.start_mark)}unsupported tag {tag}")


def _node(tag: str, event: Any) -> yaml.ScalarNode:
    return yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)


def _merged(merges: list[dict[str, Any]], explicit: dict[str, Any]) -> dict[str, Any]:
    """PyYAML's merge order: keys of the mapping itself win, then the earlier merged maps."""
    out: dict[str, Any] = {}
    for source in merges:
        for k, v in source.items():
            if k not in out:
                out[k] = _copy(v)
    out.update(explicit)
    return out


def _copy(value: Any) -> Any:
    """An independent copy of a built value (aliases expand; nothing is shared)."""
    if not isinstance(value, dict | list):
        return value
    root: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for k, v in items:
            if isinstance(v, dict | list):
                child: Any = {} if isinstance(v, dict) else []
                stack.append((v, child))
                v = child
            if isinstance(dst, dict):
                dst[k] = v
            else:
                dst.append(v)
    return root


def _depth(value: Any) -> int:
    """How many containers deep a built value nests (0 for a scalar)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest
