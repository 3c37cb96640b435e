"""The import budget (issue #10): a layer that decompresses past the budget is refused with a
clear error before the disk fills, and the store is left exactly as it was.

Attacks: a gzip bomb (a few hundred KiB expanding to many MiB), a sparse tar entry (a few KiB
declaring a GiB of file), many layers that together pass the per-image budget, a zstd bomb of
a whole archive, and the same through every way in: ``import_archive``, ``k3py image import``,
the airgap folder and a pull from a real registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from imagebuilder import Entry, layer_tar, write_docker_archive, write_oci_archive
from test_runtime_registry import Registry

from k3py.runtime.archive import import_archive, import_new_archives
from k3py.runtime.images import ImageStore, ImageTooLarge, ImportBudget, parse_size
from k3py.runtime.registry import pull_image

MiB = 1 << 20
REPO = Path(__file__).resolve().parents[2]
SMALL = ImportBudget(max_layer_bytes=32 * MiB, max_image_bytes=48 * MiB)


def store_state(store: ImageStore) -> dict[str, object]:
    """Everything an import could leave behind: blobs, layer dirs, temp files, the index."""
    return {
        "blobs": sorted(os.listdir(store.blobs)),
        "layers": sorted(os.listdir(store.layers_dir)),
        "tmp": sorted(os.listdir(store.tmp)),
        "index": json.loads((store.root / "index.json").read_text()),
    }


def zeros_layer(size: int, name: str = "zeros") -> bytes:
    """An uncompressed layer holding one file of ``size`` zero bytes (it compresses ~1000:1)."""
    return layer_tar([Entry(name, data=bytes(size))])


def gzip_bomb_archive(path: Path, size: int = 96 * MiB) -> Path:
    write_oci_archive(path, [zeros_layer(size)], "docker.io/library/bomb:1")
    assert path.stat().st_size < size // 200  # small on disk, huge once decompressed
    return path


@pytest.fixture
def base_store(tmp_path: Path, test_images: Path) -> ImageStore:
    """A store with busybox in it, under the small budget: what a refused import must not change."""
    store = ImageStore(tmp_path / "store", budget=SMALL)
    import_archive(store, test_images / "busybox-oci.tar")
    return store


def test_gzip_bomb_layer_is_refused_and_leaves_nothing(base_store: ImageStore, tmp_path: Path) -> None:
    archive = gzip_bomb_archive(tmp_path / "bomb.tar")
    before = store_state(base_store)
    with pytest.raises(ImageTooLarge, match=r"more than the budget of 32 MiB per layer.*; refused"):
        import_archive(base_store, archive)
    assert store_state(base_store) == before
    # The same bomb as padding after the tar's end: counted as the stream decompresses.
    padded = layer_tar([Entry("small", data=b"x")]) + bytes(96 * MiB)
    write_oci_archive(tmp_path / "padded.tar", [padded], "docker.io/library/padded:1")
    with pytest.raises(ImageTooLarge, match=r"layer decompresses to more than the budget of 32 MiB per layer; refused"):
        import_archive(base_store, tmp_path / "padded.tar")
    assert store_state(base_store) == before
    assert [image.names for image in base_store.list()] == [["docker.io/library/busybox:latest"]]
    # Within the budget the same kind of layer is fine.
    write_oci_archive(tmp_path / "ok.tar", [zeros_layer(8 * MiB)], "docker.io/library/ok:1")
    import_archive(base_store, tmp_path / "ok.tar")


def test_sparse_entry_is_counted_at_its_declared_size(base_store: ImageStore, tmp_path: Path) -> None:
    """A sparse tar entry carries a few KiB but declares a GiB: the bytes it would write count."""
    sparse = tmp_path / "root" / "sparse"
    sparse.parent.mkdir()
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)
        f.write(b"data at the start")
    layer = tmp_path / "layer.tar"
    subprocess.run(["tar", "--format=gnu", "--sparse", "-cf", str(layer), "-C", str(sparse.parent), "sparse"],
                   check=True, timeout=60)  # fmt: skip
    assert layer.stat().st_size < MiB
    write_oci_archive(tmp_path / "sparse.tar", [layer.read_bytes()], "docker.io/library/sparse:1",
                      compress="none")  # fmt: skip
    before = store_state(base_store)
    with pytest.raises(ImageTooLarge, match=r"expands to more than the budget of 32 MiB per layer \(at 'sparse'\)"):
        import_archive(base_store, tmp_path / "sparse.tar")
    assert store_state(base_store) == before


def test_layers_past_the_image_budget_are_refused_together(base_store: ImageStore, tmp_path: Path) -> None:
    layers = [zeros_layer(20 * MiB, name=f"part-{n}") for n in range(3)]  # 60 MiB > 48 MiB
    write_oci_archive(tmp_path / "big.tar", layers, "docker.io/library/big:1")
    before = store_state(base_store)
    with pytest.raises(ImageTooLarge, match=r"more than the budget of 48 MiB per image"):
        import_archive(base_store, tmp_path / "big.tar")
    assert store_state(base_store) == before  # the two layers unpacked before are gone too


def test_zstd_archive_bomb_is_refused(base_store: ImageStore, tmp_path: Path) -> None:
    import zstandard

    plain = tmp_path / "plain.tar"
    write_docker_archive(plain, [zeros_layer(64 * MiB)], ["bomb:zstd"])
    archive = tmp_path / "bomb.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    before = store_state(base_store)
    with pytest.raises(ImageTooLarge, match=r"bomb\.tar\.zst decompresses to more than the budget of 48 MiB"):
        import_archive(base_store, archive)
    assert store_state(base_store) == before


def test_uncompressed_layer_blob_past_the_budget_is_refused_before_it_is_copied(
    base_store: ImageStore, tmp_path: Path
) -> None:
    """A docker archive's layer.tar (uncompressed) larger than a layer may be: refused by the
    size its tar header declares, before anything is copied into the store."""
    write_docker_archive(tmp_path / "docker.tar", [zeros_layer(40 * MiB)], ["big:plain"])
    before = store_state(base_store)
    with pytest.raises(ImageTooLarge, match=r"is 40.0 MiB, more than the budget of 32 MiB per layer"):
        import_archive(base_store, tmp_path / "docker.tar")
    assert store_state(base_store) == before


def k3py(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "k3py", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, **(env or {})})  # fmt: skip


def test_cli_import_and_airgap_refuse_the_bomb(tmp_path: Path, test_images: Path) -> None:
    data = tmp_path / "runtime"
    archive = gzip_bomb_archive(tmp_path / "bomb.tar")
    assert k3py("image", "import", "--data-dir", str(data), str(test_images / "busybox-oci.tar")).returncode == 0
    store = ImageStore(data / "images")
    before = store_state(store)
    result = k3py("image", "import", "--max-layer-size", "32Mi", "--data-dir", str(data), str(archive))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {archive}: layer sha256:")
    assert "more than the budget of 32 MiB per layer (at 'zeros'); refused" in result.stderr
    assert len(result.stderr.splitlines()) == 1  # one line, no traceback
    assert store_state(store) == before
    # The environment sets the budget for the agent's store (and the CLI) too.
    env = {"K3PY_IMAGE_MAX_LAYER_SIZE": "16Mi"}
    result = k3py("image", "import", "--data-dir", str(data), str(archive), env=env)
    assert result.returncode == 1 and "budget of 16 MiB per layer" in result.stderr
    assert store_state(store) == before
    result = k3py("image", "import", "--max-layer-size", "lots", "--data-dir", str(data), str(archive))
    assert result.returncode == 1 and "invalid size 'lots'" in result.stderr
    # The airgap folder: the bomb is refused (and tried again next start), the rest imported.
    airgap = tmp_path / "airgap"
    airgap.mkdir()
    os.link(archive, airgap / "01-bomb.tar")
    write_oci_archive(airgap / "02-small.tar", [zeros_layer(MiB)], "docker.io/library/small:1")
    imported, refused = import_new_archives(ImageStore(data / "images", budget=SMALL), airgap)
    assert [path.name for path, _ in imported] == ["02-small.tar"]
    assert [(path.name, "budget of 32 MiB per layer" in why) for path, why in refused] == [("01-bomb.tar", True)]
    after = store_state(store)
    assert after["tmp"] == [] and len(after["layers"]) == len(before["layers"]) + 1  # type: ignore[arg-type]


def test_pull_of_a_bomb_is_refused_and_leaves_nothing(
    registries: Callable[..., Registry], base_store: ImageStore, tmp_path: Path
) -> None:
    registry = registries()
    registry.push(f"oci-archive:{gzip_bomb_archive(tmp_path / 'bomb.tar')}", "team/bomb:1")
    before = store_state(base_store)
    with pytest.raises(ImageTooLarge, match=r"more than the budget of 32 MiB per layer"):
        pull_image(base_store, f"{registry.host}/team/bomb:1")
    assert store_state(base_store) == before  # the config and layer blobs it fetched are gone
    # A layer blob the manifest announces larger than the budget is not even downloaded.
    noise = layer_tar([Entry("noise", data=os.urandom(3 * MiB))])
    write_oci_archive(tmp_path / "noise.tar", [noise], "docker.io/library/noise:1")
    registry.push(f"oci-archive:{tmp_path / 'noise.tar'}", "team/noise:1")
    tight = ImageStore(base_store.root, budget=ImportBudget(max_layer_bytes=2 * MiB, max_image_bytes=4 * MiB))
    with pytest.raises(ImageTooLarge, match=r"is 3.0 MiB, more than the budget of 2 MiB per layer"):
        pull_image(tight, f"{registry.host}/team/noise:1")
    assert store_state(base_store) == before


def test_sizes_parse_like_quantities() -> None:
    assert [parse_size(s) for s in ("512Mi", "8Gi", "10G", "1048576", "1.5Gi")] == [
        512 * MiB, 8 << 30, 10 * 1000**3, MiB, 3 << 29,
    ]  # fmt: skip
    for bad in ("", "-1Gi", "1Zi", "Gi", "0"):
        with pytest.raises(ValueError, match="invalid size"):
            parse_size(bad)
    assert ImportBudget.from_env({}) == ImportBudget(8 << 30, 16 << 30)
    assert ImportBudget.from_env({"K3PY_IMAGE_MAX_SIZE": "1Gi"}).max_image_bytes == 1 << 30
