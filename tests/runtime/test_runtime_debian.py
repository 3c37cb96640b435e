"""A real distribution image: Debian stable from debootstrap, run by the runtime (dynamic
binaries, users from /etc/passwd, dpkg's hard links and many files in one layer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_runtime_containers import make_runtime, remove_and_check, tear_down

from k3py.runtime.archive import import_archive
from k3py.runtime.containers import ContainerRuntime
from k3py.runtime.spec import ContainerSpec


@pytest.fixture(scope="module")
def debian(
    tmp_path_factory: pytest.TempPathFactory, test_images: Path, debian_image: Path
) -> Iterator[ContainerRuntime]:
    rt = make_runtime(tmp_path_factory.mktemp("debian"), test_images)
    [image] = import_archive(rt.images, debian_image)
    assert image.names == ["docker.io/library/debian:stable"]
    yield rt
    assert tear_down(rt) == []


def run(rt: ContainerRuntime, script: str, **spec) -> tuple[int, str]:
    cid = rt.run(
        ContainerSpec(name="deb", image="debian:stable", command=["bash", "-c", script], **spec)
    )
    status = rt.wait_container(cid, 60)
    lines = [line.split(" ", 3)[3] for line in Path(status.log_path).read_text().splitlines()]
    remove_and_check(rt, cid)
    return status.exit_code, "\n".join(lines)


def test_debian_runs_its_own_dynamic_binaries(debian: ContainerRuntime) -> None:
    code, out = run(
        debian,
        '. /etc/os-release; echo "$ID $VERSION_ID"; cat /etc/debian_version; ls /proc/1/exe -l >/dev/null && echo ok',
    )
    assert code == 0
    first, version, ok = out.splitlines()
    assert first.startswith("debian ") and version.split(".")[0] == first.split()[1] and ok == "ok"


def test_debian_user_from_passwd_and_dpkg(debian: ContainerRuntime) -> None:
    code, out = run(
        debian, "id -un; id -u; dpkg-query -W -f '${Package} ${Status}\\n' bash", user="nobody"
    )
    assert code == 0
    assert out.splitlines() == ["nobody", "65534", "bash install ok installed"]


def test_debian_exec_and_read_only_root(debian: ContainerRuntime) -> None:
    cid = debian.run(
        ContainerSpec(
            name="deb-ro", image="debian:stable", command=["sleep", "60"], readonly_rootfs=True
        )
    )
    result = debian.exec_sync(
        cid, ["bash", "-c", "touch /usr/x 2>&1; echo $?; apt-get --version | head -1"]
    )
    out = result.stdout.decode().splitlines()
    assert "Read-only file system" in out[0] and out[1] == "1" and out[2].startswith("apt ")
    remove_and_check(debian, cid)
