"""Image references, normalised the way Docker does.

``busybox`` means ``docker.io/library/busybox:latest``; ``debian:stable`` means
``docker.io/library/debian:stable``; ``localhost:5000/app`` keeps its registry because the first
path component holds a port (``:``), a dot, or is ``localhost``. A reference may carry a tag, a
digest (``name@sha256:...``) or both. Parsing is pure: no I/O, errors are ``ReferenceError_``
with a message fit for the user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

# One path component of a repository name (distribution/reference grammar).
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$"
)


class ReferenceError_(ValueError):
    """An image reference that cannot be parsed; the message says why."""


@dataclass(frozen=True)
class ImageReference:
    registry: str  # "docker.io", "localhost:5000"
    repository: str  # "library/busybox"
    tag: str | None  # None when only a digest was given
    digest: str | None  # "sha256:<hex>"

    @property
    def name(self) -> str:
        """The repository with its registry: ``docker.io/library/busybox``."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def familiar(self) -> str:
        """The short form Docker prints: ``busybox:latest`` for the Docker Hub library."""
        text = str(self)
        for prefix in (f"{DEFAULT_REGISTRY}/library/", f"{DEFAULT_REGISTRY}/"):
            if text.startswith(prefix):
                return text[len(prefix) :]
        return text


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


def parse_reference(text: str) -> ImageReference:
    """Parse and normalise ``text``; raises ReferenceError_ on malformed input."""
    original = text
    if not text or text != text.strip():
        raise ReferenceError_(
            f"invalid image reference {original!r}: empty or surrounded by spaces"
        )
    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise ReferenceError_(
                f"invalid image reference {original!r}: digest must be sha256:<64 hex digits>"
            )
    tag: str | None = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG.match(tag):
            raise ReferenceError_(f"invalid image reference {original!r}: bad tag {tag!r}")
    parts = text.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry = first
        path = parts[1:]
        if not _HOST.match(registry):
            raise ReferenceError_(
                f"invalid image reference {original!r}: bad registry {registry!r}"
            )
    else:
        registry = DEFAULT_REGISTRY
        path = parts
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and len(path) == 1:
        path = ["library", *path]
    for component in path:
        if not _COMPONENT.match(component):
            hint = " (repository names must be lowercase)" if component.lower() != component else ""
            raise ReferenceError_(
                f"invalid image reference {original!r}: bad path component {component!r}{hint}"
            )
    repository = "/".join(path)
    if len(repository) > 255:
        raise ReferenceError_(f"invalid image reference {original!r}: name longer than 255")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(registry, repository, tag, digest)


def normalize(text: str) -> str:
    """The canonical string form: ``debian:stable`` → ``docker.io/library/debian:stable``."""
    return str(parse_reference(text))
