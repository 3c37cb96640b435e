"""ControllerRevisions: the template history of DaemonSets and StatefulSets.

``kubectl rollout history|undo daemonset/statefulset`` read the ``apps/v1 ControllerRevision``
objects a workload controls: each holds one pod template (``data.spec.template`` with
``$patch: replace``, the shape upstream stores) and a ``revision`` number. The current
template's revision is found by hash (label ``controller.kubernetes.io/hash``); a template that
comes back (undo) gets its old revision object renumbered to the newest, like Deployments.
Pods carry the hash as their ``controller-revision-hash`` label, which is how the
controllers tell updated pods from old ones. Old revisions beyond ``revisionHistoryLimit``
(default 10) that no pod uses are deleted.
"""

from __future__ import annotations

import copy
import json

from k3py.api.errors import ApiError
from k3py.client.interface import CONTROLLERREVISIONS, Client
from k3py.server.controllers.common import Obj, meta, name_of, namespace_of, owner_reference, uid_of
from k3py.server.controllers.deployment import template_hash

HASH_LABEL = "controller.kubernetes.io/hash"
POD_REVISION_LABEL = "controller-revision-hash"


def revision_data(template: Obj) -> Obj:
    t = copy.deepcopy(template)
    t["$patch"] = "replace"
    return {"spec": {"template": t}}


def template_of(revision: Obj) -> Obj:
    t = copy.deepcopy((((revision.get("data") or {}).get("spec") or {}).get("template")) or {})
    t.pop("$patch", None)
    return t


def hash_of(template: Obj) -> str:
    # Strip the pod-revision label a template could carry back from an undo.
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(POD_REVISION_LABEL, None)
    return template_hash(json.loads(json.dumps(t)))


async def ensure_current_revision(client: Client, owner: Obj, kind: str, revisions: list[Obj]) -> tuple[Obj, list[Obj]]:
    """The revision for the owner's current template (created or renumbered), and all revisions."""
    template = (owner.get("spec") or {}).get("template") or {}
    wanted_hash = hash_of(template)
    latest = max((int(r.get("revision") or 0) for r in revisions), default=0)
    for rev in revisions:
        if (meta(rev).get("labels") or {}).get(HASH_LABEL) == wanted_hash:
            if int(rev.get("revision") or 0) != latest:
                updated = await client.update(CONTROLLERREVISIONS, {**rev, "revision": latest + 1})
                revisions = [updated if r is rev else r for r in revisions]
                return updated, revisions
            return rev, revisions
    labels = dict(((template.get("metadata") or {}).get("labels")) or {})
    labels[HASH_LABEL] = wanted_hash
    body = {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"{name_of(owner)}-{wanted_hash}",
            "namespace": namespace_of(owner),
            "labels": labels,
            "ownerReferences": [owner_reference(owner, "apps/v1", kind)],
        },
        "data": revision_data(template),
        "revision": latest + 1,
    }
    try:
        created = await client.create(CONTROLLERREVISIONS, body, namespace_of(owner))
    except ApiError as e:
        if e.code != 409:
            raise
        created = await client.get(CONTROLLERREVISIONS, body["metadata"]["name"], namespace_of(owner))
    return created, [*revisions, created]


async def prune_revisions(client: Client, owner: Obj, revisions: list[Obj], in_use: set[str]) -> None:
    limit = (owner.get("spec") or {}).get("revisionHistoryLimit")
    limit = 10 if limit is None else int(limit)
    ordered = sorted(revisions, key=lambda r: int(r.get("revision") or 0))
    live = ordered[-1:] if ordered else []
    old = [r for r in ordered if r not in live and (meta(r).get("labels") or {}).get(HASH_LABEL) not in in_use]
    for rev in old[: max(0, len(old) - limit)]:
        try:
            await client.delete(CONTROLLERREVISIONS, name_of(rev), namespace_of(rev), preconditions={"uid": uid_of(rev)})
        except ApiError as e:
            if e.code not in (404, 409):
                raise


def owned_revisions(cache_items: list[Obj], owner_uid: str) -> list[Obj]:
    return [r for r in cache_items if any(ref.get("uid") == owner_uid and ref.get("controller")
                                          for ref in meta(r).get("ownerReferences") or ())]
