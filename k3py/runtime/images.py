"""The image store: content-addressed blobs, names → manifests, unpacked layer directories.

On-disk layout under the store root (an OCI image layout, readable by skopeo)::

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 OCI index; each entry a manifest, ``org.opencontainers.image.ref.name``
                               holding the full normalised name (docker.io/library/busybox:latest)
    blobs/sha256/<hex>         manifests, configs and layer blobs, each verified against its digest
    layers/<diff_id hex>/      one directory per unpacked layer (an overlayfs lower dir)
    tmp/                       partial writes; renamed into place only when complete and verified

Every blob is written to ``tmp`` while hashed and renamed into ``blobs`` only if the digest
matches, so a blob file is always what its name says. Layers are unpacked once (keyed by the
uncompressed digest, which the image config lists) and shared by every image and container that
uses them. Index updates hold an exclusive ``flock`` so several processes may share a store.

The store's directories are root's alone (0700): layer dirs hold the images' device nodes and
setuid files, and nothing in them is any host user's business.

Import budget (``ImportBudget``): a layer may decompress to at most ``max_layer_bytes`` and the
layers one image unpacks to at most ``max_image_bytes`` together; a blob (compressed, it is never
larger than what it expands to, give or take a header) at most ``max_layer_bytes``. Both are
checked while the bytes stream in, so a gzip bomb stops before the disk fills; the caller then
drops everything the import added. Defaults: 8 GiB per layer, 16 GiB per image, or
``$K3PY_IMAGE_MAX_LAYER_SIZE`` / ``$K3PY_IMAGE_MAX_SIZE`` (``512Mi``, ``8Gi``, ``10G`` or bytes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from k3py.runtime.layer import LayerError, LayerTooLarge, human_size, unpack_layer
from k3py.runtime.reference import ReferenceError_, is_digest, parse_reference

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = {MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST}
INDEX_TYPES = {MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST}
CONFIG_TYPES = {MEDIA_OCI_CONFIG, MEDIA_DOCKER_CONFIG}
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20


class ImageError(ValueError):
    """An image operation failed because of its input; the message is meant for the user."""


class ImageTooLarge(ImageError):
    """A blob, layer or image past the import budget."""


_SIZE_UNITS = {
    "": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
    "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40,
}  # fmt: skip


def parse_size(text: str) -> int:
    """``"512Mi"``, ``"8Gi"``, ``"10G"``, ``"1048576"`` → bytes (Kubernetes quantity suffixes)."""
    value = text.strip()
    digits = value.rstrip("KMGTkmgti")
    unit = value[len(digits) :].lower()
    unit = unit.removesuffix("b") if unit.endswith("ib") else unit
    try:
        number = float(digits)
    except ValueError:
        raise ValueError(f"invalid size {text!r}: use bytes or a suffix such as 512Mi, 8Gi") from None
    if unit not in _SIZE_UNITS or number <= 0:
        raise ValueError(f"invalid size {text!r}: use bytes or a suffix such as 512Mi, 8Gi")
    return int(number * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class ImportBudget:
    """How much one layer, and one image's layers together, may decompress to."""

    max_layer_bytes: int = 8 << 30
    max_image_bytes: int = 16 << 30

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ImportBudget:
        """The defaults, overridden by ``$K3PY_IMAGE_MAX_LAYER_SIZE`` / ``$K3PY_IMAGE_MAX_SIZE``."""
        env = os.environ if environ is None else environ
        layer = env.get("K3PY_IMAGE_MAX_LAYER_SIZE", "")
        image = env.get("K3PY_IMAGE_MAX_SIZE", "")
        return cls(
            max_layer_bytes=parse_size(layer) if layer else cls.max_layer_bytes,
            max_image_bytes=parse_size(image) if image else cls.max_image_bytes,
        )


class ImageNotFound(ImageError):
    """No image in the store matches the reference."""


