"""Pod volumes on the node: one directory per volume under ``<pods>/<uid>/volumes/<name>``.

- ``emptyDir``: a plain directory; ``medium: Memory`` is a tmpfs mounted there (sized by
  ``sizeLimit``, else by the pod's memory limit, else by the node's allocatable memory) and
  unmounted once the pod has finished (``unmount``) or is removed. A disk ``emptyDir`` with a ``sizeLimit`` is measured on
  every sync of its pod (``size_limit_exceeded``, a ``du`` of those volumes only); over the
  limit the kubelet evicts the pod as upstream's eviction manager does.
- ``hostPath``: the host path itself, created for ``DirectoryOrCreate``/``FileOrCreate``, checked
  for ``Directory``/``File``/``Socket``...; empty type means "no checks" (a missing path is
  created as a directory, as containerd does for a bind source).
- ``persistentVolumeClaim``: the claim must be Bound; its PersistentVolume's ``hostPath`` (the
  local-path provisioner's, created if missing) or ``local`` path is the volume. The API reads
  happen in ``podinputs``; ``bound_volume_name`` and ``claim_source`` judge what it read,
  with upstream's wording for a claim that is missing or not bound yet.
- ``configMap``, ``secret``, ``downwardAPI``, ``projected``: files rendered from API objects
  (``items`` pick and rename keys, ``mode``/``defaultMode`` set permissions) and published the
  way the kubelet's atomic writer does: the payload goes to a fresh ``..<timestamp>`` directory,
  ``..data`` is a symlink switched to it by rename, and each top-level name is a symlink through
  ``..data`` — so a container reading the volume never sees half an update.

Containers get each volume as a bind mount (planned by ``plan_mounts``, pure; made real by
``PodVolumes.realize_mounts``): read-only for ``readOnly`` mounts, read-only claims and every
rendered volume (as upstream mounts them);
``subPath``/``subPathExpr`` (``$(VAR)`` from the container's environment) pick a file or
directory inside the volume — relative, without ``..``, and resolved so that a symlink cannot
lead out of the volume.

With a pod ``fsGroup`` each volume is given to that group once, when it is created or its
files change (setgid directories, group-readable files), as the kubelet does at mount time.

Each volume is set up on its own: one that fails (``VolumeError`` naming it) leaves the others
set up, and ``failed_mount_message`` words the FailedMount event as upstream's volume manager
does.

Every container also gets the pod's ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf``
(``render_resolv_conf``: every ``dnsPolicy`` and ``dnsConfig`` as upstream's kubelet; the node's
cluster DNS address, domain and resolv.conf come from ``configure_pod_dns``). Rendering is pure (``render_*``); only ``PodVolumes``
touches the disk (call it in a thread).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k3py.agent.kubelet.podspec import expand, pod_field, resource_field
from k3py.api.quantity import parse_quantity
from k3py.client.interface import PVCS as PVCS  # re-exported: podinputs reads claims
from k3py.client.interface import Resource
from k3py.runtime import linux
from k3py.runtime.spec import Mount

Obj = dict[str, Any]

DEFAULT_MODE = 0o644
CLUSTER_DNS = "10.43.0.10"
CLUSTER_DOMAIN = "cluster.local"
EMPTY_DIR_CHECK_SECONDS = 10.0  # how often a pod with a disk emptyDir sizeLimit is measured

_VARIABLE = re.compile(r"\$\$|\$\(([^)]*)\)")  # $(NAME) as podspec.expand reads it; $$ escapes

LOCAL_PATH_PROVISIONER = "rancher.io/local-path"  # k3s's default StorageClass provisioner

PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)


class VolumeError(ValueError):
    """A volume cannot be set up (missing ConfigMap/Secret/key, bad hostPath): FailedMount.
    ``volume`` names the pod volume that failed, when the failure belongs to one."""

    def __init__(self, message: str, volume: str = "") -> None:
        super().__init__(message)
        self.volume = volume


class VolumeSetUpErrors(VolumeError):
    """Some of a pod's volumes could not be set up (the others were): one error per volume,
    each reported as its own FailedMount event, as the volume manager mounts them one by one."""

    def __init__(self, failures: Mapping[str, VolumeError]) -> None:
        super().__init__("; ".join(str(failures[name]) for name in sorted(failures)))
        self.failures = dict(failures)


class UnmountedVolumesError(VolumeError):
    """The pod's volumes are not all mounted: what the kubelet's wait for its volumes says."""


MOUNT_WAIT_TIMEOUT_SECONDS = 123.0  # the kubelet's wait for a pod's volumes: 2 min 3 s


def failed_mount_message(error: VolumeError) -> str:
    """The FailedMount event for ``error`` in upstream's words: the volume plugin's
    ``MountVolume.SetUp failed for volume "<name>" : <error>`` for one volume, the wait's
    ``Unable to attach or mount volumes: ...`` for the pod as a whole."""
    if isinstance(error, UnmountedVolumesError):
        return f"Unable to attach or mount volumes: {error}"
    if error.volume:
        return f'MountVolume.SetUp failed for volume "{error.volume}" : {error}'
    return f"MountVolume.SetUp failed: {error}"


@dataclass
class MountWait:
    """The kubelet's wait for a pod's volumes, across the syncs that retry them: ``failed``
    returns the wait's timeout error once volumes have kept failing for ``timeout`` seconds
    (then a new wait begins); ``mounted`` ends the wait."""

    timeout: float = MOUNT_WAIT_TIMEOUT_SECONDS
    since: float | None = None
    unmounted: set[str] = field(default_factory=set)

    def failed(self, volumes: Iterable[str], now: float) -> UnmountedVolumesError | None:
        if self.since is None:
            self.since = now
        self.unmounted.update(volumes)
        if not self.unmounted or now - self.since < self.timeout:
            return None
        error = mount_timeout_error(self.unmounted)
        self.since, self.unmounted = now, set()
        return error

    def mounted(self) -> None:
        self.since, self.unmounted = None, set()


def mount_timeout_error(unmounted: Iterable[str]) -> UnmountedVolumesError:
    """The error of the kubelet's wait that ran out while ``unmounted`` volumes still failed."""
    names = " ".join(sorted(unmounted))
    return UnmountedVolumesError(
        f"unmounted volumes=[{names}], unattached volumes=[], failed to process volumes=[]: "
        "timed out waiting for the condition"
    )


