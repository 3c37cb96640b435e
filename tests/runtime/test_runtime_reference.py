"""Image references normalise exactly as Docker normalises them."""

import pytest

from k3py.runtime.reference import ReferenceError_, normalize, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("debian:stable", "docker.io/library/debian:stable"),
        ("library/debian:12", "docker.io/library/debian:12"),
        ("bitnami/redis", "docker.io/bitnami/redis:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app:v1", "localhost:5000/app:v1"),
        ("127.0.0.1:35001/team/app:v1.2-rc_3", "127.0.0.1:35001/team/app:v1.2-rc_3"),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"quay.io/a/b:t@{DIGEST}", f"quay.io/a/b:t@{DIGEST}"),
        ("my.registry:443/a__b/c-d", "my.registry:443/a__b/c-d:latest"),
    ],
)
def test_normalises_like_docker(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_parts_and_familiar_form() -> None:
    ref = parse_reference("localhost:5000/team/app:v1")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "localhost:5000",
        "team/app",
        "v1",
        None,
    )
    assert parse_reference("busybox").familiar == "busybox:latest"
    assert parse_reference("bitnami/redis:7").familiar == "bitnami/redis:7"
    assert parse_reference(f"busybox@{DIGEST}").tag is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("busybox:", "bad tag"),
        ("busybox:-x", "bad tag"),
        ("busybox@sha256:1234", "digest"),
        ("busybox@md5:" + "a" * 32, "digest"),
        ("a//b", "bad path component"),
        ("a/../b", "bad path component"),
        (" busybox", "spaces"),
        ("reg.io:port/x", "bad"),
    ],
)
def test_malformed_references_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ReferenceError_, match=message):
        parse_reference(text)
