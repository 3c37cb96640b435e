"""Shared fixtures of the runtime tests: the test images (built locally from Debian packages), an
empty image store, and real registries (Debian's docker-registry) started per test module."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from k3py.runtime.images import ImageStore

if TYPE_CHECKING:
    from test_runtime_registry import Registry

REPO = Path(__file__).resolve().parents[2]
IMAGE_CACHE = Path(os.environ.get("K3PY_TEST_IMAGES", "/var/cache/k3py-test-images"))


@pytest.fixture(scope="session")
def test_images() -> Path:
    """The directory holding busybox-docker.tar and busybox-oci.tar (built once if missing)."""
    wanted = [IMAGE_CACHE / "busybox-docker.tar", IMAGE_CACHE / "busybox-oci.tar"]
    if not all(p.exists() for p in wanted):
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "build-test-images"), str(IMAGE_CACHE)],
            check=True,
            timeout=300,
        )
    return IMAGE_CACHE


@pytest.fixture(scope="session")
def debian_image() -> Path:
    """debian-docker.tar: a debootstrap minbase root of Debian stable (built once, then cached)."""
    archive = IMAGE_CACHE / "debian-docker.tar"
    if not archive.exists():
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "build-test-images"),
                "--debian",
                str(IMAGE_CACHE),
            ],
            check=True,
            timeout=900,
        )
    return archive


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Registry]]:
    """Start registries (optionally with htpasswd auth or TLS); all are stopped after the module."""
    # Imported here: other test packages import this module for IMAGE_CACHE alone.
    from test_runtime_registry import Registry

    started: list[Registry] = []

    def start(auth: dict | None = None, tls: dict | None = None) -> Registry:
        registry = Registry(tmp_path_factory.mktemp("registry"), auth, tls)
        started.append(registry)
        return registry

    yield start
    for registry in started:
        registry.stop()
