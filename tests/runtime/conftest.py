"""Shared fixtures of the runtime tests: the test images (tests/images.py builds them), an
empty image store, and real registries (Debian's docker-registry) started per test module."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from k3py.runtime.images import ImageStore
from tests.images import busybox_images, debian_archive

if TYPE_CHECKING:
    from test_runtime_registry import Registry

@pytest.fixture(scope="session")
def test_images() -> Path:
    """The directory holding busybox-docker.tar and busybox-oci.tar (built once if missing)."""
    return busybox_images()


@pytest.fixture(scope="session")
def debian_image() -> Path:
    """debian-docker.tar: a debootstrap minbase root of Debian stable (built once, then cached)."""
    return debian_archive()


# Host devices that root opens read-write without further privilege, and that no container may:
# a container that can open one of these (or the host's disk) is not isolated.
HOST_CHAR_DEVICES = [("kvm", 10, 232), ("loop-control", 10, 237), ("btrfs-control", 10, 234),
                     ("hwrng", 10, 183), ("fuse", 10, 229)]  # fmt: skip


def openable_host_device(scratch: Path, exclude: tuple[int, int] | None = None) -> tuple[int, int]:
    """(major, minor) of a character device of this host that root opens read-write here; a
    test that a container cannot open it is then meaningful. Found by making the node in
    ``scratch`` and opening it, as a container would."""
    for name, major, minor in HOST_CHAR_DEVICES:
        if (major, minor) == exclude:
            continue
        node = scratch / f"probe-{name}"
        try:
            os.mknod(node, 0o600 | 0o020000, os.makedev(major, minor))
            os.close(os.open(node, os.O_RDWR))
            return major, minor
        except OSError:
            continue
        finally:
            node.unlink(missing_ok=True)
    raise AssertionError(f"none of {HOST_CHAR_DEVICES} can be opened on this host")


def openable_host_block_device(scratch: Path) -> tuple[int, int]:
    """(major, minor) of a block device of this host (its disk, a loop device) that root opens
    for reading here, found as ``openable_host_device`` finds a character device."""
    for entry in sorted(os.listdir("/sys/dev/block")):
        major, minor = (int(n) for n in entry.split(":"))
        node = scratch / f"probe-block-{major}-{minor}"
        try:
            os.mknod(node, 0o600 | 0o060000, os.makedev(major, minor))
            os.close(os.open(node, os.O_RDONLY))
            return major, minor
        except OSError:
            continue
        finally:
            node.unlink(missing_ok=True)
    raise AssertionError("no block device of this host can be opened")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Registry]]:
    """Start registries (optionally with htpasswd auth or TLS); all are stopped after the module."""
    # Imported here: the registry helper lives in a test module of this package.
    from test_runtime_registry import Registry

    started: list[Registry] = []

    def start(auth: dict | None = None, tls: dict | None = None) -> Registry:
        registry = Registry(tmp_path_factory.mktemp("registry"), auth, tls)
        started.append(registry)
        return registry

    yield start
    for registry in started:
        registry.stop()
