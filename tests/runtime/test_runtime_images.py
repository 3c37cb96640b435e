"""The image store: importing archives, unpacking layers with overlay whiteouts, refusing hostile input.

Hostile archives are built by hand; each test checks the import is refused with a clear message
and that nothing was written outside the store (a sentinel directory stays empty) nor kept in it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from imagebuilder import (
    Entry,
    busybox_layer,
    gzip_bytes,
    image_config,
    layer_tar,
    sha256,
    write_docker_archive,
    write_oci_archive,
)

from k3py.runtime.archive import import_archive, import_directory
from k3py.runtime.images import ImageError, ImageNotFound, ImageStore


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the store that hostile layers aim at; it must stay empty."""
    target = tmp_path / "outside"
    target.mkdir()
    return target


def store_contents(store: ImageStore) -> tuple[list[str], list[str], list[str], list[dict]]:
    index = json.loads((store.root / "index.json").read_text())["manifests"]
    return (
        sorted(os.listdir(store.blobs)),
        sorted(os.listdir(store.layers_dir)),
        sorted(os.listdir(store.tmp)),
        index,
    )


def test_import_docker_archive_names_and_unpacks(store: ImageStore, test_images: Path) -> None:
    [image] = import_archive(store, test_images / "busybox-docker.tar")
    assert image.names == ["docker.io/library/busybox:latest"]
    assert store.get("busybox").id == image.id
    assert store.get("busybox:latest").id == image.id
    assert store.get(image.id[7:19]).id == image.id  # an ID prefix, as docker accepts
    [layer_dir] = store.unpack(image)
    assert (layer_dir / "bin" / "busybox").stat().st_mode & 0o111
    assert (layer_dir / "bin" / "ls").resolve() == (layer_dir / "bin" / "busybox").resolve()
    assert (layer_dir / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert image.exec_config["Cmd"] == ["sh"]


def test_import_oci_archive_and_reimport_shares_layers(
    store: ImageStore, test_images: Path
) -> None:
    [oci] = import_archive(store, test_images / "busybox-oci.tar")
    [docker] = import_archive(store, test_images / "busybox-docker.tar")
    assert oci.diff_ids == docker.diff_ids
    assert len(os.listdir(store.layers_dir)) == 1  # same layer content, unpacked once
    # The name now points at the docker-archive's manifest; the OCI one stays indexed unnamed.
    assert store.get("busybox").manifest_digest == docker.manifest_digest
    # The store is an OCI layout skopeo itself can read.
    result = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{store.root}:docker.io/library/busybox:latest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config"]["digest"] == docker.id


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_archives_import(
    compression: str, store: ImageStore, test_images: Path, tmp_path: Path
) -> None:
    import gzip

    import zstandard

    data = (test_images / "busybox-docker.tar").read_bytes()
    packed = (
        gzip.compress(data) if compression == "gzip" else zstandard.ZstdCompressor().compress(data)
    )
    archive = tmp_path / f"busybox.tar.{compression}"
    archive.write_bytes(packed)
    [image] = import_archive(store, archive)
    assert image.names == ["docker.io/library/busybox:latest"]
    assert os.listdir(store.tmp) == []


def test_zstd_layers_and_name_override(store: ImageStore, tmp_path: Path) -> None:
    layer = layer_tar([Entry("hello.txt", data=b"hi\n")])
    archive = tmp_path / "z.tar"
    write_oci_archive(archive, [layer], "latest", compress="zstd")
    [image] = import_archive(store, archive, names=["localhost:5000/zed:1"])
    assert image.layers[0]["mediaType"].endswith("+zstd")
    assert store.get("localhost:5000/zed:1").id == image.id
    assert (store.unpack(image)[0] / "hello.txt").read_bytes() == b"hi\n"


def test_whiteouts_become_overlay_whiteouts(store: ImageStore, tmp_path: Path) -> None:
    lower = layer_tar(
        [
            Entry("a", tarfile.DIRTYPE, mode=0o755),
            Entry("a/gone", data=b"x"),
            Entry("a/kept", data=b"k"),
            Entry("d", tarfile.DIRTYPE, mode=0o755),
            Entry("d/old", data=b"o"),
        ]
    )
    upper = layer_tar(
        [
            Entry("a", tarfile.DIRTYPE, mode=0o755),
            Entry("a/.wh.gone"),
            Entry("d", tarfile.DIRTYPE, mode=0o755),
            Entry("d/.wh..wh..opq"),
            Entry("d/new", data=b"n"),
        ]
    )
    archive = tmp_path / "wh.tar"
    write_oci_archive(archive, [lower, upper], "docker.io/library/wh:1")
    [image] = import_archive(store, archive)
    low_dir, up_dir = store.unpack(image)
    whiteout = os.lstat(up_dir / "a" / "gone")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert os.getxattr(up_dir / "d", "trusted.overlay.opaque") == b"y"
    # Mounted as overlayfs (in a private mount namespace) the merged view hides what was deleted.
    merged, upper_dir, work = tmp_path / "m", tmp_path / "u", tmp_path / "w"
    for d in (merged, upper_dir, work):
        d.mkdir()
    script = (
        f"mount -t overlay overlay -o lowerdir={up_dir}:{low_dir},upperdir={upper_dir},workdir={work} {merged}"
        f" && ls {merged}/a {merged}/d"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{merged}/a:", "kept", f"{merged}/d:", "new"]


def test_hardlinks_inside_the_layer_work(store: ImageStore, tmp_path: Path) -> None:
    layer = layer_tar(
        [
            Entry("f", data=b"data"),
            Entry("g", tarfile.LNKTYPE, linkname="f"),
            Entry("./h", tarfile.LNKTYPE, linkname="./f"),
        ]
    )
    archive = tmp_path / "hl.tar"
    write_oci_archive(archive, [layer], "docker.io/library/hl:1")
    [image] = import_archive(store, archive)
    [d] = store.unpack(image)
    assert os.stat(d / "g").st_ino == os.stat(d / "f").st_ino == os.stat(d / "h").st_ino


def hostile_layers(outside: Path) -> dict[str, tuple[list[Entry], str]]:
    return {
        "absolute path": ([Entry(f"{outside}/evil", data=b"x")], "absolute path"),
        "dotdot": ([Entry("../../outside/evil", data=b"x")], r"'\.\.'"),
        "symlink escape": (
            [Entry("link", tarfile.SYMTYPE, linkname=str(outside)), Entry("link/evil", data=b"x")],
            "symlink",
        ),
        "relative symlink escape": (
            [
                Entry("sub", tarfile.DIRTYPE, mode=0o755),
                Entry("sub/up", tarfile.SYMTYPE, linkname="../../../../outside"),
                Entry("sub/up/evil", data=b"x"),
            ],
            "symlink",
        ),
        "symlink dir replaced then written": (
            [
                Entry("d", tarfile.DIRTYPE, mode=0o755),
                Entry("d", tarfile.SYMTYPE, linkname=str(outside)),
                Entry("d/evil", data=b"x"),
            ],
            "symlink",
        ),
        "hardlink absolute": (
            [Entry("h", tarfile.LNKTYPE, linkname="/etc/passwd")],
            "absolute path",
        ),
        "hardlink dotdot": ([Entry("h", tarfile.LNKTYPE, linkname="../../outside/x")], r"'\.\.'"),
        "hardlink through symlink": (
            [
                Entry("s", tarfile.SYMTYPE, linkname="/etc"),
                Entry("h", tarfile.LNKTYPE, linkname="s/passwd"),
            ],
            "symlink",
        ),
        "hardlink to missing": (
            [Entry("h", tarfile.LNKTYPE, linkname="nothere")],
            "not in this layer",
        ),
        "whiteout outside": ([Entry("../.wh.outside")], r"'\.\.'"),
        "whiteout of dotdot": ([Entry("a", tarfile.DIRTYPE), Entry("a/.wh..."[:-1])], "whiteout"),
    }


@pytest.mark.parametrize("case", list(hostile_layers(Path("/x"))))
def test_hostile_layers_are_refused_and_leave_nothing(
    case: str, store: ImageStore, outside: Path, tmp_path: Path
) -> None:
    entries, message = hostile_layers(outside)[case]
    archive = tmp_path / "hostile.tar"
    write_oci_archive(archive, [layer_tar(entries)], "docker.io/library/hostile:1")
    before = store_contents(store)
    with pytest.raises(ImageError, match=message):
        import_archive(store, archive)
    assert os.listdir(outside) == []
    assert store_contents(store) == before
    with pytest.raises(ImageNotFound):
        store.get("hostile:1")


def test_hostile_docker_archive_is_refused(
    store: ImageStore, outside: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "hostile-docker.tar"
    layer = layer_tar(
        [Entry("link", tarfile.SYMTYPE, linkname=str(outside)), Entry("link/evil", data=b"x")]
    )
    write_docker_archive(archive, [layer], ["hostile:1"])
    with pytest.raises(ImageError, match="symlink"):
        import_archive(store, archive)
    assert os.listdir(outside) == []
    assert store_contents(store)[:3] == ([], [], [])


def test_blob_digest_mismatch_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layer = gzip_bytes(layer_tar([Entry("f", data=b"x")]))
    archive = tmp_path / "mismatch.tar"
    # A blob stored under a name that is not its content's digest.
    write_oci_archive(
        archive, [], "docker.io/library/bad:1", extra_blobs={"sha256:" + "0" * 64: layer}
    )
    with pytest.raises(ImageError, match="digest mismatch"):
        import_archive(store, archive)
    assert store_contents(store)[:3] == ([], [], [])


def test_diff_id_mismatch_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layer = layer_tar([Entry("f", data=b"x")])
    archive = tmp_path / "diffid.tar"
    config = image_config([sha256(b"something else")])
    write_oci_archive(archive, [layer], "docker.io/library/bad:1", config=config)
    with pytest.raises(ImageError, match="image config says"):
        import_archive(store, archive)
    assert store_contents(store)[:3] == ([], [], [])


def test_unknown_media_type_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layer = layer_tar([Entry("f", data=b"x")])
    config = image_config([sha256(layer)])
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": "application/x-mystery", "digest": sha256(layer), "size": len(layer)}
        ],
    }
    archive = tmp_path / "media.tar"
    write_oci_archive(
        archive,
        [layer],
        "docker.io/library/bad:1",
        compress="none",
        config=config,
        manifest_override=manifest,
    )
    with pytest.raises(ImageError, match="unsupported layer media type"):
        import_archive(store, archive)
    assert store_contents(store)[:3] == ([], [], [])


def test_truncated_compressed_layer_is_refused(store: ImageStore, tmp_path: Path) -> None:
    full = busybox_layer()
    truncated = gzip_bytes(full)[:50_000]
    config = image_config([sha256(full)])
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256(truncated),
                "size": len(truncated),
            }
        ],
    }
    archive = tmp_path / "trunc.tar"
    write_oci_archive(
        archive,
        [],
        "docker.io/library/bad:1",
        config=config,
        manifest_override=manifest,
        extra_blobs={sha256(truncated): truncated},
    )
    with pytest.raises(ImageError, match=r"truncated|corrupt"):
        import_archive(store, archive)
    assert store_contents(store)[:3] == ([], [], [])


