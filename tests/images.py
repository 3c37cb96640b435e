"""The test images, built from Debian packages on first use and cached in ``K3PY_TEST_IMAGES``.

Nothing here is downloaded from an image registry: busybox images wrap the host's
busybox-static, the Debian image is a debootstrap root (see tests/runtime/imagebuilder.py and
scripts/build-test-images). Every test that needs an image asks these functions, never the
cache directly, so a fresh machine (an empty cache) builds what the suite needs. Builds take an
exclusive lock on the cache: test sessions running side by side build each image once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

IMAGE_CACHE = Path(os.environ.get("K3PY_TEST_IMAGES", "/var/cache/k3py-test-images"))
BUSYBOX_ARCHIVES = ("busybox-docker.tar", "busybox-oci.tar")


@contextlib.contextmanager
def _building() -> Iterator[None]:
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    with open(IMAGE_CACHE / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def busybox_images() -> Path:
    """The cache directory, holding busybox-docker.tar and busybox-oci.tar."""
    if not all((IMAGE_CACHE / name).exists() for name in BUSYBOX_ARCHIVES):
        from tests.runtime.imagebuilder import build_busybox_images

        with _building():
            if not all((IMAGE_CACHE / name).exists() for name in BUSYBOX_ARCHIVES):
                build_busybox_images(IMAGE_CACHE)
    return IMAGE_CACHE


def busybox_archive() -> Path:
    """busybox-oci.tar (image ``busybox``)."""
    return busybox_images() / "busybox-oci.tar"


def debian_archive() -> Path:
    """debian-docker.tar (image ``debian:stable``): debootstrap minbase, a minute or two to build."""
    archive = IMAGE_CACHE / "debian-docker.tar"
    if not archive.exists():
        from tests.runtime.imagebuilder import build_debian_image

        with _building():
            if not archive.exists():
                build_debian_image(IMAGE_CACHE)
    return archive


TOOLS_PACKAGES = ("curl", "bind9-dnsutils", "netcat-openbsd", "iproute2", "procps")


def debian_tools_archive() -> Path:
    """debian-tools-docker.tar (image ``tools:latest``): Debian minbase plus curl, dig/nslookup
    (bind9-dnsutils), nc (netcat-openbsd), ip (iproute2) and ps (procps) — the networking tests'
    client image."""
    archive = IMAGE_CACHE / "debian-tools-docker.tar"
    if not archive.exists():
        from tests.runtime.imagebuilder import build_debian_image

        with _building():
            if not archive.exists():
                build_debian_image(IMAGE_CACHE, packages=TOOLS_PACKAGES, tag="tools:latest",
                                   file_name="debian-tools-docker.tar")
    return archive
