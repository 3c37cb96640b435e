"""Shared fixtures of the runtime tests: the test images (tests/images.py builds them), an
empty image store, and real registries (Debian's docker-registry) started per test module."""

from __future__ import annotations

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