def go_arch() -> str:
    """This machine's architecture, spelled as OCI platforms spell it."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )


def digest_hex(digest: str) -> str:
    if not is_digest(digest):
        raise ImageError(f"unsupported or malformed digest {digest!r} (only sha256 is accepted)")
    return digest.split(":", 1)[1]


@dataclass
class Image:
    """One image in the store, as its manifest and config describe it."""

    manifest_digest: str
    config_digest: str  # the image ID, as `docker images --no-trunc` shows it
    names: list[str]
    layers: list[dict[str, Any]]  # manifest layer descriptors, lowest first
    diff_ids: list[str]
    config: dict[str, Any] = field(repr=False)

    @property
    def id(self) -> str:
        return self.config_digest

    @property
    def size(self) -> int:
        return sum(int(layer.get("size", 0)) for layer in self.layers)

    @property
    def exec_config(self) -> dict[str, Any]:
        """The image's runtime defaults (Entrypoint, Cmd, Env, WorkingDir, User)."""
        return self.config.get("config") or {}


class ImageStore:
    """A content-addressed image store rooted at ``root`` (created on first use).

    ``budget`` None means ``ImportBudget.from_env()``.
    """

    def __init__(self, root: Path, *, budget: ImportBudget | None = None) -> None:
        self.root = Path(root)
        self.budget = budget if budget is not None else ImportBudget.from_env()
        self.blobs = self.root / "blobs" / "sha256"
        self.layers_dir = self.root / "layers"
        self.tmp = self.root / "tmp"
        for directory in (self.root, self.root / "blobs", self.blobs, self.layers_dir, self.tmp):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)  # stores made before this rule was kept 0755
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text('{"imageLayoutVersion": "1.0.0"}')
        if not (self.root / "index.json").exists():
            self._write_index([])

    # ---- blobs -------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def check_blob_size(self, size: int | None, what: str) -> None:
        """Refuse a blob that would be larger than a layer may be (before downloading it)."""
        limit = self.budget.max_layer_bytes
        if size is not None and size > limit:
            raise ImageTooLarge(
                f"{what} is {human_size(size)}, more than the budget of {human_size(limit)}"
                " per layer; refused"
            )

    def write_blob(
        self,
        stream: IO[bytes],
        expected_digest: str | None = None,
        expected_size: int | None = None,
    ) -> tuple[str, int]:
        """Copy ``stream`` into the store, verifying digest and size; returns (digest, size).

        A stream longer than ``expected_size`` or than the layer budget is cut off and refused.
        """
        if expected_digest is not None:
            digest_hex(expected_digest)
        what = f"blob {expected_digest}" if expected_digest else "blob"
        self.check_blob_size(expected_size, what)
        limit = self.budget.max_layer_bytes
        if expected_size is not None:
            limit = min(limit, expected_size)
        hasher = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        chunk = stream.read(_CHUNK)
                    except (EOFError, OSError) as exc:
                        raise ImageError(f"truncated blob stream: {exc}") from None
                    if not chunk:
                        break
                    hasher.update(chunk)
                    size += len(chunk)
                    if size > limit:
                        if expected_size is not None and size > expected_size:
                            raise ImageError(
                                f"{what} is longer than the {expected_size} bytes announced"
                            )
                        self.check_blob_size(size, what)
                    out.write(chunk)
            digest = "sha256:" + hasher.hexdigest()
            if expected_size is not None and size != expected_size:
                raise ImageError(
                    f"blob {expected_digest or digest} has {size} bytes, expected {expected_size} (truncated?)"
                )
            if expected_digest is not None and digest != expected_digest:
                raise ImageError(
                    f"digest mismatch: content is {digest}, expected {expected_digest}"
                )
            os.replace(tmp_name, self.blob_path(digest))
            return digest, size
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

    def write_blob_bytes(self, data: bytes) -> str:
        import io

        digest, _ = self.write_blob(io.BytesIO(data))
        return digest

    def read_json_blob(self, digest: str) -> dict[str, Any]:
        try:
            data = json.loads(self.blob_path(digest).read_bytes())
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the store") from None
        except ValueError as exc:
            raise ImageError(f"blob {digest} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ImageError(f"blob {digest} is not a JSON object")
        return data

    # ---- index -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def adding(self) -> Iterator[None]:
        """Held (shared) while blobs are added and named, so a prune never sees them half-done."""
        with open(self.root / "gc.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_index(self) -> list[dict[str, Any]]:
        try:
            return json.loads((self.root / "index.json").read_text()).get("manifests", [])
        except FileNotFoundError:
            return []

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        tmp = self.tmp / f"index-{os.getpid()}.json"
        tmp.write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}, indent=1))
        os.replace(tmp, self.root / "index.json")

    def tag(self, name: str, manifest_digest: str) -> None:
        """Point ``name`` (normalised) at a manifest already in the store."""
        ref = parse_reference(name)
        full = str(ref)
        size = self.blob_path(manifest_digest).stat().st_size
        media = self.read_json_blob(manifest_digest).get("mediaType", MEDIA_OCI_MANIFEST)
        with self._locked():
            entries = [
                e
                for e in self._read_index()
                if e.get("annotations", {}).get(REF_NAME_ANNOTATION) != full
                and not (e["digest"] == manifest_digest and not e.get("annotations"))
            ]
            entries.append(
                {
                    "mediaType": media,
                    "digest": manifest_digest,
                    "size": size,
                    "annotations": {REF_NAME_ANNOTATION: full},
                }
            )
            self._write_index(entries)

    def tag_untagged(self, manifest_digest: str) -> None:
        """Index a manifest without a name (so prune keeps it), unless it is indexed already."""
        size = self.blob_path(manifest_digest).stat().st_size
        media = self.read_json_blob(manifest_digest).get("mediaType", MEDIA_OCI_MANIFEST)
        with self._locked():
            entries = self._read_index()
            if not any(e["digest"] == manifest_digest for e in entries):
                entries.append({"mediaType": media, "digest": manifest_digest, "size": size})
                self._write_index(entries)

    # ---- images ------------------------------------------------------------------------------

    def load_manifest(self, manifest_digest: str) -> Image:
        """Read and check a manifest and its config; every blob must be in the store."""
        manifest = self.read_json_blob(manifest_digest)
        media = manifest.get("mediaType", MEDIA_OCI_MANIFEST)
        if media not in MANIFEST_TYPES:
            raise ImageError(f"unsupported manifest media type {media!r} in {manifest_digest}")
        config_desc = manifest.get("config") or {}
        if config_desc.get("mediaType") not in CONFIG_TYPES:
            raise ImageError(
                f"unsupported image config media type {config_desc.get('mediaType')!r}"
            )
        config = self.read_json_blob(config_desc.get("digest", ""))
        layers = manifest.get("layers") or []
        for layer in layers:
            if layer.get("mediaType") not in LAYER_TYPES:
                raise ImageError(f"unsupported layer media type {layer.get('mediaType')!r}")
            if not self.has_blob(layer.get("digest", "")):
                raise ImageError(f"layer blob {layer.get('digest')} is missing from the store")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layers):
            raise ImageError(
                f"image config lists {len(diff_ids)} diff_ids but the manifest has {len(layers)} layers"
            )
        for diff_id in diff_ids:
            digest_hex(diff_id)
        return Image(
            manifest_digest=manifest_digest,
            config_digest=config_desc["digest"],
            names=[],
            layers=layers,
            diff_ids=list(diff_ids),
            config=config,
        )

    def list(self) -> list[Image]:
        by_digest: dict[str, Image] = {}
        for entry in self._read_index():
            digest = entry["digest"]
            if digest not in by_digest:
                try:
                    by_digest[digest] = self.load_manifest(digest)
                except ImageError:
                    continue
            name = entry.get("annotations", {}).get(REF_NAME_ANNOTATION)
            if name:
                by_digest[digest].names.append(name)
        return list(by_digest.values())

    def get(self, ref: str) -> Image:
        """The image named ``ref``: a name (normalised), ``name@digest``, an ID or an ID prefix."""
        images = self.list()
        candidate = ref.removeprefix("sha256:")
        if 4 <= len(candidate) <= 64 and all(c in "0123456789abcdef" for c in candidate):
            for image in images:
                if digest_hex(image.id).startswith(candidate) or digest_hex(
                    image.manifest_digest
                ).startswith(candidate):
                    return image
        try:
            parsed = parse_reference(ref)
        except ReferenceError_ as exc:
            raise ImageNotFound(f"image {ref!r} not found ({exc})") from None
        for image in images:
            if str(parsed) in image.names:
                return image
            if parsed.digest is not None and image.manifest_digest == parsed.digest:
                return image
        if parsed.digest is not None and self.has_blob(parsed.digest):
            return self.load_manifest(parsed.digest)
        raise ImageNotFound(f"image {parsed.familiar!r} not found")

    def remove(self, ref: str) -> list[str]:
        """Remove a name (or, for an ID/digest, every name of that image); returns what went."""
        image = self.get(ref)
        try:
            parsed = str(parse_reference(ref))
        except ReferenceError_:
            parsed = ""
        by_name = parsed in image.names
        removed: list[str] = []
        with self._locked():
            kept = []
            for entry in self._read_index():
                name = entry.get("annotations", {}).get(REF_NAME_ANNOTATION, "")
                if entry["digest"] == image.manifest_digest and (not by_name or name == parsed):
                    removed.append(name or entry["digest"])
                    continue
                kept.append(entry)
            self._write_index(kept)
        return removed

    def prune(
        self, layers_in_use: set[str] | Callable[[], set[str]] | None = None
    ) -> tuple[int, int]:
        """Delete blobs and layer dirs no indexed image needs; returns (files removed, bytes)."""
        keep_blobs: set[str] = set()
        with open(self.root / "gc.lock", "a") as gc_lock, self._locked():
            fcntl.flock(gc_lock, fcntl.LOCK_EX)  # waits for imports, pulls and creates in progress
            # A callable is asked only now, under the lock, so no container slips in between.
            in_use = layers_in_use() if callable(layers_in_use) else layers_in_use
            keep_layers: set[str] = set(in_use or ())
            for image in self.list():
                keep_blobs.add(digest_hex(image.manifest_digest))
                keep_blobs.add(digest_hex(image.config_digest))
                keep_blobs.update(digest_hex(layer["digest"]) for layer in image.layers)
                keep_layers.update(digest_hex(d) for d in image.diff_ids)
            removed = freed = 0
            for blob in self.blobs.iterdir():
                if blob.name not in keep_blobs:
                    freed += blob.stat().st_size
                    blob.unlink()
                    removed += 1
            for layer_dir in self.layers_dir.iterdir():
                if layer_dir.name not in keep_layers:
                    shutil.rmtree(layer_dir)
                    removed += 1
        return removed, freed

    # ---- layers ------------------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> Path:
        return self.layers_dir / digest_hex(diff_id)

    def unpack(self, image: Image) -> list[Path]:
        """Unpack any layer not yet unpacked; returns the layer dirs, lowest first.

        The layers unpacked by this call may together decompress to at most the image budget;
        past it (or a layer past the layer budget) ``ImageTooLarge`` is raised, and on any
        refusal the layer dirs this call created are removed again (dirs it found in place
        stay: they belong to images already in the store).
        """
        dirs = []
        created: list[Path] = []
        image_limit = self.budget.max_image_bytes
        unpacked = 0
        try:
            for descriptor, diff_id in zip(image.layers, image.diff_ids, strict=True):
                final = self.layer_dir(diff_id)
                if not final.is_dir():
                    work = Path(tempfile.mkdtemp(dir=self.tmp, prefix="layer-"))
                    limit = min(self.budget.max_layer_bytes, image_limit - unpacked)
                    try:
                        with open(self.blob_path(descriptor["digest"]), "rb") as blob:
                            actual, size = unpack_layer(blob, work, max_bytes=limit)
                        if actual != diff_id:
                            raise ImageError(
                                f"layer {descriptor['digest']} unpacks to {actual}, but the image config says {diff_id}"
                            )
                        unpacked += size
                        try:
                            os.rename(work, final)
                            created.append(final)
                        except OSError:
                            if not final.is_dir():
                                raise
                    except LayerTooLarge as exc:
                        if limit < self.budget.max_layer_bytes:
                            raise ImageTooLarge(
                                f"image layers decompress to more than the budget of "
                                f"{human_size(image_limit)} per image; refused"
                            ) from None
                        raise ImageTooLarge(f"layer {descriptor['digest']}: {exc}") from None
                    except LayerError as exc:
                        raise ImageError(str(exc)) from None
                    finally:
                        if work.exists():
                            shutil.rmtree(work)
                dirs.append(final)
        except ImageError:
            for layer_dir in created:
                shutil.rmtree(layer_dir, ignore_errors=True)
            raise
        return dirs

    def rootfs_layers(self, ref: str) -> tuple[Image, list[Path]]:
        """The image and its unpacked layer dirs (lowest first), ready for an overlay mount."""
        image = self.get(ref)
        return image, self.unpack(image)