def test_truncated_archive_and_garbage_are_refused(
    store: ImageStore, test_images: Path, tmp_path: Path
) -> None:
    data = (test_images / "busybox-oci.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError):
        import_archive(store, cut)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageError, match="not a readable image archive"):
        import_archive(store, garbage)
    assert store_contents(store)[:3] == ([], [], [])


def test_remove_and_prune(store: ImageStore, test_images: Path) -> None:
    [image] = import_archive(store, test_images / "busybox-docker.tar")
    store.tag("localhost/other:1", image.manifest_digest)
    assert store.remove("busybox") == ["docker.io/library/busybox:latest"]
    assert store.get("localhost/other:1").id == image.id
    assert store.prune() == (0, 0)  # still named: nothing to free
    store.remove("localhost/other:1")
    removed, freed = store.prune()
    assert removed == 4 and freed > 1_000_000  # manifest, config, layer blob, layer dir
    assert store_contents(store)[:2] == ([], [])
    with pytest.raises(ImageNotFound, match="busybox:latest"):
        store.get("busybox")


def test_airgap_directory_import(store: ImageStore, test_images: Path, tmp_path: Path) -> None:
    import shutil

    airgap = tmp_path / "agent-images"
    airgap.mkdir()
    shutil.copy(test_images / "busybox-oci.tar", airgap / "01-busybox.tar")
    layer = layer_tar([Entry("hello", data=b"x")])
    write_docker_archive(airgap / "02-hello.tar", [layer], ["localhost/hello:1"])
    (airgap / "README.txt").write_text("not an image")
    images = import_directory(store, airgap)
    assert [i.names for i in images] == [
        ["docker.io/library/busybox:latest"],
        ["localhost/hello:1"],
    ]
    (airgap / "03-bad.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(ImageError, match=r"03-bad\.tar"):
        import_directory(store, airgap)


DEVICE_LAYER = [
    Entry("dev", tarfile.DIRTYPE, mode=0o755),
    Entry("dev/console", tarfile.CHRTYPE, mode=0o600, devmajor=5, devminor=1),
    Entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
    Entry("dev/loop0", tarfile.BLKTYPE, mode=0o660, gid=6, devmajor=7, devminor=0),
    Entry("etc", tarfile.DIRTYPE, mode=0o755),
    Entry("etc/hostname", data=b"debootstrapped\n"),
]


def test_device_nodes_in_a_layer_are_created(store: ImageStore, tmp_path: Path) -> None:
    """debootstrap leaves device nodes in its root; containerd creates them, and so do we (the
    container's device cgroup decides what opening them allows; the store is root's alone)."""
    archive = tmp_path / "devices.tar"
    write_oci_archive(archive, [layer_tar(DEVICE_LAYER)], "docker.io/library/devices:1")
    [image] = import_archive(store, archive)
    layer = store.layer_dir(image.diff_ids[0])
    found = {}
    for name in ("console", "null", "loop0"):
        st = os.lstat(layer / "dev" / name)
        found[name] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), os.major(st.st_rdev),
                       os.minor(st.st_rdev), st.st_gid)  # fmt: skip
    assert found == {
        "console": (stat.S_IFCHR, 0o600, 5, 1, 0),
        "null": (stat.S_IFCHR, 0o666, 1, 3, 0),
        "loop0": (stat.S_IFBLK, 0o660, 7, 0, 6),
    }
    assert (layer / "etc" / "hostname").read_text() == "debootstrapped\n"
    # Nothing of the store is reachable by other host users: they could open these nodes.
    for directory in (store.root, store.layers_dir, store.blobs, store.tmp):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_device_nodes_are_skipped_without_cap_mknod(tmp_path: Path) -> None:
    """A runtime that may not create device nodes imports the image without them and says so."""
    archive = tmp_path / "devices.tar"
    write_oci_archive(archive, [layer_tar(DEVICE_LAYER)], "docker.io/library/devices:1")
    script = (
        "import sys; from pathlib import Path; from k3py.runtime.archive import import_archive;"
        "from k3py.runtime.images import ImageStore;"
        "[image] = import_archive(ImageStore(Path(sys.argv[1])), Path(sys.argv[2]));"
        "print(image.diff_ids[0])"
    )
    result = subprocess.run(
        ["setpriv", "--bounding-set=-mknod", "--inh-caps=-mknod", sys.executable, "-c", script,
         str(tmp_path / "store"), str(archive)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "skipping device node 'dev/console' (5:1)" in result.stderr
    assert "no permission to create device nodes (CAP_MKNOD)" in result.stderr
    store = ImageStore(tmp_path / "store")
    layer = store.layer_dir(result.stdout.strip())
    assert sorted(os.listdir(layer / "dev")) == []
    assert (layer / "etc" / "hostname").read_text() == "debootstrapped\n"
    assert store.get("devices:1").diff_ids == [result.stdout.strip()]
