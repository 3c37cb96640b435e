"""Local-path storage: a default StorageClass and a provisioner that binds claims at once.

k3s ships rancher's local-path provisioner so PersistentVolumeClaims work out of the box;
this is the same idea in-process. At start the ``local-path`` StorageClass (provisioner
``rancher.io/local-path``, reclaim Delete, marked the cluster default) is created if missing.
Every pending claim of that class — or of no class, the default — gets a PersistentVolume
``pvc-<claim uid>``: a ``hostPath`` (DirectoryOrCreate) under ``/var/lib/k3py/storage``
sized as requested, pre-bound to the claim through ``claimRef``; the claim is then bound
(``spec.volumeName``, bind annotations, status Bound with capacity and access modes) —
what ``kubectl get pvc`` shows and ``helm --wait`` waits for. A PersistentVolume this
provisioner made is deleted when its claim is gone (reclaim policy Delete); removing the
directory is the node's business. Binding is immediate (k3s waits for the first consumer,
which needs scheduler support this one does not have yet); a kubelet mounts such a claim by
following ``spec.volumeName`` to the PV's hostPath.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable

from k3py.api.errors import ApiError
from k3py.client.controller import Controller
from k3py.client.informer import InformerFactory, split_key
from k3py.client.interface import PVCS, Client, Resource
from k3py.server.controllers.common import Obj, meta, name_of, namespace_of, uid_of

log = logging.getLogger("k3py.controllers.localpath")

PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
STORAGECLASSES = Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False)

CLASS_NAME = "local-path"
PROVISIONER = "rancher.io/local-path"
STORAGE_ROOT = "/var/lib/k3py/storage"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def storage_class() -> Obj:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": CLASS_NAME, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def volume_for(claim: Obj) -> Obj:
    spec = claim.get("spec") or {}
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pvc-{uid_of(claim)}",
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": CLASS_NAME,
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": f"{STORAGE_ROOT}/pvc-{uid_of(claim)}_{namespace_of(claim)}_{name_of(claim)}",
                         "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace_of(claim),
                         "name": name_of(claim), "uid": uid_of(claim)},
        },
    }


class LocalPathProvisioner(Controller):
    """See the module docstring. Keys are claim keys; PV events map back to their claim."""

    name = "local-path"
    component = "rancher.io/local-path_k3py"
    workers = 2

    def __init__(self, client: Client, informers: InformerFactory) -> None:
        super().__init__(client, informers)
        self.claims = informers.informer(PVCS)
        self.volumes = informers.informer(PVS)
        self.claims.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.volumes.add_handler(self._volume, lambda _o, n: self._volume(n))
        self._class_ready = False
        self._spec_refused = False

    def _volume(self, pv: Obj) -> None:
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        if ref.get("name"):
            self.queue.add(f"{ref.get('namespace', '')}/{ref['name']}")

    async def _ensure_class(self) -> None:
        if self._class_ready:
            return
        try:
            await self.client.create(STORAGECLASSES, storage_class())
        except ApiError as e:
            if e.code != 409:
                raise
        self._class_ready = True

    async def run(self) -> None:
        try:
            await self._ensure_class()
        except ApiError as e:
            log.warning("cannot create the %s StorageClass yet: %s", CLASS_NAME, e.message)
        await super().run()

    def _ours(self, claim: Obj) -> bool:
        cls = (claim.get("spec") or {}).get("storageClassName")
        return cls in (None, CLASS_NAME)

    async def reconcile(self, key: Hashable) -> float | None:
        await self._ensure_class()
        namespace, name = split_key(str(key))
        claim = self.claims.cache.get(str(key))
        if claim is None:
            await self._release(namespace, name)
            return None
        if meta(claim).get("deletionTimestamp") or not self._ours(claim):
            return None
        pv_name = f"pvc-{uid_of(claim)}"
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if volume_name and volume_name != pv_name:
            return None  # bound to a volume someone else made
        pv = self.volumes.cache.get(pv_name)
        if pv is None:
            try:
                pv = await self.client.create(PVS, volume_for(claim))
            except ApiError as e:
                if e.code != 409:
                    raise
                pv = await self.client.get(PVS, pv_name)
        if (pv.get("status") or {}).get("phase") != "Bound":
            pv = copy.deepcopy(pv)
            pv["status"] = {"phase": "Bound"}
            await self.client.update_status(PVS, pv)
        if not volume_name:
            bound = copy.deepcopy(claim)
            bound["spec"]["volumeName"] = pv_name
            if not bound["spec"].get("storageClassName"):
                bound["spec"]["storageClassName"] = CLASS_NAME
            annotations = bound["metadata"].setdefault("annotations", {})
            annotations.update({"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
                                "volume.beta.kubernetes.io/storage-provisioner": PROVISIONER,
                                "volume.kubernetes.io/storage-provisioner": PROVISIONER})
            try:
                claim = await self.client.update(PVCS, bound)
            except ApiError as e:
                # Upstream lets the binder set volumeName (and a default class) once; a server
                # that refuses still gets a Bound status — the PV's claimRef names the claim.
                if e.code != 422:
                    raise
                if not self._spec_refused:
                    log.warning("the server refuses to set spec.volumeName on claims: %s", e.message)
                    self._spec_refused = True
        if (claim.get("status") or {}).get("phase") != "Bound":
            claim = copy.deepcopy(claim)
            claim["status"] = {"phase": "Bound", "accessModes": list((pv.get("spec") or {}).get("accessModes") or []),
                               "capacity": dict((pv.get("spec") or {}).get("capacity") or {})}
            await self.client.update_status(PVCS, claim)
        return None

    async def _release(self, namespace: str, name: str) -> None:
        for pv in self.volumes.cache.list():
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            provisioned = (meta(pv).get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
            if provisioned and ref.get("namespace") == namespace and ref.get("name") == name:
                try:
                    await self.client.delete(PVS, name_of(pv), preconditions={"uid": uid_of(pv)})
                except ApiError as e:
                    if e.code not in (404, 409):
                        raise