def referenced_volume_config(pod: Obj) -> tuple[set[str], set[str]]:
    """ConfigMap and Secret names the pod's volumes read."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        sources = [volume]
        if volume.get("projected"):
            sources = volume["projected"].get("sources") or []
        for source in sources:
            if source.get("configMap"):
                config_maps.add(source["configMap"].get("name", ""))
            if source.get("secret"):
                secrets.add(source["secret"].get("secretName") or source["secret"].get("name", ""))
    return config_maps, secrets


def claimed_volumes(pod: Obj) -> dict[str, str]:
    """Volume name → claim name of the pod's ``persistentVolumeClaim`` volumes."""
    return {
        volume.get("name", ""): (volume["persistentVolumeClaim"].get("claimName") or "")
        for volume in (pod.get("spec") or {}).get("volumes") or []
        if volume.get("persistentVolumeClaim") is not None
    }


def bound_volume_name(namespace: str, claim_name: str, claim: Obj | None) -> str:
    """The PersistentVolume a claim is bound to; VolumeError (upstream's words) while it is not."""
    where = f"error processing PVC {namespace}/{claim_name}"
    if claim is None:
        raise VolumeError(f'{where}: failed to fetch PVC from API server: '
                          f'persistentvolumeclaims "{claim_name}" not found')
    if (claim.get("metadata") or {}).get("deletionTimestamp"):
        raise VolumeError(f"{where}: can not start pod using PVC that is being deleted")
    if (claim.get("status") or {}).get("phase") != "Bound":
        raise VolumeError(f"{where}: PVC is not bound")
    volume_name = (claim.get("spec") or {}).get("volumeName") or ""
    if not volume_name:
        raise VolumeError(f"{where}: PVC has empty pvc.Spec.VolumeName")
    return volume_name


def claim_source(namespace: str, claim: Obj, volume_name: str, volume: Obj | None) -> Obj:
    """The node-local source (``{"hostPath": ...}`` or ``{"local": ...}``) of the PV bound to
    ``claim``; VolumeError when the PV is missing, bound to another claim or of another type."""
    claim_name = (claim.get("metadata") or {}).get("name", "")
    where = f"error processing PVC {namespace}/{claim_name}"
    if volume is None:
        raise VolumeError(f'{where}: failed to fetch PV "{volume_name}" from API server: '
                          f'persistentvolumes "{volume_name}" not found')
    spec = volume.get("spec") or {}
    ref = spec.get("claimRef") or {}
    claim_uid = (claim.get("metadata") or {}).get("uid", "")
    if ref and (ref.get("name") != claim_name or ref.get("namespace", namespace) != namespace
                or (ref.get("uid") and claim_uid and ref["uid"] != claim_uid)):
        raise VolumeError(f'{where}: the PV\'s claimRef ({ref.get("namespace", "")}/{ref.get("name", "")}) '
                          f"does not match the claim")
    if spec.get("hostPath"):
        annotations = (volume.get("metadata") or {}).get("annotations") or {}
        # The local-path provisioner's directories are made world-writable (its helper runs
        # `mkdir -m 0777`), so that pods of any user can use a fresh claim.
        provisioned = annotations.get("pv.kubernetes.io/provisioned-by") == LOCAL_PATH_PROVISIONER
        return {"hostPath": dict(spec["hostPath"]), **({"createMode": 0o777} if provisioned else {})}
    if spec.get("local"):
        return {"local": dict(spec["local"])}
    kinds = sorted(k for k in spec if isinstance(spec[k], dict) and k not in ("claimRef", "capacity", "nodeAffinity"))
    raise VolumeError(f'PersistentVolume "{volume_name}": volume type {", ".join(kinds) or "(none)"} '
                      "cannot be mounted on this node (only hostPath and local volumes)")


