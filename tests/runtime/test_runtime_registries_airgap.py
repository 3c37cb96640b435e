"""The agent's airgap import at start: archives in <agent data dir>/images land in the runtime's
store, each logged; a restart imports nothing again; a broken archive is logged, not fatal."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from k3py.agent.node_agent import AIRGAP_IMAGES_DIR, import_airgap_images
from k3py.runtime.containers import ContainerRuntime


def test_airgap_folder_imported_once(
    tmp_path: Path, test_images: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent_dir = tmp_path / "agent"
    airgap = agent_dir / AIRGAP_IMAGES_DIR
    airgap.mkdir(parents=True)
    shutil.copy(test_images / "busybox-docker.tar", airgap / "busybox.tar")
    (airgap / "broken.tar.gz").write_bytes(b"not an archive")
    (airgap / "README.txt").write_text("not an archive name: ignored")
    # The agent builds its runtime exactly like this (data_dir / "runtime"); nothing starts.
    runtime = ContainerRuntime(agent_dir / "runtime")
    with pytest.raises(Exception, match="not found"):
        runtime.images.get("busybox:latest")

    caplog.set_level(logging.INFO, logger="k3py.agent")
    assert import_airgap_images(runtime, airgap) == 1
    image = runtime.images.get("busybox:latest")
    assert (runtime.images.unpack(image)[0] / "bin").is_dir()
    messages = [r.getMessage() for r in caplog.records]
    assert (
        f"airgap: imported docker.io/library/busybox:latest from {airgap / 'busybox.tar'}"
        in messages
    )
    assert any(
        m.startswith(f"airgap: cannot import {airgap / 'broken.tar.gz'}: ") for m in messages
    )

    # A restart: the archive is known by digest, so nothing is imported (the broken one is
    # retried and refused again). A copy under another name has the same digest: skipped too.
    caplog.clear()
    shutil.copy(airgap / "busybox.tar", airgap / "busybox-copy.tar")
    assert import_airgap_images(runtime, airgap) == 0
    assert not any(r.getMessage().startswith("airgap: imported") for r in caplog.records)

    # A changed archive (new content) is imported again.
    runtime.images.remove("busybox:latest")
    shutil.copy(test_images / "busybox-oci.tar", airgap / "busybox.tar")
    os.utime(airgap / "busybox.tar", ns=(1, 1))
    assert import_airgap_images(runtime, airgap) == 1


def test_missing_airgap_folder_is_nothing_to_do(tmp_path: Path) -> None:
    runtime = ContainerRuntime(tmp_path / "runtime")
    assert import_airgap_images(runtime, tmp_path / "no-such-dir") == 0
