"""``k3py image`` as a user runs it: a real subprocess against a store in a temp dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUN_IMAGE_APP = (
    "import sys; from k3py.cli.image import image_app; sys.argv[0] = 'k3py image'; image_app()"
)


def k3py_image(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_IMAGE_APP, *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_ls_rm_prune(tmp_path: Path, test_images: Path) -> None:
    data = tmp_path / "data"
    result = k3py_image(data, "import", str(test_images / "busybox-docker.tar"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported docker.io/library/busybox:latest sha256:")
    result = k3py_image(
        data,
        "import",
        str(test_images / "busybox-oci.tar"),
        "--name",
        "localhost:5000/tools/bb:1.0",
    )
    assert result.returncode == 0, result.stderr
    listing = k3py_image(data, "ls").stdout.splitlines()
    assert listing[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    rows = sorted(line.split()[:2] for line in listing[1:])
    assert rows == [["docker.io/library/busybox", "latest"], ["localhost:5000/tools/bb", "1.0"]]
    assert all(line.split()[3].endswith("MB") for line in listing[1:])
    assert len(k3py_image(data, "ls", "-q").stdout.split()) == 2
    result = k3py_image(data, "rm", "busybox")
    assert (result.returncode, result.stdout) == (0, "untagged docker.io/library/busybox:latest\n")
    result = k3py_image(data, "prune")
    assert result.returncode == 0 and result.stdout.startswith(
        "removed 2 files"
    )  # its manifest + config
    result = k3py_image(data, "rm", "localhost:5000/tools/bb:1.0")
    assert result.returncode == 0
    assert k3py_image(data, "prune").stdout.startswith(
        "removed 4 files"
    )  # manifest, config, layer, layer dir
    assert k3py_image(data, "ls").stdout.splitlines()[1:] == []


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"nope" * 100)
    for args, message in (
        (("import", str(tmp_path / "missing.tar")), "no such file"),
        (("import", str(garbage)), "not a readable image archive"),
        (("rm", "nosuch:1"), "not found"),
        (("pull", "BAD/Ref"), "invalid image reference"),
        (("pull", "127.0.0.1:1/x:1", "--username", "u"), "go together"),
    ):
        result = k3py_image(data, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
