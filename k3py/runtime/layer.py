"""Unpacking one image layer (a tar stream) into its own directory, safely.

Each layer becomes a directory used as an overlayfs lower dir, so whiteouts are stored the way
overlayfs understands them: ``.wh.<name>`` becomes a character device 0/0 called ``<name>``,
and ``.wh..wh..opq`` sets the ``trusted.overlay.opaque`` xattr on its directory.

A layer is untrusted input. Every path is resolved component by component with
``O_NOFOLLOW | O_DIRECTORY`` directory descriptors, and every file is created relative to its
parent's descriptor, so no entry can leave the layer directory: absolute names and ``..`` are
refused, an earlier symlink cannot be written through by a later entry, and hard links must name
a file already inside this layer. The uncompressed stream is hashed while read, so the caller can
check the layer's diff_id against the image config. Gzip, zstd and plain tar are recognised by
their magic bytes; anything truncated or malformed raises ``LayerError``.

Device nodes (debootstrap leaves ``dev/console``, ``dev/null``… in its root) are created as
containerd creates them: a container's device cgroup (``devices``) decides what it may open, so
a node in its root grants nothing by itself; and the store's directories are root's alone, so
no host user reaches them either. Where the runtime lacks CAP_MKNOD (EPERM) they are skipped
with a warning.

``max_bytes`` bounds the layer's size: both the decompressed stream and the file contents it
expands to (a sparse tar entry can declare far more than the stream carries). Past it the unpack
stops with ``LayerTooLarge`` before writing more: a small gzip bomb cannot fill the disk.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_COPY_CHUNK = 1 << 20


log = logging.getLogger(__name__)


class LayerError(ValueError):
    """A layer that is malformed or tries to escape its directory; nothing was kept."""


class LayerTooLarge(LayerError):
    """A layer that expands past the import budget."""


def human_size(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


class _HashingReader:
    """A read-only stream that hashes everything read through it (the layer's diff_id) and
    refuses to deliver more than ``limit`` bytes."""

    def __init__(self, inner: IO[bytes], limit: int | None = None) -> None:
        self._inner = inner
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.limit = limit

    def read(self, n: int = -1) -> bytes:
        if self.limit is not None and (n is None or n < 0):
            n = self.limit - self.size + 1  # never decompress an unbounded amount at once
        data = self._inner.read(n)
        self.sha256.update(data)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise LayerTooLarge(
                f"layer decompresses to more than the budget of {human_size(self.limit)}"
                " per layer; refused"
            )
        return data

    def drain(self) -> None:
        while self.read(_COPY_CHUNK):
            pass


def open_decompressed(raw: IO[bytes]) -> IO[bytes]:
    """Wrap ``raw`` (positioned at its start, peekable via a buffered reader) in a decompressor."""
    import io

    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    head = buffered.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if head.startswith(_ZSTD_MAGIC):
        try:
            import zstandard
        except ImportError as exc:  # pragma: no cover - the dependency is declared
            raise LayerError(
                "zstd-compressed layer but the 'zstandard' package is missing"
            ) from exc
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[return-value]
    return buffered


def split_member_path(name: str, what: str = "entry") -> list[str]:
    """The components of a tar path, refusing absolute paths and ``..``."""
    if name.startswith("/"):
        raise LayerError(f"refusing layer {what} with an absolute path: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"refusing layer {what} whose path contains '..': {name!r}")
    if any("\x00" in p for p in parts):
        raise LayerError(f"refusing layer {what} with a NUL in its path: {name!r}")
    return parts


class _SafeRoot:
    """Creates entries under one root directory without ever following a symlink."""

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)

    def close(self) -> None:
        os.close(self.root_fd)

    def open_dir(self, parts: list[str], create: bool, entry_name: str) -> int:
        """A descriptor for the directory ``parts`` (created 0755 when missing and ``create``)."""
        fd = os.dup(self.root_fd)
        try:
            for part in parts:
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise LayerError(
                            f"refusing layer entry {entry_name!r}: {part!r} does not exist in this layer"
                        ) from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise LayerError(
                            f"refusing layer entry {entry_name!r}: it goes through {part!r}, "
                            "which is a symlink or not a directory"
                        ) from None
                    raise
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise


def _remove_existing(dir_fd: int, name: str, keep_dir: bool) -> bool:
    """Remove ``name`` under ``dir_fd`` unless it is a directory and ``keep_dir``; True if a dir was kept."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        # Resolve the path through /proc so rmtree works relative to a descriptor we trust.
        shutil.rmtree(f"/proc/self/fd/{dir_fd}/{name}")
        return False
    os.unlink(name, dir_fd=dir_fd)
    return False


def _apply_metadata(dir_fd: int, name: str, member: tarfile.TarInfo) -> None:
    os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
    if not member.issym():
        os.chmod(name, member.mode & 0o7777, dir_fd=dir_fd)
        os.utime(name, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)
    for key, value in member.pax_headers.items():
        if key == "SCHILY.xattr.security.capability":
            os.setxattr(
                name,
                "security.capability",
                value.encode("latin-1") if isinstance(value, str) else value,
                dir_fd=dir_fd,
                follow_symlinks=False,
            )


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    try:
        while True:
            member = tar.next()
            if member is None:
                return
            yield member
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise LayerError(f"malformed or truncated layer: {exc}") from None


class _Budget:
    """The bytes of file content a layer may still write (None: unbounded)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.written = 0

    def take(self, size: int, name: str) -> None:
        self.written += size
        if self.limit is not None and self.written > self.limit:
            raise LayerTooLarge(
                f"layer expands to more than the budget of {human_size(self.limit)} per layer"
                f" (at {name!r}); refused"
            )


def _extract_member(
    root: _SafeRoot, tar: tarfile.TarFile, member: tarfile.TarInfo, budget: _Budget
) -> None:
    parts = split_member_path(member.name)
    if not parts:
        return  # the layer root itself ("./")
    *parent_parts, base = parts
    parent_fd = root.open_dir(parent_parts, create=True, entry_name=member.name)
    try:
        if base == OPAQUE_MARKER:
            os.setxattr(f"/proc/self/fd/{parent_fd}", OVERLAY_OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX):
            hidden = base[len(WHITEOUT_PREFIX) :]
            if hidden in ("", ".", "..") or hidden.startswith(WHITEOUT_PREFIX):
                raise LayerError(f"refusing whiteout with an invalid target: {member.name!r}")
            _remove_existing(parent_fd, hidden, keep_dir=False)
            os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent_fd)
            return
        kept_dir = _remove_existing(parent_fd, base, keep_dir=member.isdir())
        if member.isdir():
            if not kept_dir:
                os.mkdir(base, 0o755, dir_fd=parent_fd)
        elif member.isreg():
            budget.take(member.size, member.name)  # before a byte of it is written
            source = tar.extractfile(member)
            assert source is not None
            fd = os.open(
                base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent_fd
            )
            with os.fdopen(fd, "wb") as out:
                remaining = member.size
                while remaining > 0:
                    chunk = source.read(min(_COPY_CHUNK, remaining))
                    if not chunk:
                        raise LayerError(f"truncated layer: {member.name!r} is cut short")
                    out.write(chunk)
                    remaining -= len(chunk)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent_fd)
        elif member.islnk():
            target_parts = split_member_path(member.linkname, "hard link target")
            if not target_parts:
                raise LayerError(f"refusing hard link {member.name!r} to the layer root")
            *target_dir, target_base = target_parts
            target_fd = root.open_dir(target_dir, create=False, entry_name=member.linkname)
            try:
                target_st = os.lstat(target_base, dir_fd=target_fd)
                if not stat.S_ISREG(target_st.st_mode) and not stat.S_ISLNK(target_st.st_mode):
                    raise LayerError(f"refusing hard link {member.name!r} to a non-file")
                os.link(
                    target_base,
                    base,
                    src_dir_fd=target_fd,
                    dst_dir_fd=parent_fd,
                    follow_symlinks=False,
                )
            except FileNotFoundError:
                raise LayerError(
                    f"refusing hard link {member.name!r}: target {member.linkname!r} is not in this layer"
                ) from None
            finally:
                os.close(target_fd)
            return  # a hard link shares the target's metadata
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            try:
                os.mknod(
                    base,
                    kind | 0o600,
                    os.makedev(member.devmajor, member.devminor),
                    dir_fd=parent_fd,
                )
            except PermissionError:
                log.warning(
                    "skipping device node %r (%d:%d) of a layer: no permission to create"
                    " device nodes (CAP_MKNOD)",
                    member.name,
                    member.devmajor,
                    member.devminor,
                )
                return
        elif member.isfifo():
            os.mkfifo(base, 0o600, dir_fd=parent_fd)
        else:
            raise LayerError(
                f"refusing unsupported tar entry type {member.type!r}: {member.name!r}"
            )
        _apply_metadata(parent_fd, base, member)
    finally:
        os.close(parent_fd)


def unpack_layer(blob: IO[bytes], dest: Path, *, max_bytes: int | None = None) -> tuple[str, int]:
    """Unpack the (possibly compressed) tar ``blob`` into the empty directory ``dest``.

    Returns the diff_id (``sha256:<hex>`` of the uncompressed stream) and the uncompressed size.
    On error (``LayerTooLarge`` past ``max_bytes``) raises LayerError and leaves ``dest`` for the
    caller to delete (it lies inside the store's tmp dir).
    """
    budget = _Budget(max_bytes)
    try:
        stream = _HashingReader(open_decompressed(blob), max_bytes)
        tar = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise LayerError(f"layer is not a readable tar stream: {exc}") from None
    root = _SafeRoot(dest)
    try:
        for member in _members(tar):
            try:
                _extract_member(root, tar, member, budget)
            except (EOFError, tarfile.TarError) as exc:
                raise LayerError(f"truncated layer while reading {member.name!r}: {exc}") from None
        try:
            stream.drain()
        except (EOFError, OSError) as exc:
            raise LayerError(f"truncated or corrupt compressed layer: {exc}") from None
    except Exception as exc:
        if isinstance(exc, LayerError):
            raise
        if isinstance(exc, OSError) and exc.errno in (errno.EIO,):
            raise
        if "zstd" in type(exc).__module__ or isinstance(exc, (gzip.BadGzipFile, EOFError)):
            raise LayerError(f"corrupt compressed layer: {exc}") from None
        raise
    finally:
        root.close()
    return "sha256:" + stream.sha256.hexdigest(), stream.size
