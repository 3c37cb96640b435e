"""``k3py image pull`` as a user runs it: through a mirror named by --registries-config, a
one-line summary on a pipe, rich progress bars on a terminal (a real pty), clear errors for a
malformed config. The registry is a real docker-registry on loopback."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_runtime_registry import Registry

from k3py.runtime.images import ImageStore

RUN_IMAGE_APP = (
    "import sys; from k3py.cli.image import image_app; sys.argv[0] = 'k3py image'; image_app()"
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, test_images: Path) -> Iterator[Registry]:
    started = Registry(tmp_path_factory.mktemp("registry"))
    try:
        started.push(f"docker-archive:{test_images / 'busybox-docker.tar'}", "team/app:v1")
        yield started
    finally:
        started.stop()


def mirror_config(tmp_path: Path, registry: Registry) -> Path:
    path = tmp_path / "registries.yaml"
    path.write_text(f"mirrors:\n  registry.invalid:\n    endpoint: ['http://{registry.host}']\n")
    return path


def image_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "K3PY_REGISTRIES_CONFIG"}
    return subprocess.run(
        [sys.executable, "-c", RUN_IMAGE_APP, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_pull_through_mirror_prints_summary_when_not_a_tty(
    registry: Registry, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    result = image_cli(
        "pull",
        "registry.invalid/team/app:v1",
        "--registries-config",
        str(mirror_config(tmp_path, registry)),
        "--data-dir",
        str(data),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pulled registry.invalid/team/app:v1 sha256:")
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one line, no bars or escape codes on a pipe
    image = ImageStore(data / "images").get("registry.invalid/team/app:v1")
    blobs = len(image.layers) + 1  # the layers and the config
    assert lines[0].startswith(f"registry.invalid/team/app:v1: {blobs} blobs, ")
    assert "\x1b" not in result.stderr


def test_malformed_registries_config_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "registries.yaml"
    bad.write_text("mirrors:\n  docker.io:\n    endpoint: http://not-a-list\n")
    result = image_cli(
        "pull", "busybox", "--registries-config", str(bad), "--data-dir", str(tmp_path)
    )
    assert result.returncode == 1
    assert result.stderr == (f"error: {bad}: mirrors.docker.io.endpoint must be a list of URLs\n")
    missing = image_cli(
        "pull",
        "busybox",
        "--registries-config",
        str(tmp_path / "nope"),
        "--data-dir",
        str(tmp_path),
    )
    assert missing.returncode == 1
    assert "registries config file does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_pull_on_a_terminal_shows_progress(registry: Registry, tmp_path: Path) -> None:
    data = tmp_path / "data"
    pid, master = pty.fork()
    if pid == 0:  # the child: stdout and stderr are the pty
        os.environ.pop("K3PY_REGISTRIES_CONFIG", None)
        os.environ["COLUMNS"] = "120"
        argv = [
            sys.executable,
            "-c",
            RUN_IMAGE_APP,
            "pull",
            "registry.invalid/team/app:v1",
            "--registries-config",
            str(mirror_config(tmp_path, registry)),
            "--data-dir",
            str(data),
        ]
        try:
            os.execv(sys.executable, argv)
        finally:
            os._exit(127)  # never run the rest of pytest in the child
    output = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "pulled registry.invalid/team/app:v1 sha256:" in text
    assert "Traceback" not in text
    # rich's bars: one row per blob, labelled by the digest prefix, with byte counts.
    image = ImageStore(data / "images").get("registry.invalid/team/app:v1")
    layer_prefix = image.layers[0]["digest"].split(":")[1][:12]
    assert layer_prefix in text
    assert "━" in text
    assert "blobs, " not in text  # the plain summary is for pipes only
