"""Local files and secrets: what another user of the host can see of a running k3py.

- A started server's data dir and every folder under it are 0700, every file in it 0600 (keys,
  token, database), and so is the admin kubeconfig; an agent's data dir and its keys too.
- The join token and the datastore endpoint (which may hold a password) can be given without
  putting them on the command line — ``K3PY_TOKEN``, ``--token-file``, ``K3PY_DATASTORE_ENDPOINT``
  — and then appear in no ``/proc/<pid>/cmdline`` of the cluster's processes (what ``ps`` shows
  every user), while they work.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster import TestCluster
from tests.kubelet.conftest import teardown_runtime

SECRET_TOKEN = "k3py-test-token-that-must-not-leak-0123456789"


def _group_of(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
    return pids


def _cmdlines(pgid: int) -> list[str]:
    """The command lines of every process of a process group, as ``ps`` shows them."""
    lines = []
    for pid in _group_of(pgid):
        with contextlib.suppress(OSError):
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


def _assert_private_tree(root: Path) -> None:
    """``root`` and every folder under it 0700, every file 0600 (or stricter)."""
    assert stat.S_IMODE(root.stat().st_mode) == 0o700, f"{root} is {oct(root.stat().st_mode)}"
    loose = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            mode = stat.S_IMODE(os.lstat(Path(dirpath) / name).st_mode)
            if mode != 0o700:
                loose.append(f"{Path(dirpath) / name} {oct(mode)}")
        for name in filenames:
            mode = stat.S_IMODE(os.lstat(Path(dirpath) / name).st_mode)
            if mode & 0o077:
                loose.append(f"{Path(dirpath) / name} {oct(mode)}")
    assert not loose, "readable by others:\n" + "\n".join(loose)


def _bearer_works(cluster: TestCluster, token: str) -> bool:
    status, _, _ = cluster.request(
        "GET", "/api/v1/namespaces/default", headers={"Authorization": f"Bearer {token}"}, client_cert=False
    )
    return status == 200


def test_a_started_server_keeps_its_files_private(make_cluster: Callable[..., TestCluster]) -> None:
    cluster = make_cluster()
    _assert_private_tree(cluster.data_dir)
    assert stat.S_IMODE((cluster.data_dir / "token").stat().st_mode) == 0o600
    for key in (cluster.data_dir / "tls").glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cluster.kubeconfig.stat().st_mode) == 0o600
    # A data dir left open by an older k3py is tightened at the next start.
    cluster.data_dir.chmod(0o755)
    (cluster.data_dir / "token").chmod(0o644)
    cluster.restart()
    _assert_private_tree(cluster.data_dir)


def test_the_token_from_the_environment_never_reaches_argv(
    make_cluster: Callable[..., TestCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K3PY_TOKEN", SECRET_TOKEN)
    cluster = make_cluster()
    monkeypatch.delenv("K3PY_TOKEN")
    assert cluster.process is not None
    lines = _cmdlines(cluster.process.pid)
    assert any(" k3py server " in line for line in lines), lines
    assert not any(SECRET_TOKEN in line for line in lines)
    assert _bearer_works(cluster, SECRET_TOKEN)
    assert not _bearer_works(cluster, SECRET_TOKEN + "x")
    assert (cluster.data_dir / "token").read_text().strip() == SECRET_TOKEN


def test_the_token_from_a_file(make_cluster: Callable[..., TestCluster], tmp_path: Path) -> None:
    token_file = tmp_path / "token-file"
    token_file.write_text(SECRET_TOKEN + "\n")
    token_file.chmod(0o600)
    cluster = make_cluster("--token-file", str(token_file))
    assert cluster.process is not None
    assert not any(SECRET_TOKEN in line for line in _cmdlines(cluster.process.pid))
    assert _bearer_works(cluster, SECRET_TOKEN)


def test_a_missing_or_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, message in ((tmp_path / "nope", "cannot read --token-file"), (empty, "is empty")):
        result = subprocess.run(
            [sys.executable, "-m", "k3py", "agent", "--server", "https://127.0.0.1:1", "--token-file", str(path)],
            capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "K3PY_TOKEN"},
        )  # fmt: skip
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "k3py", "agent", "--server", "https://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "K3PY_TOKEN"},
    )  # fmt: skip
    assert result.returncode == 2 and "the join token is missing" in result.stderr, result.stderr


def test_the_datastore_endpoint_from_the_environment(
    make_cluster: Callable[..., TestCluster], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    database = tmp_path / "elsewhere" / "cluster.db"
    endpoint = f"sqlite://{database}"
    monkeypatch.setenv("K3PY_DATASTORE_ENDPOINT", endpoint)
    cluster = make_cluster()
    monkeypatch.delenv("K3PY_DATASTORE_ENDPOINT")
    cluster.kubectl("create", "configmap", "stored-elsewhere", "--from-literal=k=v")
    assert database.exists() and not (cluster.data_dir / "db" / "state.db").exists()
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert cluster.process is not None
    assert not any(str(database) in line for line in _cmdlines(cluster.process.pid))
    # The same database after a restart (now from the flag): the object is still there.
    cluster.server_args += ["--datastore-endpoint", endpoint]
    cluster.restart()
    assert cluster.kubectl_json("get", "configmap", "stored-elsewhere")["data"] == {"k": "v"}


# -- a joining agent --------------------------------------------------------------------------


@pytest.fixture
def joined(tmp_path: Path) -> Iterator[Callable[[list[str], dict[str, str]], tuple[TestCluster, subprocess.Popen[bytes], Path]]]:
    started: list[tuple[TestCluster, subprocess.Popen[bytes], Path]] = []

    def _join(args: list[str], env: dict[str, str]) -> tuple[TestCluster, subprocess.Popen[bytes], Path]:
        base = tmp_path / f"join{len(started)}"
        cluster = TestCluster(base, ["--disable-agent", "--token", SECRET_TOKEN])
        cluster.__enter__()
        data_dir = base / "agent"
        assert cluster.host is not None
        argv = [
            "nsenter", f"--net=/run/netns/{cluster.host.name}", "unshare", "--mount", "--propagation", "private",
            sys.executable, "-m", "k3py", "agent", "--server", f"https://127.0.0.1:{cluster.port}",
            "--data-dir", str(data_dir), "--node-name", "joiner", *args,
        ]  # fmt: skip
        with open(base / "agent.log", "ab") as log:
            agent = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **env},
            )  # fmt: skip
        started.append((cluster, agent, data_dir))
        return cluster, agent, data_dir

    yield _join
    for cluster, agent, data_dir in reversed(started):
        if agent.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.pid, signal.SIGTERM)
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait(timeout=15)
        try:
            teardown_runtime(data_dir)
        finally:
            cluster.stop()


def _node_ready(cluster: TestCluster, agent: subprocess.Popen[bytes]) -> None:
    def ready() -> bool:
        assert agent.poll() is None, f"the agent exited:\n{(cluster.base_dir / 'agent.log').read_text()}"
        result = cluster.kubectl("get", "node", "joiner", "-o", "json", check=False)
        if result.returncode != 0:
            return False
        conditions = {c["type"]: c["status"] for c in (json.loads(result.stdout).get("status") or {}).get("conditions", [])}
        return conditions.get("Ready") == "True"

    cluster.wait_for(ready, timeout=60, interval=0.2, what="the joining node Ready")


@pytest.mark.parametrize("how", ["env", "file"])
def test_an_agent_joins_without_the_token_in_argv(joined, tmp_path: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    if how == "env":
        args, env = [], {"K3PY_TOKEN": SECRET_TOKEN}
    else:
        token_file = tmp_path / "join-token"
        token_file.write_text(SECRET_TOKEN + "\n")
        args, env = ["--token-file", str(token_file)], {}
    cluster, agent, data_dir = joined(args, env)
    _node_ready(cluster, agent)
    lines = _cmdlines(agent.pid)
    assert any(" k3py agent " in line for line in lines), lines
    assert not any(SECRET_TOKEN in line for line in lines)
    # Its data dir and keys are private too.
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "tls").stat().st_mode) == 0o700
    for key in (data_dir / "tls").glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_bad_datastore_endpoint_never_echoes_its_password(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "k3py", "server", "--data-dir", str(tmp_path / "server"),
         "--write-kubeconfig", str(tmp_path / "k.yaml"), "--disable-agent"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "K3PY_DATASTORE_ENDPOINT": "mysql://k3py:hunter2-secret@db.invalid/k3py"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "unsupported datastore endpoint scheme 'mysql'" in result.stderr
    assert "hunter2-secret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
