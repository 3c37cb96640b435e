"""What starting a pod reads from the API besides the Pod itself.

The ConfigMaps and Secrets its containers' environment and its volumes name, its
imagePullSecrets, its PersistentVolumeClaims and the PersistentVolumes they are bound to. They
are read when a start needs them (upstream's default ``Get`` strategy: no cache to keep in
step, and a changed ConfigMap is seen at the next start); one that does not exist comes back as
None, so that the pure rules (``podspec``, ``volumes``) decide whether that is an error and word
it as the kubelet does.
"""

from __future__ import annotations

from typing import Any

from k3py.agent.kubelet.volumes import (
    PVCS,
    PVS,
    VolumeError,
    bound_volume_name,
    claim_source,
    claimed_volumes,
    unmounted_volumes_error,
)
from k3py.api.errors import ApiError
from k3py.client.interface import Client, Resource

Obj = dict[str, Any]

SECRETS = Resource("", "v1", "secrets", "Secret")  # not among the client's constants yet


async def fetch_optional(client: Client, resource: Resource, namespace: str, names: set[str]) -> dict[str, Obj | None]:
    """The named objects; None for each that does not exist (other API errors propagate)."""
    found: dict[str, Obj | None] = {}
    for name in names:
        try:
            found[name] = await client.get(resource, name, namespace)
        except ApiError as e:
            if e.code != 404:
                raise
            found[name] = None
    return found


async def fetch_claim_sources(client: Client, pod: Obj) -> dict[str, Obj]:
    """For each persistentVolumeClaim volume of the pod, the source of the volume its claim is
    bound to (``volumes.claim_source``). Raises the kubelet's "unmounted volumes" error naming
    each volume whose claim is missing or not bound yet."""
    namespace = pod["metadata"]["namespace"]
    claims = claimed_volumes(pod)
    found_claims = await fetch_optional(client, PVCS, namespace, set(claims.values()))
    sources: dict[str, Obj] = {}
    failures: dict[str, str] = {}
    for volume_name, claim_name in claims.items():
        try:
            bound_to = bound_volume_name(namespace, claim_name, found_claims.get(claim_name))
            found_volume = (await fetch_optional(client, PVS, "", {bound_to}))[bound_to]
            claim = found_claims[claim_name] or {}
            sources[volume_name] = claim_source(namespace, claim, bound_to, found_volume)
        except VolumeError as e:
            failures[volume_name] = str(e)
    if failures:
        raise unmounted_volumes_error(failures)
    return sources
