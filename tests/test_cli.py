"""The CLI as a user runs it: a real subprocess of the installed console script."""

import subprocess
import sys


def run_k3py(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k3py", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_commands() -> None:
    result = run_k3py("--help")
    assert result.returncode == 0, result.stderr
    for command in ("server", "agent", "version"):
        assert command in result.stdout


def test_version_names_kubernetes_release() -> None:
    result = run_k3py("version")
    assert result.returncode == 0
    assert "Kubernetes v1.32" in result.stdout


def test_agent_without_server_flag_is_a_usage_error() -> None:
    result = run_k3py("agent")
    assert result.returncode == 2
    assert "--server" in result.stderr


def test_image_commands_are_mounted() -> None:
    result = run_k3py("image", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("import", "ls", "pull", "rm", "prune"):
        assert command in result.stdout


def test_malformed_registries_config_stops_the_agent_with_one_line(tmp_path) -> None:
    bad = tmp_path / "registries.yaml"
    bad.write_text("mirrors: [not, a, mapping\n")
    result = run_k3py(
        "agent", "--server", "https://127.0.0.1:1", "--token", "t", "--data-dir", str(tmp_path / "a"),
        "--registries-config", str(bad),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and str(bad) in result.stderr
    assert "Traceback" not in result.stderr
