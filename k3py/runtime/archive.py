"""Importing image tarballs: ``docker save`` archives and OCI archives (``skopeo copy oci-archive:``).

The archive is read in place with ``tarfile`` (nothing of it is extracted to disk): each blob
is streamed into the store and verified against its digest, then every manifest is checked
(known media types, all blobs present), its layers are unpacked (which checks the config's
diff_ids and refuses hostile paths), and only then are names written to the index. If anything
fails, the blobs this import added are deleted again, so a refused archive leaves no trace.

A docker-archive has ``manifest.json`` (``Config``, ``RepoTags``, ``Layers`` paths); we build an
OCI manifest for it. An OCI archive has ``oci-layout`` and ``index.json``; an index entry may be
an image index, of which we take the manifest for linux/<this arch>.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from k3py.runtime.images import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_MANIFEST,
    REF_NAME_ANNOTATION,
    Image,
    ImageError,
    ImageStore,
    ImageTooLarge,
    digest_hex,
    go_arch,
)
from k3py.runtime.layer import human_size, open_decompressed
from k3py.runtime.reference import ReferenceError_, parse_reference

_CONTAINERD_NAME = "io.containerd.image.name"


class _Archive:
    """Read access to the members of an image tarball, by normalised name."""

    def __init__(self, path: Path, scratch: Path, max_bytes: int) -> None:
        self._scratch: Path | None = None
        original = path
        try:
            with open(path, "rb") as raw:
                zstd = raw.read(4) == b"\x28\xb5\x2f\xfd"
            if zstd:  # tarfile knows gzip, bzip2 and xz but not zstd: decompress to scratch first
                import tempfile

                import zstandard

                fd, name = tempfile.mkstemp(dir=scratch, prefix="archive-")
                self._scratch = Path(name)
                with open(path, "rb") as raw, os.fdopen(fd, "wb") as out:
                    reader = zstandard.ZstdDecompressor().stream_reader(raw)
                    written = 0
                    while chunk := reader.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ImageTooLarge(
                                f"{original} decompresses to more than the budget of "
                                f"{human_size(max_bytes)} per image; refused"
                            )
                        out.write(chunk)
                path = self._scratch
            self.tar = tarfile.open(path, "r:*")
            self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers()}
        except ImageError:
            self._drop_scratch()
            raise
        except (tarfile.TarError, EOFError, OSError) as exc:
            self._drop_scratch()
            detail = (
                "not a tar archive (plain, gzip, bzip2, xz or zstd)"
                if isinstance(exc, tarfile.ReadError)
                else str(exc)
            )
            raise ImageError(f"{original} is not a readable image archive: {detail}") from None
        except Exception as exc:
            self._drop_scratch()
            if "zstd" in type(exc).__module__:
                raise ImageError(
                    f"{original} is not a readable image archive: corrupt zstd stream"
                ) from None
            raise

    def _drop_scratch(self) -> None:
        if self._scratch is not None:
            with contextlib.suppress(FileNotFoundError):
                self._scratch.unlink()
            self._scratch = None

    def open(self, name: str) -> Any:
        member = self.members.get(name.removeprefix("./"))
        if member is None:
            raise ImageError(f"archive has no entry {name!r}")
        try:
            stream = self.tar.extractfile(member)  # follows links inside the archive only
        except (tarfile.TarError, KeyError) as exc:
            raise ImageError(f"archive entry {name!r} cannot be read: {exc}") from None
        if stream is None:
            raise ImageError(f"archive entry {name!r} is not a file")
        return stream

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.open(name).read())
        except (ValueError, EOFError, tarfile.TarError) as exc:
            raise ImageError(f"archive entry {name!r} is not valid JSON: {exc}") from None

    def close(self) -> None:
        self.tar.close()
        self._drop_scratch()


def _layer_media_type(store: ImageStore, digest: str) -> str:
    with open(store.blob_path(digest), "rb") as blob:
        head = blob.read(4)
    if head.startswith(b"\x1f\x8b"):
        return "application/vnd.oci.image.layer.v1.tar+gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "application/vnd.oci.image.layer.v1.tar+zstd"
    return "application/vnd.oci.image.layer.v1.tar"


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class _Importer:
    def __init__(self, store: ImageStore, archive: _Archive) -> None:
        self.store = store
        self.archive = archive
        self.added_blobs: list[str] = []

    def add_blob(self, member: str, expected: str | None = None, size: int | None = None) -> str:
        if expected is not None and self.store.has_blob(expected):
            return expected
        entry = self.archive.members.get(member.removeprefix("./"))
        if size is None and entry is not None and entry.isfile():
            size = entry.size  # the tar header says how long it is: refuse a huge one up front
        digest, _ = self.store.write_blob(self.archive.open(member), expected, size)
        self.added_blobs.append(digest)
        return digest

    def add_bytes(self, data: bytes) -> str:
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.store.has_blob(digest):
            self.store.write_blob_bytes(data)
            self.added_blobs.append(digest)
        return digest

    def rollback(self) -> None:
        for digest in self.added_blobs:
            with contextlib.suppress(FileNotFoundError):
                self.store.blob_path(digest).unlink()

    # docker save ----------------------------------------------------------------------------

    def docker_archive(self) -> list[tuple[str, list[str]]]:
        entries = self.archive.read_json("manifest.json")
        if not isinstance(entries, list) or not entries:
            raise ImageError("docker archive manifest.json must be a non-empty list")
        result = []
        for entry in entries:
            if not isinstance(entry, dict) or "Config" not in entry or "Layers" not in entry:
                raise ImageError("docker archive manifest.json entry lacks Config or Layers")
            config_bytes = self.archive.open(entry["Config"]).read()
            config_digest = self.add_bytes(config_bytes)
            # Modern docker names the config blobs/sha256/<hex> or <hex>.json: check that claim.
            stem = Path(entry["Config"]).name.removesuffix(".json")
            if len(stem) == 64 and stem != digest_hex(config_digest):
                raise ImageError(
                    f"digest mismatch: config {entry['Config']} hashes to {config_digest}"
                )
            layers = []
            for layer_path in entry["Layers"]:
                digest = self.add_blob(layer_path)
                size = self.store.blob_path(digest).stat().st_size
                layers.append(
                    {
                        "mediaType": _layer_media_type(self.store, digest),
                        "digest": digest,
                        "size": size,
                    }
                )
            manifest = {
                "schemaVersion": 2,
                "mediaType": MEDIA_OCI_MANIFEST,
                "config": {
                    "mediaType": MEDIA_OCI_CONFIG,
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": layers,
            }
            manifest_digest = self.add_bytes(_canonical_json(manifest))
            result.append((manifest_digest, list(entry.get("RepoTags") or [])))
        return result

    # OCI archive ----------------------------------------------------------------------------

    def oci_archive(self) -> list[tuple[str, list[str]]]:
        for name, member in self.archive.members.items():
            if name.startswith("blobs/sha256/") and member.isfile():
                hex_name = name.rsplit("/", 1)[1]
                self.add_blob(name, f"sha256:{hex_name}", member.size)
            elif name.startswith("blobs/") and member.isfile():
                raise ImageError(f"unsupported digest algorithm in archive entry {name!r}")
        index = self.archive.read_json("index.json")
        result = []
        for descriptor in index.get("manifests") or []:
            annotations = descriptor.get("annotations") or {}
            name = annotations.get(_CONTAINERD_NAME) or annotations.get(REF_NAME_ANNOTATION)
            manifest_digest = self._platform_manifest(descriptor)
            result.append((manifest_digest, [name] if name else []))
        if not result:
            raise ImageError("OCI archive index.json lists no manifests")
        return result

    def _platform_manifest(self, descriptor: dict[str, Any]) -> str:
        media = descriptor.get("mediaType")
        digest = descriptor.get("digest", "")
        digest_hex(digest)
        if media in MANIFEST_TYPES:
            return digest
        if media in INDEX_TYPES:
            index = self.store.read_json_blob(digest)
            for child in index.get("manifests") or []:
                plat = child.get("platform") or {}
                if plat.get("os") == "linux" and plat.get("architecture") == go_arch():
                    return self._platform_manifest(child)
            raise ImageError(f"image index {digest} has no manifest for linux/{go_arch()}")
        raise ImageError(f"unsupported media type {media!r} in OCI index")


def _full_names(raw_names: list[str], override: list[str] | None) -> list[str]:
    if override:
        raw_names = override
    names = []
    for raw in raw_names:
        if ":" not in raw and "/" not in raw and "@" not in raw:
            continue  # an OCI ref.name that is only a tag: no repository to attach it to
        try:
            names.append(str(parse_reference(raw)))
        except ReferenceError_ as exc:
            raise ImageError(str(exc)) from None
    return names


def import_archive(store: ImageStore, path: Path, names: list[str] | None = None) -> list[Image]:
    """Import every image of a docker-archive or OCI-archive tarball; returns them, named.

    ``names`` replaces the names recorded in the archive (for a single-image archive).
    """
    with store.adding():
        return _import_archive(store, path, names)


def _import_archive(store: ImageStore, path: Path, names: list[str] | None) -> list[Image]:
    archive = _Archive(Path(path), store.tmp, store.budget.max_image_bytes)
    importer = _Importer(store, archive)
    try:
        if "manifest.json" in archive.members:
            found = importer.docker_archive()
        elif "index.json" in archive.members and "oci-layout" in archive.members:
            found = importer.oci_archive()
        else:
            raise ImageError(
                f"{path} is neither a docker archive (manifest.json) nor an OCI archive (oci-layout)"
            )
        if names and len(found) != 1:
            raise ImageError("--name needs an archive holding exactly one image")
        images = []
        for manifest_digest, raw_names in found:
            image = store.load_manifest(manifest_digest)
            store.unpack(image)
            image.names = _full_names(raw_names, names)
            images.append(image)
    except BaseException:
        importer.rollback()
        raise
    finally:
        archive.close()
    for image in images:
        for name in image.names:
            store.tag(name, image.manifest_digest)
        if not image.names:
            store.tag_untagged(image.manifest_digest)
    return images


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.bz2", ".tar.xz")


def import_directory(store: ImageStore, directory: Path) -> list[Image]:
    """Import every archive in an airgap images directory (k3s' agent/images), in name order.

    An unreadable or hostile archive is refused with an ImageError naming it; the archives
    before it stay imported.
    """
    images: list[Image] = []
    for path in sorted(Path(directory).iterdir()):
        if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
            try:
                images.extend(import_archive(store, path))
            except ImageError as exc:
                raise ImageError(f"{path.name}: {exc}") from None
    return images


AIRGAP_RECORD = "airgap-imports.json"


def _file_sha256(path: Path) -> str:
    import hashlib

    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def import_new_archives(
    store: ImageStore, directory: Path
) -> tuple[list[tuple[Path, list[Image]]], list[tuple[Path, str]]]:
    """Import the archives of an airgap directory not imported before; for the agent's start.

    Returns (imported: (archive, its images), refused: (archive, why)). An archive counts as
    imported by its content digest, recorded in the store's ``airgap-imports.json``; a file whose
    size and mtime match its record is not even re-hashed, so a restart costs a few stats. A
    refused archive is not recorded (it is tried again next start) and does not stop the others.
    Removing an airgap image by hand keeps it removed until its archive changes.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return [], []
    record_path = store.root / AIRGAP_RECORD
    try:
        record = json.loads(record_path.read_text())
        files: dict[str, dict[str, Any]] = dict(record.get("files") or {})
        digests: set[str] = set(record.get("digests") or [])
    except (OSError, ValueError, AttributeError):
        files, digests = {}, set()
    imported: list[tuple[Path, list[Image]]] = []
    refused: list[tuple[Path, str]] = []
    for path in sorted(directory.iterdir()):
        if not (path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)):
            continue
        stat = path.stat()
        known = files.get(path.name) or {}
        if known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
            digest = str(known.get("sha256"))
        else:
            digest = _file_sha256(path)
        if digest not in digests:
            try:
                imported.append((path, import_archive(store, path)))
            except ImageError as exc:
                refused.append((path, str(exc)))
                continue
            digests.add(digest)
        files[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    tmp = store.tmp / f"{AIRGAP_RECORD}.{os.getpid()}"
    tmp.write_text(json.dumps({"files": files, "digests": sorted(digests)}, indent=1))
    os.replace(tmp, record_path)
    return imported, refused


__all__ = ["import_archive", "import_directory", "import_new_archives", "open_decompressed"]