def unmounted_volumes_error(failures: Mapping[str, str]) -> UnmountedVolumesError:
    """The kubelet's summary of volumes it could not even process (claims not bound): its
    wait for the pod's volumes gives up at once with these errors."""
    names = " ".join(sorted(failures))
    return UnmountedVolumesError(
        f"unmounted volumes=[{names}], unattached volumes=[], failed to process volumes=[{names}]: "
        + "; ".join(failures[name] for name in sorted(failures))
    )


def memory_volume_size(pod: Obj, volume: Obj, allocatable: Mapping[str, str]) -> int:
    """Bytes for a ``medium: Memory`` emptyDir's tmpfs: its sizeLimit, capped by the pod's memory
    limit when every container has one; with neither, the node's allocatable memory (upstream's
    sizing of memory-backed volumes). 0 leaves the kernel's default (half of RAM)."""
    sizes: list[int] = []
    limit = (volume.get("emptyDir") or {}).get("sizeLimit")
    if limit is not None:
        sizes.append(_bytes(limit))
    containers = (pod.get("spec") or {}).get("containers") or []
    limits = [((c.get("resources") or {}).get("limits") or {}).get("memory") for c in containers]
    if containers and all(v is not None for v in limits):
        sizes.append(sum(_bytes(v) for v in limits if v is not None))
    if sizes:
        return min(sizes)
    memory = allocatable.get("memory")
    return _bytes(memory) if memory else 0


def _bytes(quantity: str | int) -> int:
    try:
        return int(parse_quantity(quantity))
    except ValueError:
        raise VolumeError(f"invalid size {quantity!r}") from None


def subpath_env(pod: Obj, container: Obj, allocatable: Mapping[str, str] | None = None) -> dict[str, str]:
    """The container variables ``subPathExpr`` can use when the full environment is not at hand:
    literal values (with ``$(VAR)`` expansion) and downward-API references, in order."""
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        name = var.get("name", "")
        source = var.get("valueFrom") or {}
        if "value" in var or not source:
            env[name] = expand(var.get("value") or "", env)
        elif source.get("fieldRef"):
            env[name] = pod_field(pod, source["fieldRef"].get("fieldPath", ""))
        elif source.get("resourceFieldRef"):
            env[name] = resource_field(pod, container, source["resourceFieldRef"], allocatable or {})
    return env


def sub_path_of(mount: Obj, env: Mapping[str, str]) -> str:
    """The checked sub-path of a volumeMount ("" for the whole volume), with upstream's errors."""
    sub_path = mount.get("subPath") or ""
    expr = mount.get("subPathExpr") or ""
    if sub_path and expr:
        raise VolumeError(f"volumeMount {mount.get('name', '')!r}: subPath and subPathExpr are mutually exclusive")
    if expr:
        references = (m.group(1) for m in _VARIABLE.finditer(expr) if m.group(1))
        missing = sorted({name for name in references if not env.get(name)})
        if missing:
            raise VolumeError(f"missing value for {', '.join(missing)}")
        sub_path = expand(expr, env)
    if not sub_path:
        return ""
    if sub_path.startswith("/"):
        raise VolumeError(f"error SubPath `{sub_path}` must not be an absolute path")
    if ".." in sub_path.split("/"):
        raise VolumeError(f"unable to provision SubPath `{sub_path}`: must not contain '..'")
    return sub_path


