"""Builds test images from what Debian installed on this machine — nothing is downloaded.

``busybox_layer()`` makes a root filesystem tar from the host's static busybox (``/bin/busybox``
plus one symlink per applet, a passwd/group with root and nobody, /tmp). ``write_docker_archive``
and ``write_oci_archive`` wrap layers into the two archive formats ``k3py image import`` reads,
the way ``docker save`` and ``skopeo copy oci-archive:`` lay them out. Output is deterministic
(fixed mtimes, gzip without a timestamp) so the same inputs give the same digests.

``scripts/build-test-images`` calls these to fill the shared cache; tests also use them to wrap
hand-made hostile layers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
FIXED_MTIME = 1_700_000_000
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


@dataclass
class Entry:
    """One tar entry of a hand-built layer."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """An uncompressed tar of ``entries``, exactly as given (no path cleaning: tests need raw names)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.mtime = FIXED_MTIME
            info.linkname = entry.linkname
            info.devmajor, info.devminor = entry.devmajor, entry.devminor
            if entry.type == tarfile.REGTYPE:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def busybox_layer() -> bytes:
    applets = subprocess.run(
        [str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    entries = [
        Entry(d, tarfile.DIRTYPE, mode=0o755)
        for d in (
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "etc",
            "root",
            "home",
            "dev",
            "proc",
            "sys",
            "var",
        )
    ]
    entries.append(Entry("tmp", tarfile.DIRTYPE, mode=0o1777))
    entries.append(Entry("bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755))
    for applet in sorted(set(applets)):
        if applet in ("bin/busybox", "linuxrc"):
            continue
        depth = applet.count("/")
        entries.append(
            Entry(applet, tarfile.SYMTYPE, linkname="../" * depth + "bin/busybox", mode=0o777)
        )
    entries.append(
        Entry(
            "etc/passwd",
            data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
            b"app:x:1000:1000:app:/home:/bin/sh\n",
        )
    )
    entries.append(
        Entry("etc/group", data=b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n")
    )
    return layer_tar(entries)


def image_config(
    diff_ids: list[str], cmd: list[str] | None = None, env: list[str] | None = None
) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Cmd": cmd or ["sh"], "Env": env or DEFAULT_ENV},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return json.dumps(config, sort_keys=True).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add_bytes(
    tar: tarfile.TarFile,
    name: str,
    data: bytes,
    *,
    type: bytes = tarfile.REGTYPE,
    linkname: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.mode = 0o644 if type != tarfile.DIRTYPE else 0o755
    info.type = type
    info.linkname = linkname
    info.size = len(data) if type == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if type == tarfile.REGTYPE else None)


def write_docker_archive(
    path: Path, layers: list[bytes], repo_tags: list[str], config: bytes | None = None
) -> None:
    """A ``docker save`` style archive: manifest.json, <config hex>.json, <n>/layer.tar."""
    config = config or image_config([sha256(layer) for layer in layers])
    config_name = sha256(config).split(":")[1] + ".json"
    layer_names = [f"{hashlib.sha256(layer).hexdigest()}/layer.tar" for layer in layers]
    manifest = [{"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}]
    with tarfile.open(path, "w") as tar:
        _add_bytes(tar, config_name, config)
        for name, layer in zip(layer_names, layers, strict=True):
            _add_bytes(tar, name.split("/")[0], b"", type=tarfile.DIRTYPE)
            _add_bytes(tar, name, layer)
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def write_oci_archive(
    path: Path,
    layers: list[bytes],
    ref_name: str,
    *,
    compress: str = "gzip",
    config: bytes | None = None,
    manifest_override: dict | None = None,
    extra_blobs: dict[str, bytes] | None = None,
) -> str:
    """An OCI image layout in a tar (as skopeo writes it); returns the manifest digest."""
    diff_ids = [sha256(layer) for layer in layers]
    if compress == "gzip":
        blobs = [gzip_bytes(layer) for layer in layers]
        media = "application/vnd.oci.image.layer.v1.tar+gzip"
    elif compress == "zstd":
        import zstandard

        blobs = [zstandard.ZstdCompressor().compress(layer) for layer in layers]
        media = "application/vnd.oci.image.layer.v1.tar+zstd"
    else:
        blobs = list(layers)
        media = "application/vnd.oci.image.layer.v1.tar"
    config = config or image_config(diff_ids)
    manifest = manifest_override or {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": len(config),
        },
        "layers": [{"mediaType": media, "digest": sha256(b), "size": len(b)} for b in blobs],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": manifest.get(
                    "mediaType", "application/vnd.oci.image.manifest.v1+json"
                ),
                "digest": sha256(manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": ref_name},
            }
        ],
    }
    all_blobs = {sha256(b): b for b in [config, manifest_bytes, *blobs]}
    all_blobs.update(extra_blobs or {})
    with tarfile.open(path, "w") as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        for digest, blob in sorted(all_blobs.items()):
            _add_bytes(tar, f"blobs/sha256/{digest.split(':')[1]}", blob)
        _add_bytes(tar, "index.json", json.dumps(index).encode())
    return sha256(manifest_bytes)


def build_busybox_images(out_dir: Path) -> tuple[Path, Path]:
    """Write busybox-docker.tar and busybox-oci.tar into ``out_dir`` (atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    layer = busybox_layer()
    docker_path, oci_path = out_dir / "busybox-docker.tar", out_dir / "busybox-oci.tar"
    for final, writer in (
        (docker_path, lambda p: write_docker_archive(p, [layer], ["busybox:latest"])),
        (oci_path, lambda p: write_oci_archive(p, [layer], "docker.io/library/busybox:latest")),
    ):
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")  # concurrent builders never share
        writer(tmp)
        tmp.replace(final)
    return docker_path, oci_path


def write_oci_layout_archive(path: Path, blobs: list[bytes], index: dict) -> None:
    """An OCI archive with arbitrary blobs and a hand-written index.json (image indexes, tests)."""
    with tarfile.open(path, "w") as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        for blob in blobs:
            _add_bytes(tar, f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
        _add_bytes(tar, "index.json", json.dumps(index).encode())


def oci_image_blobs(layers: list[bytes], cmd: list[str] | None = None) -> tuple[bytes, list[bytes]]:
    """(manifest bytes, every blob incl. the manifest) for an OCI image of gzip ``layers``."""
    compressed = [gzip_bytes(layer) for layer in layers]
    config = image_config([sha256(layer) for layer in layers], cmd=cmd)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(b),
                    "size": len(b),
                }
                for b in compressed
            ],
        },
        sort_keys=True,
    ).encode()
    return manifest, [config, *compressed, manifest]


DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Left out of the debian test image: downloaded packages, docs and translations (size), and
# /dev contents (device nodes; the runtime mounts its own /dev).
_DEBIAN_EXCLUDE = (
    "var/cache/apt/archives/",
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/locale/",
    "usr/share/info/",
    "dev/",
)


def _debian_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = info.name.removeprefix("./")
    if any(name.startswith(prefix) for prefix in _DEBIAN_EXCLUDE):
        return None
    if info.ischr() or info.isblk():
        return None
    info.uname = info.gname = ""
    return info


def build_debian_image(
    out_dir: Path, suite: str = "stable", *, packages: tuple[str, ...] = (),
    tag: str = "debian:stable", file_name: str = "debian-docker.tar",
) -> Path:
    """``file_name`` (debian-docker.tar): a debootstrap --variant=minbase root of ``suite``
    with ``packages`` added (needs the mirror), tagged ``tag``.

    Takes a minute or two; the result is cached by the caller (scripts/build-test-images).
    """
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix="debootstrap-"))
    root = work / "root"
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", *([f"--include={','.join(packages)}"] if packages else []),
             suite, str(root), DEBIAN_MIRROR],
            check=True,
            capture_output=True,
            timeout=900,
        )
        layer_path = work / "layer.tar"
        with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(root.iterdir()):
                tar.add(entry, arcname=entry.name, filter=_debian_filter)
        layer = layer_path.read_bytes()
        config = image_config([sha256(layer)], cmd=["bash"])
        final = out_dir / file_name
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")  # concurrent builders never share
        write_docker_archive(tmp, [layer], [tag], config=config)
        tmp.replace(final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)
