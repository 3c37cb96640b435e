"""The Priority admission step: pods get their priority from a PriorityClass.

Upstream's ``Priority`` admission plugin, run by the registry on every create:

* a pod naming a ``priorityClassName`` gets that class's ``value`` as ``spec.priority`` and its
  ``preemptionPolicy`` as ``spec.preemptionPolicy``; an unknown name is refused with 403
  (``no PriorityClass with name y was found``);
* a pod naming none gets the ``globalDefault`` class (name, value, policy) — the lowest value
  should races have left several — or priority 0 with ``PreemptLowerPriority``;
* a pod that states a priority or preemptionPolicy different from the computed one is refused;
* a PriorityClass created or updated as ``globalDefault`` is refused while another default
  exists.

The classes are read from the API server's watch cache (the store watch keeps it current), so
admitting a pod costs a dict lookup — no store read per pod, which matters for bulk creates.
The default class is memoised per set of classes (the cache replaces an object's dict on every
change, so comparing the dicts by identity tells when to look again).
"""

from __future__ import annotations

from typing import Any

from k3py.api import errors
from k3py.api.resources import ResourceInfo
from k3py.server.apiserver.watchcache import ResourceCache, WatchCache

SYSTEM_CLUSTER_CRITICAL = 2_000_000_000
SYSTEM_NODE_CRITICAL = SYSTEM_CLUSTER_CRITICAL + 1000
# (name, value, description) of the classes every cluster has (upstream's SystemPriorityClasses).
SYSTEM_CLASSES = (
    ("system-node-critical", SYSTEM_NODE_CRITICAL, "Used for system critical pods that must not be moved from their current node."),
    ("system-cluster-critical", SYSTEM_CLUSTER_CRITICAL, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
)  # fmt: skip
NO_DEFAULT_PRIORITY = 0
DEFAULT_PREEMPTION_POLICY = "PreemptLowerPriority"

Obj = dict[str, Any]


class PriorityAdmission:
    """Admit pods and PriorityClasses against the classes in a watch cache."""

    def __init__(self, cache: WatchCache, class_prefix: str) -> None:
        self._watch_cache = cache
        self._prefix = class_prefix  # the storage prefix of priorityclasses
        # (the class dicts the default was computed from, the default or None)
        self._default_memo: tuple[tuple[Obj, ...], Obj | None] = ((), None)

    def _class_cache(self) -> ResourceCache | None:
        # Looked up each time: the watch cache rebuilds its caches after a lost store watch.
        return self._watch_cache.caches.get(self._prefix)

    def lookup(self, name: str) -> Obj | None:
        classes = self._class_cache()
        return classes.objects.get(self._prefix + name) if classes is not None else None

    def default_class(self) -> Obj | None:
        """The globalDefault class; the lowest value when several are (upstream's tie-break)."""
        classes = self._class_cache()
        if classes is None:
            return None
        current = tuple(classes.objects.values())
        seen, default = self._default_memo
        if len(seen) == len(current) and all(a is b for a, b in zip(seen, current, strict=True)):
            return default
        default = None
        for pc in current:
            if pc.get("globalDefault") is True and (default is None or _value(pc) < _value(default)):
                default = pc
        self._default_memo = (current, default)
        return default

    def admit(self, info: ResourceInfo, obj: Obj) -> None:
        """Mutate/refuse ``obj`` about to be created (pods and PriorityClasses; others pass)."""
        if info.group == "" and info.plural == "pods":
            self._admit_pod(obj)
        elif info.group == "scheduling.k8s.io" and info.plural == "priorityclasses":
            self._admit_class(obj)

    def admit_update(self, info: ResourceInfo, new: Obj, old: Obj) -> None:
        """Refuse an update that makes a PriorityClass a second globalDefault."""
        if (info.group == "scheduling.k8s.io" and info.plural == "priorityclasses"
                and new.get("globalDefault") is True and old.get("globalDefault") is not True):
            self._admit_class(new)

    def _admit_pod(self, pod: Obj) -> None:
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            return  # validation reports the missing spec
        meta = pod.get("metadata") or {}
        name = meta.get("name") or meta.get("generateName") or ""
        class_name = spec.get("priorityClassName")
        if not class_name:
            pc = self.default_class()
            if pc is not None:
                spec["priorityClassName"] = pc["metadata"]["name"]
                priority, policy = _value(pc), pc.get("preemptionPolicy")
            else:
                priority, policy = NO_DEFAULT_PRIORITY, DEFAULT_PREEMPTION_POLICY
        else:
            pc = self.lookup(str(class_name)) if isinstance(class_name, str) else None
            if pc is None:
                raise errors.forbidden("pods", name, "", f"no PriorityClass with name {class_name} was found")
            priority, policy = _value(pc), pc.get("preemptionPolicy")
        stated = spec.get("priority")
        if stated is not None and stated != priority:
            raise errors.forbidden(
                "pods", name, "",
                f"the integer value of priority ({stated}) must not be provided in pod spec; "
                f"priority admission controller computed {priority} from the given PriorityClass name",
            )  # fmt: skip
        spec["priority"] = priority
        stated_policy = spec.get("preemptionPolicy")
        if stated_policy is not None and policy is not None and stated_policy != policy:
            raise errors.forbidden(
                "pods", name, "",
                f"the string value of PreemptionPolicy ({stated_policy}) must not be provided in pod spec; "
                f"priority admission controller computed {policy} from the given PriorityClass name",
            )  # fmt: skip
        if stated_policy is None and policy is not None:
            spec["preemptionPolicy"] = policy

    def _admit_class(self, pc: Obj) -> None:
        if pc.get("globalDefault") is not True:
            return
        existing = self.default_class()
        if existing is not None:
            name = (pc.get("metadata") or {}).get("name") or ""
            raise errors.forbidden(
                "priorityclasses", name, "scheduling.k8s.io",
                f"PriorityClass {name} is marked as default and another default already exists: {existing['metadata']['name']}",
            )  # fmt: skip


def _value(pc: Obj) -> int:
    value = pc.get("value")
    return value if isinstance(value, int) else 0


def system_priority_classes() -> list[Obj]:
    """The PriorityClass objects created at start when missing."""
    return [
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
         "value": value, "description": description, "preemptionPolicy": DEFAULT_PREEMPTION_POLICY}
        for name, value, description in SYSTEM_CLASSES
    ]  # fmt: skip