def plan_mounts(
    pod: Obj, container: Obj, volume_paths: Mapping[str, str], env: Mapping[str, str] | None, *,
    pod_dir: Path, attempt: int = 0,
) -> list[Mount]:
    """The runtime mounts of one container (pure; ``PodVolumes.realize_mounts`` then makes them
    real): its volumeMounts, the pod's /etc files and the termination message file of this
    attempt. A subPath mount is planned as ``<volume path>/<sub path>`` with ``exact_source``.
    ``env`` (the container's environment) feeds ``subPathExpr``; without it the container's
    literal and downward-API variables do."""
    volumes = PodVolumes(pod_dir)
    mounts: list[Mount] = []
    read_only_volumes = {
        v.get("name") for v in (pod.get("spec") or {}).get("volumes") or []
        if v.get("configMap") or v.get("secret") or v.get("downwardAPI") or v.get("projected")
        or (v.get("persistentVolumeClaim") or {}).get("readOnly")
    }
    destinations = set()
    for mount in container.get("volumeMounts") or []:
        name = mount.get("name", "")
        if name not in volume_paths:
            raise VolumeError(f"volumeMount {name!r} names no volume of the pod")
        source = volume_paths[name]
        if mount.get("subPathExpr") and env is None:
            env = subpath_env(pod, container)
        sub_path = sub_path_of(mount, env or {})
        if sub_path:
            source = os.path.join(source, sub_path)
        destination = mount.get("mountPath", "")
        destinations.add(destination)
        mounts.append(Mount(destination=destination, source=source, exact_source=bool(sub_path),
                            readonly=bool(mount.get("readOnly")) or name in read_only_volumes))
    for name in ("hosts", "hostname", "resolv.conf"):
        destination = f"/etc/{name}"
        if destination not in destinations:
            mounts.append(Mount(destination=destination, source=str(volumes.etc_dir / name)))
    message_path = container.get("terminationMessagePath") or "/dev/termination-log"
    if message_path.startswith("/") and message_path not in destinations:
        log_file = volumes.termination_log(container.get("name", ""), attempt)
        mounts.append(Mount(destination=message_path, source=str(log_file)))
    return mounts


def _decode_secret(secret: Obj) -> dict[str, bytes]:
    values = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    values.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return values


def _decode_config_map(config_map: Obj) -> dict[str, bytes]:
    values = {k: v.encode() for k, v in (config_map.get("data") or {}).items()}
    values.update({k: base64.b64decode(v) for k, v in (config_map.get("binaryData") or {}).items()})
    return values


