"""Pod volumes on the node: one directory per volume under ``<pods>/<uid>/volumes/<name>``.

- ``emptyDir``: a plain directory (``medium: Memory`` too — it lives as long as the pod).
- ``hostPath``: the host path itself, created for ``DirectoryOrCreate``/``FileOrCreate``, checked
  for ``Directory``/``File``/``Socket``...; empty type means "no checks".
- ``configMap``, ``secret``, ``downwardAPI``, ``projected``: files rendered from API objects
  (``items`` pick and rename keys, ``mode``/``defaultMode`` set permissions) and published the
  way the kubelet's atomic writer does: the payload goes to a fresh ``..<timestamp>`` directory,
  ``..data`` is a symlink switched to it by rename, and each top-level name is a symlink through
  ``..data`` — so a container reading the volume never sees half an update.

With a pod ``fsGroup`` each volume is given to that group once, when it is created or its
files change (setgid directories, group-readable files), as the kubelet does at mount time.

Every container also gets the pod's ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf``
(ClusterFirst DNS: the cluster DNS address and the ``<ns>.svc.<domain>`` search path; host
network pods get the host's resolver). Rendering is pure (``render_*``); only ``PodVolumes``
touches the disk (call it in a thread).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from k3py.agent.kubelet.podspec import pod_field, resource_field
from k3py.runtime.spec import Mount

Obj = dict[str, Any]

DEFAULT_MODE = 0o644
CLUSTER_DNS = "10.43.0.10"
CLUSTER_DOMAIN = "cluster.local"


class VolumeError(ValueError):
    """A volume cannot be set up (missing ConfigMap/Secret/key, bad hostPath): FailedMount."""


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


def render_resolv_conf(pod: Obj, host_resolv: str = "") -> str:
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy", "ClusterFirst")
    if policy == "Default" or (policy == "ClusterFirst" and spec.get("hostNetwork")):
        base = host_resolv
    elif policy == "None":
        base = ""
    else:
        namespace = (pod.get("metadata") or {}).get("namespace", "default")
        base = (
            f"search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
            f"nameserver {CLUSTER_DNS}\noptions ndots:5\n"
        )
    config = spec.get("dnsConfig") or {}
    if not config:
        return base
    nameservers = [line.split()[1] for line in base.splitlines() if line.startswith("nameserver ")]
    searches = next((line.split()[1:] for line in base.splitlines() if line.startswith("search ")), [])
    options = next((line.split()[1:] for line in base.splitlines() if line.startswith("options ")), [])
    nameservers += config.get("nameservers") or []
    searches += config.get("searches") or []
    for option in config.get("options") or []:
        text = option.get("name", "") + (f":{option['value']}" if option.get("value") else "")
        options = [o for o in options if o.split(":")[0] != option.get("name")] + [text]
    out = []
    if searches:
        out.append("search " + " ".join(searches))
    out += [f"nameserver {n}" for n in nameservers]
    if options:
        out.append("options " + " ".join(options))
    return "\n".join(out) + "\n"


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
    ) -> dict[str, str]:
        """Create or refresh every volume; returns volume name → host path. With a pod
        ``fsGroup`` the volumes belong to that group (and the containers run with it)."""
        fs_group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        paths: dict[str, str] = {}
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = volume.get("name", "")
            if not name or "/" in name or name.startswith("."):
                raise VolumeError(f"invalid volume name {name!r}")
            if volume.get("hostPath"):
                paths[name] = self._host_path(volume["hostPath"])
                continue
            target = self.volumes_dir / name
            files = render_volume_files(pod, volume, config_maps=config_maps, secrets=secrets,
                                        allocatable=allocatable)
            if files is None:
                if volume.get("emptyDir") is None:
                    raise VolumeError(f"volume {name!r}: unsupported volume type")
                changed = not target.exists()
                target.mkdir(exist_ok=True)
                target.chmod(0o777)  # emptyDir is world-writable, as the kubelet makes it
            else:
                for path in files:
                    _check_relative(path)
                changed = publish_files(target, files)
            if fs_group is not None and changed:  # once, as at mount time: never walk app data again
                _apply_fs_group(target, int(fs_group))
            paths[name] = str(target)
        self._write_etc(pod, pod_ip)
        return paths

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
        elif kind not in ("",):
            raise VolumeError(f"hostPath type {kind!r} is not supported")
        return path

    def _write_etc(self, pod: Obj, pod_ip: str) -> None:
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        spec = pod.get("spec") or {}
        hostname = pod_hostname(pod)
        if spec.get("hostNetwork"):
            hosts = Path("/etc/hosts").read_text() if os.path.exists("/etc/hosts") else render_hosts("", "")
            hostname = os.uname().nodename
        else:
            subdomain = spec.get("subdomain", "")
            namespace = (pod.get("metadata") or {}).get("namespace", "default")
            fqdn = f"{hostname}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}" if subdomain else ""
            hosts = render_hosts(pod_ip, hostname, spec.get("hostAliases"), fqdn)
        host_resolv = Path("/etc/resolv.conf").read_text() if os.path.exists("/etc/resolv.conf") else ""
        for name, content in (
            ("hosts", hosts),
            ("hostname", hostname + "\n"),
            ("resolv.conf", render_resolv_conf(pod, host_resolv)),
        ):
            _write_if_changed(self.etc_dir / name, content.encode(), 0o644)

    def termination_log(self, container_name: str, attempt: int) -> Path:
        """The host file behind one container attempt's terminationMessagePath."""
        return self.pod_dir / "containers" / f"{container_name}_{attempt}" / "termination-log"

    def container_mounts(
        self, container: Obj, volume_paths: Mapping[str, str], pod: Obj, attempt: int = 0
    ) -> list[Mount]:
        """The runtime mounts of one container: its volumeMounts, the pod's /etc files and the
        termination message file of this attempt."""
        mounts: list[Mount] = []
        rendered = {
            v.get("name") for v in (pod.get("spec") or {}).get("volumes") or []
            if v.get("configMap") or v.get("secret") or v.get("downwardAPI") or v.get("projected")
        }
        destinations = set()
        for mount in container.get("volumeMounts") or []:
            name = mount.get("name", "")
            if name not in volume_paths:
                raise VolumeError(f"volumeMount {name!r} names no volume of the pod")
            source = volume_paths[name]
            sub_path = mount.get("subPath", "")
            if sub_path:
                _check_relative(sub_path)
                source = os.path.join(source, sub_path)
                if not os.path.exists(source):
                    os.makedirs(source, exist_ok=True)
            destination = mount.get("mountPath", "")
            destinations.add(destination)
            mounts.append(Mount(destination=destination, source=source,
                                readonly=bool(mount.get("readOnly")) or name in rendered))
        for name in ("hosts", "hostname", "resolv.conf"):
            destination = f"/etc/{name}"
            if destination not in destinations:
                mounts.append(Mount(destination=destination, source=str(self.etc_dir / name)))
        message_path = container.get("terminationMessagePath") or "/dev/termination-log"
        if message_path.startswith("/") and message_path not in destinations:
            log_file = self.termination_log(container.get("name", ""), attempt)
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.touch()
            log_file.chmod(0o666)  # any container user may write its last words
            mounts.append(Mount(destination=message_path, source=str(log_file)))
        return mounts

    def remove(self) -> None:
        shutil.rmtree(self.pod_dir, ignore_errors=True)


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
