"""Every namespace keeps a ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap
(in-memory API): created with the namespace, put back when deleted or edited."""

from __future__ import annotations

from k3py.client.interface import CONFIGMAPS, NAMESPACES, SERVICEACCOUNTS
from k3py.server.controllers.serviceaccount import ServiceAccountController

CA = "-----BEGIN CERTIFICATE-----\nk3py test\n-----END CERTIFICATE-----\n"


async def start(plane) -> None:
    await plane.start(lambda c, i: ServiceAccountController(c, i, root_ca=CA.encode()))


async def test_new_namespace_gets_default_account_and_root_ca(plane) -> None:
    await start(plane)
    await plane.client.create(NAMESPACES, {"metadata": {"name": "team"}})
    await plane.until(lambda: plane.transport.peek(SERVICEACCOUNTS, "team", "default"), what="default SA")
    cm = await plane.until(lambda: plane.transport.peek(CONFIGMAPS, "team", "kube-root-ca.crt"), what="root CA")
    assert cm["data"] == {"ca.crt": CA}
    assert "kube-apiserver" in cm["metadata"]["annotations"]["kubernetes.io/description"]


async def test_deleted_account_and_edited_ca_are_restored(plane) -> None:
    await plane.client.create(NAMESPACES, {"metadata": {"name": "team"}})
    await start(plane)
    first = await plane.until(lambda: plane.transport.peek(SERVICEACCOUNTS, "team", "default"))
    await plane.until(lambda: plane.transport.peek(CONFIGMAPS, "team", "kube-root-ca.crt"))
    await plane.client.delete(SERVICEACCOUNTS, "default", "team")
    again = await plane.until(lambda: plane.transport.peek(SERVICEACCOUNTS, "team", "default"), what="SA recreated")
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    await plane.client.patch(CONFIGMAPS, "kube-root-ca.crt", {"data": {"ca.crt": "tampered"}}, "team")
    await plane.until(lambda: plane.transport.peek(CONFIGMAPS, "team", "kube-root-ca.crt")["data"] == {"ca.crt": CA},
                      what="CA restored")
    await plane.client.delete(CONFIGMAPS, "kube-root-ca.crt", "team")
    await plane.until(lambda: plane.transport.peek(CONFIGMAPS, "team", "kube-root-ca.crt"), what="CA recreated")


async def test_terminating_namespace_is_left_alone(plane) -> None:
    await plane.client.create(NAMESPACES, {"metadata": {"name": "going"}})
    (controller,) = await plane.start(lambda c, i: ServiceAccountController(c, i, root_ca=CA.encode()))
    await plane.until(lambda: plane.transport.peek(SERVICEACCOUNTS, "going", "default"))
    await plane.client.delete(NAMESPACES, "going")  # Terminating: the namespace finalizer holds it
    await plane.until(lambda: controller.namespaces.cache.get("going")["metadata"].get("deletionTimestamp"))
    await plane.client.delete(SERVICEACCOUNTS, "default", "going")
    await plane.reconcile(controller, "going")
    assert plane.transport.peek(SERVICEACCOUNTS, "going", "default") is None