def _keyed_files(
    kind: str, name: str, values: dict[str, bytes] | None, source: Obj, default_mode: int
) -> dict[str, tuple[bytes, int]]:
    if values is None:
        if source.get("optional"):
            return {}
        raise VolumeError(f'{kind} "{name}" not found')
    items = source.get("items")
    if not items:
        return {key: (value, default_mode) for key, value in values.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        key = item.get("key", "")
        if key not in values:
            if source.get("optional"):
                continue
            raise VolumeError(f'configmap references non-existent config key: {key}' if kind == "configmap"
                              else f"references non-existent secret key: {key}")
        files[item.get("path") or key] = (values[key], item.get("mode", default_mode))
    return files


def _downward_files(pod: Obj, source: Obj, default_mode: int, allocatable: Mapping[str, str]) -> dict[str, tuple[bytes, int]]:
    files: dict[str, tuple[bytes, int]] = {}
    for item in source.get("items") or []:
        if item.get("fieldRef"):
            value = pod_field(pod, item["fieldRef"].get("fieldPath", ""))
        elif item.get("resourceFieldRef"):
            ref = item["resourceFieldRef"]
            spec = pod.get("spec") or {}
            container = next((c for c in spec.get("containers") or [] if c.get("name") == ref.get("containerName")), {})
            value = resource_field(pod, container, ref, allocatable)
        else:
            continue
        files[item.get("path", "")] = (value.encode(), item.get("mode", default_mode))
    return files


def render_volume_files(
    pod: Obj,
    volume: Obj,
    *,
    config_maps: Mapping[str, Obj | None],
    secrets: Mapping[str, Obj | None],
    allocatable: Mapping[str, str] | None = None,
) -> dict[str, tuple[bytes, int]] | None:
    """The files (relative path → (content, mode)) of a rendered volume; None for other types."""
    allocatable = allocatable or {}
    if volume.get("configMap"):
        source = volume["configMap"]
        name = source.get("name", "")
        found = config_maps.get(name)
        return _keyed_files("configmap", name, None if found is None else _decode_config_map(found),
                            source, source.get("defaultMode", DEFAULT_MODE))
    if volume.get("secret"):
        source = volume["secret"]
        name = source.get("secretName", "")
        found = secrets.get(name)
        return _keyed_files("secret", name, None if found is None else _decode_secret(found),
                            source, source.get("defaultMode", DEFAULT_MODE))
    if volume.get("downwardAPI"):
        source = volume["downwardAPI"]
        return _downward_files(pod, source, source.get("defaultMode", DEFAULT_MODE), allocatable)
    if volume.get("projected"):
        projected = volume["projected"]
        default_mode = projected.get("defaultMode", DEFAULT_MODE)
        files: dict[str, tuple[bytes, int]] = {}
        for source in projected.get("sources") or []:
            if source.get("configMap"):
                sub = source["configMap"]
                found = config_maps.get(sub.get("name", ""))
                files.update(_keyed_files("configmap", sub.get("name", ""),
                                          None if found is None else _decode_config_map(found), sub, default_mode))
            elif source.get("secret"):
                sub = source["secret"]
                found = secrets.get(sub.get("name", ""))
                files.update(_keyed_files("secret", sub.get("name", ""),
                                          None if found is None else _decode_secret(found), sub, default_mode))
            elif source.get("downwardAPI"):
                files.update(_downward_files(pod, source["downwardAPI"], default_mode, allocatable))
            # serviceAccountToken sources need the TokenRequest API: not rendered yet.
        return files
    return None


def _check_relative(path: str) -> None:
    parts = Path(path).parts
    if not path or path.startswith("/") or ".." in parts:
        raise VolumeError(f"invalid volume file path {path!r}: must be relative and not contain '..'")


def render_hosts(pod_ip: str, hostname: str, extra: list[Obj] | None = None, fqdn: str = "") -> str:
    """The pod's /etc/hosts: loopback names, the pod's own name (and FQDN with a subdomain),
    then ``hostAliases``."""
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if pod_ip:
        lines.append(f"{pod_ip}\t{fqdn}\t{hostname}" if fqdn else f"{pod_ip}\t{hostname}")
    for alias in extra or []:
        lines.append(f"{alias.get('ip', '')}\t{' '.join(alias.get('hostnames') or [])}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PodDNS:
    """The kubelet's DNS settings: ``--cluster-dns``, ``--cluster-domain``, ``--resolv-conf``."""

    cluster_dns: tuple[str, ...] = (CLUSTER_DNS,)
    cluster_domain: str = CLUSTER_DOMAIN
    resolv_conf: str = ""  # empty: chosen as k3s does (k3py.agent.dns.resolvconf)


# The settings of each node agent's pods, by its pods directory (``configure_pod_dns``); a
# pod directory without an entry gets the defaults.
_POD_DNS: dict[str, PodDNS] = {}
MAX_NAMESERVERS = 3  # upstream's validation.MaxDNSNameservers
MAX_SEARCHES = 32  # MaxDNSSearchPathsExpanded
MAX_SEARCH_CHARS = 2048  # MaxDNSSearchListCharsExpanded
MAX_SEARCH_NAME = 253


def configure_pod_dns(pods_dir: Path, settings: PodDNS) -> None:
    """The DNS settings for every pod under ``pods_dir`` (the node agent calls it at start)."""
    _POD_DNS[os.path.realpath(pods_dir)] = settings


def pod_dns_for(pod_dir: Path) -> PodDNS:
    return _POD_DNS.get(os.path.realpath(pod_dir.parent), PodDNS())


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def render_resolv_conf(pod: Obj, host_resolv: str = "", settings: PodDNS | None = None) -> str:
    """The pod's /etc/resolv.conf, as upstream's kubelet forms it (pkg/kubelet/network/dns):

    - ``ClusterFirst`` (not on the host network) and ``ClusterFirstWithHostNet``: the cluster
      DNS as the only nameserver, search ``<ns>.svc.<domain> svc.<domain> <domain>`` followed by
      the node's search domains, ``options ndots:5`` (the node's options are not kept);
    - ``Default``, and ``ClusterFirst`` on the host network: the node's resolv.conf;
    - ``None``: nothing but ``dnsConfig``;
    - ``dnsConfig`` is then merged in: nameservers and searches appended without duplicates,
      options by name (the pod's value wins);
    - the limits: 3 nameservers, 32 search domains of at most 253 characters and 2048 in all
      (the last ones are dropped).
    """
    from k3py.agent.dns.resolvconf import parse_resolv_conf

    settings = settings or PodDNS()
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    host = parse_resolv_conf(host_resolv)
    if policy == "None":
        nameservers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
    elif policy == "Default" or (policy == "ClusterFirst" and spec.get("hostNetwork")) or not settings.cluster_dns:
        # (upstream falls back to the node's file when it has no cluster DNS address)
        nameservers, searches, options = list(host.nameservers), list(host.searches), list(host.options)
    else:  # ClusterFirst, ClusterFirstWithHostNet (and, as upstream, anything unknown)
        namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        domain = settings.cluster_domain
        nameservers = list(settings.cluster_dns)
        searches = _unique([f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *host.searches])
        options = ["ndots:5"]
    config = spec.get("dnsConfig") or {}
    if config:
        nameservers = _unique([*nameservers, *(str(n) for n in config.get("nameservers") or [])])
        searches = _unique([*searches, *(str(s) for s in config.get("searches") or [])])
        merged = {o.split(":", 1)[0]: o for o in options}
        for option in config.get("options") or []:
            name = str(option.get("name", ""))
            value = option.get("value")
            merged.pop(name, None)
            merged[name] = f"{name}:{value}" if value else name
        options = list(merged.values())
    nameservers = nameservers[:MAX_NAMESERVERS]
    searches = [s for s in searches[:MAX_SEARCHES] if len(s) <= MAX_SEARCH_NAME]
    while searches and len(" ".join(searches)) > MAX_SEARCH_CHARS:
        searches.pop()
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {n}" for n in nameservers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n" if lines else ""


def pod_hostname(pod: Obj) -> str:
    spec = pod.get("spec") or {}
    return spec.get("hostname") or (pod.get("metadata") or {}).get("name", "")


class PodVolumes:
    """The volume directories and /etc files of one pod under ``pod_dir`` (blocking calls)."""

    def __init__(self, pod_dir: Path) -> None:
        self.pod_dir = pod_dir
        self.volumes_dir = pod_dir / "volumes"
        self.etc_dir = pod_dir / "etc"

    def prepare(
        self,
        pod: Obj,
        *,
        pod_ip: str,
        config_maps: Mapping[str, Obj | None],
        secrets: Mapping[str, Obj | None],
        allocatable: Mapping[str, str] | None = None,
        claim_sources: Mapping[str, Obj] | None = None,
    ) -> dict[str, str]:
        """Create or refresh every volume; returns volume name → host path. ``claim_sources``
        maps each persistentVolumeClaim volume to its bound PV's source (``claim_source``).
        With a pod ``fsGroup`` the volumes belong to that group (and the containers run with it)."""
        allocatable = allocatable or {}
        claim_sources = claim_sources or {}
        fs_group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        paths: dict[str, str] = {}
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        failures: dict[str, VolumeError] = {}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = volume.get("name", "")
            try:
                paths[name] = self._prepare_one(pod, volume, config_maps, secrets, allocatable,
                                                claim_sources, fs_group)
            except VolumeError as e:
                failures[name] = VolumeError(str(e), volume=name)
            except OSError as e:
                failures[name] = VolumeError(str(e), volume=name)
        if failures:
            # The volumes that could be set up are (as upstream mounts each on its own).
            raise next(iter(failures.values())) if len(failures) == 1 else VolumeSetUpErrors(failures)
        self._write_etc(pod, pod_ip)
        return paths

    def _prepare_one(
        self,
        pod: Obj,
        volume: Obj,
        config_maps: Mapping[str, Obj | None],
        secrets: Mapping[str, Obj | None],
        allocatable: Mapping[str, str],
        claim_sources: Mapping[str, Obj],
        fs_group: Any,
    ) -> str:
        """Create or refresh one volume; its host path."""
        name = volume.get("name", "")
        if not name or "/" in name or name.startswith("."):
            raise VolumeError(f"invalid volume name {name!r}")
        if volume.get("hostPath"):
            return self._host_path(volume["hostPath"])
        if volume.get("persistentVolumeClaim") is not None:
            source = claim_sources.get(name)
            if source is None:
                raise VolumeError(f"volume {name!r}: its claim is not bound to a volume yet")
            return self._claim_path(source)
        target = self.volumes_dir / name
        files = render_volume_files(pod, volume, config_maps=config_maps, secrets=secrets,
                                    allocatable=allocatable)
        if files is None:
            if volume.get("emptyDir") is None:
                raise VolumeError(f"volume {name!r}: unsupported volume type")
            changed = not target.exists()
            target.mkdir(exist_ok=True)
            if (volume["emptyDir"] or {}).get("medium") == "Memory" and not _is_mount_point(target):
                size = memory_volume_size(pod, volume, allocatable)
                linux.mount("tmpfs", str(target), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                            "mode=1777" + (f",size={size}" if size else ""))
                changed = True
            target.chmod(0o777)  # emptyDir is world-writable, as the kubelet makes it
        else:
            for path in files:
                _check_relative(path)
            changed = publish_files(target, files)
        if fs_group is not None and changed:  # once, as at mount time: never walk app data again
            _apply_fs_group(target, int(fs_group))
        return str(target)

    @staticmethod
    def _host_path(source: Obj) -> str:
        path = source.get("path", "")
        if not path.startswith("/"):
            raise VolumeError(f"hostPath {path!r} must be absolute")
        kind = source.get("type", "")
        checks = {
            "Directory": stat.S_ISDIR, "File": stat.S_ISREG, "Socket": stat.S_ISSOCK,
            "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK,
        }
        if kind == "DirectoryOrCreate":
            os.makedirs(path, mode=0o755, exist_ok=True)
        elif kind == "FileOrCreate":
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        elif kind in checks:
            try:
                mode = os.stat(path).st_mode
            except FileNotFoundError:
                raise VolumeError(f"hostPath type check failed: {path} does not exist") from None
            if not checks[kind](mode):
                raise VolumeError(f"hostPath type check failed: {path} is not a {kind}")
        elif kind == "":
            # No checks; a missing path becomes a directory, as containerd's CRI makes it.
            if not os.path.lexists(path):
                os.makedirs(path, mode=0o755, exist_ok=True)
        else:
            raise VolumeError(f"hostPath type {kind!r} is not supported")
        return path

    def _claim_path(self, source: Obj) -> str:
        if source.get("hostPath"):
            path = source["hostPath"].get("path", "")
            fresh = isinstance(path, str) and path.startswith("/") and not os.path.exists(path)
            # The provisioner's volumes are DirectoryOrCreate; an untyped hostPath PV is a
            # directory someone made by hand and is used as it is.
            path = self._host_path(source["hostPath"])
            if fresh and source.get("createMode") is not None and os.path.isdir(path):
                os.chmod(path, source["createMode"])  # once, when we made it: later chmods are the user's
            return path
        path = (source.get("local") or {}).get("path", "")
        if not path.startswith("/"):
            raise VolumeError(f"local volume path {path!r} must be absolute")
        if not os.path.exists(path):
            raise VolumeError(f"local volume path {path} does not exist")
        return path

    def size_limit_exceeded(self, pod: Obj) -> str | None:
        """Upstream's eviction message when a disk emptyDir uses more than its ``sizeLimit``;
        None when all are within bounds (only volumes with a limit are measured)."""
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            empty_dir = volume.get("emptyDir")
            if empty_dir is None or empty_dir.get("medium") == "Memory" or empty_dir.get("sizeLimit") is None:
                continue
            limit = empty_dir["sizeLimit"]
            target = self.volumes_dir / volume.get("name", "")
            if target.is_dir() and disk_usage(target) > _bytes(limit):
                return f'Usage of EmptyDir volume "{volume.get("name", "")}" exceeds the limit "{limit}".'
        return None

    def _write_etc(self, pod: Obj, pod_ip: str) -> None:
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        spec = pod.get("spec") or {}
        settings = pod_dns_for(self.pod_dir)
        hostname = pod_hostname(pod)
        if spec.get("hostNetwork"):
            hosts = Path("/etc/hosts").read_text() if os.path.exists("/etc/hosts") else render_hosts("", "")
            hostname = os.uname().nodename
        else:
            subdomain = spec.get("subdomain", "")
            namespace = (pod.get("metadata") or {}).get("namespace", "default")
            fqdn = f"{hostname}.{subdomain}.{namespace}.svc.{settings.cluster_domain}" if subdomain else ""
            hosts = render_hosts(pod_ip, hostname, spec.get("hostAliases"), fqdn)
        from k3py.agent.dns.resolvconf import MAX_RESOLV_CONF_BYTES, choose_resolv_conf

        node_resolv = choose_resolv_conf(settings.resolv_conf)
        host_resolv = ""
        with contextlib.suppress(OSError):
            with open(node_resolv, "rb") as f:
                host_resolv = f.read(MAX_RESOLV_CONF_BYTES).decode("utf-8", "replace")
        for name, content in (
            ("hosts", hosts),
            ("hostname", hostname + "\n"),
            ("resolv.conf", render_resolv_conf(pod, host_resolv, settings)),
        ):
            _write_if_changed(self.etc_dir / name, content.encode(), 0o644)

    def termination_log(self, container_name: str, attempt: int) -> Path:
        """The host file behind one container attempt's terminationMessagePath."""
        return self.pod_dir / "containers" / f"{container_name}_{attempt}" / "termination-log"

    def realize_mounts(self, mounts: list[Mount], container: Obj, volume_paths: Mapping[str, str],
                       attempt: int = 0) -> list[Mount]:
        """Make what a container's planned mounts (``plan_mounts``) need on disk; the mounts to use.

        A subPath (planned as ``<volume>/<sub path>``) is created inside its volume if missing and
        replaced by its resolved, symlink-free path — refused when a symlink leads out of the
        volume; this attempt's termination-message file is created, writable by any user."""
        roots = {m.get("mountPath", ""): volume_paths.get(m.get("name", ""), "")
                 for m in container.get("volumeMounts") or []}
        message_file = self.termination_log(container.get("name", ""), attempt)
        realized = []
        for mount in mounts:
            if mount.exact_source:
                root = roots.get(mount.destination, "")
                mount = dataclasses.replace(
                    mount, source=_sub_path_source(root, os.path.relpath(mount.source, root)))
            elif mount.source == str(message_file):
                message_file.parent.mkdir(parents=True, exist_ok=True)
                message_file.touch()
                message_file.chmod(0o666)  # any container user may write its last words
            realized.append(mount)
        return realized

    def unmount(self) -> int:
        """Unmount the pod's tmpfs volumes (deepest first); how many went. A finished pod's
        volumes go this way (its directory, with the termination messages, stays until the
        Pod object is deleted)."""
        root = os.path.realpath(self.volumes_dir) + "/"
        points = sorted((m for m in _mount_points() if m.startswith(root)), key=len, reverse=True)
        for mount_point in points:
            try:
                linux.umount2(mount_point, linux.MNT_DETACH)
            except OSError as e:
                raise VolumeError(f"unmounting {mount_point}: {e}") from None
        return len(points)

    def remove(self) -> None:
        """Unmount the pod's tmpfs volumes, then delete its directory."""
        # Never delete through a mount we could not take away (unmount raises): its files are not ours.
        self.unmount()
        shutil.rmtree(self.pod_dir, ignore_errors=True)


def _mount_points() -> list[str]:
    """Mount points of this process's mount namespace (octal escapes of mountinfo decoded)."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def _is_mount_point(path: Path) -> bool:
    return os.path.realpath(path) in _mount_points()


def _sub_path_source(volume_path: str, sub_path: str) -> str:
    """The host path of ``sub_path`` inside a volume, created as a directory if missing (as the
    kubelet does); symlinks are followed only while they stay inside the volume."""
    root = os.path.realpath(volume_path)
    source = os.path.join(root, sub_path)
    if not os.path.lexists(source):
        os.makedirs(source, mode=0o755, exist_ok=True)
        os.chmod(source, stat.S_IMODE(os.stat(root).st_mode))  # like the volume's own root
    resolved = os.path.realpath(source)
    if resolved != root and not resolved.startswith(root.rstrip("/") + "/"):
        raise VolumeError(f"subpath {resolved!r} not within volume path {root!r}")
    if not os.path.exists(resolved):
        raise VolumeError(f"subPath {sub_path!r} of the volume does not exist")
    return resolved


def disk_usage(root: Path) -> int:
    """Bytes of disk a directory tree occupies (allocated blocks, each inode counted once: du)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(os.path.join(dirpath, name))
                key = (info.st_dev, info.st_ino)
                if key not in seen:
                    seen.add(key)
                    total += info.st_blocks * 512
    return total


def _apply_fs_group(root: Path, gid: int) -> None:
    """Give a volume's files to ``gid``, group-readable (and writable where the owner may write),
    directories setgid so new files inherit the group — what the kubelet does for fsGroup."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            info = os.lstat(path)
            if info.st_gid != gid:
                os.lchown(path, -1, gid)
            mode = stat.S_IMODE(info.st_mode)
            wanted = mode | stat.S_IRGRP | (stat.S_IWGRP if mode & stat.S_IWUSR else 0)
            if stat.S_ISDIR(info.st_mode):
                wanted |= stat.S_ISGID | stat.S_IXGRP
            if wanted != mode:
                os.chmod(path, wanted)


def _write_if_changed(path: Path, content: bytes, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == content:
            return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    tmp.chmod(mode)
    os.replace(tmp, path)  # bind mounts of the old inode keep it; new containers see the new one


def _current_payload(target: Path) -> dict[str, tuple[bytes, int]] | None:
    data = target / "..data"
    if not data.is_symlink():
        return None
    payload: dict[str, tuple[bytes, int]] = {}
    root = target / os.readlink(data)
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = Path(dirpath) / name
            payload[str(full.relative_to(root))] = (full.read_bytes(), stat.S_IMODE(full.stat().st_mode))
    return payload


def publish_files(target: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    """Atomically replace the volume's payload with ``files``; False when nothing changed."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = {path: (content, mode & 0o777) for path, (content, mode) in files.items()}
    if _current_payload(target) == wanted:
        return False
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns() % 1_000_000_000}"
    payload_dir = target / stamp
    payload_dir.mkdir(mode=0o755)
    for path, (content, mode) in wanted.items():
        full = payload_dir / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(content)
        full.chmod(mode)
    old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
    tmp_link = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(stamp)
    os.replace(tmp_link, target / "..data")
    tops = {Path(path).parts[0] for path in wanted}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in tops:
            entry.unlink()
    if old is not None:
        shutil.rmtree(target / old, ignore_errors=True)
    return True
