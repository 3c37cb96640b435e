"""Which seccomp profile the kubelet asks the runtime for (podspec.seccomp_profile)."""

from __future__ import annotations

from typing import Any

import pytest

from k3py.agent.kubelet.podspec import ContainerConfigError, seccomp_profile
from k3py.runtime.spec import SecurityProfile

ROOT = "/var/lib/k3py/agent/seccomp"


def pick(pod_profile: Any = None, container_profile: Any = None, default: bool = False, **security: Any) -> SecurityProfile:
    pod = {"spec": {"securityContext": {"seccompProfile": pod_profile} if pod_profile else {}}}
    container = {"name": "c", "securityContext": {**security, **({"seccompProfile": container_profile} if container_profile else {})}}
    return seccomp_profile(pod, container, seccomp_default=default, profile_root=ROOT)


def test_container_over_pod_over_the_node_default() -> None:
    assert pick() == SecurityProfile("Unconfined")
    assert pick(default=True) == SecurityProfile("RuntimeDefault")
    assert pick({"type": "RuntimeDefault"}) == SecurityProfile("RuntimeDefault")
    assert pick({"type": "RuntimeDefault"}, {"type": "Unconfined"}, default=True) == SecurityProfile("Unconfined")
    assert pick(None, {"type": "Localhost", "localhostProfile": "profiles/no-mkdir.json"}) == SecurityProfile(
        "Localhost", f"{ROOT}/profiles/no-mkdir.json"
    )


def test_privileged_containers_are_unconfined() -> None:
    assert pick({"type": "RuntimeDefault"}, default=True, privileged=True) == SecurityProfile("Unconfined")


@pytest.mark.parametrize("name", ["../../../etc/shadow", "/etc/shadow", "a/../../b", ""])
def test_localhost_profiles_never_leave_the_seccomp_dir(name: str) -> None:
    with pytest.raises(ContainerConfigError, match="localhostProfile"):
        pick(None, {"type": "Localhost", "localhostProfile": name})
