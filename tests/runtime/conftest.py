"""Shared fixtures of the runtime tests: the test images, built locally from Debian packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
