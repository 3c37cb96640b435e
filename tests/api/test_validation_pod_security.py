"""Pod security fields at admission: hostUsers (refused: no user namespaces here) and
seccompProfile (upstream's rules), for pods and for the pod templates of workloads."""

from __future__ import annotations

from typing import Any

from tests.api.test_validation import causes, meta, pod


def messages(obj: dict[str, Any]) -> dict[str, str]:
    return {c["field"]: c["message"] for c in causes(obj)}


def test_host_users_false_is_refused_with_a_field_cause() -> None:
    found = causes(pod(hostUsers=False))
    assert [(c["field"], c["reason"]) for c in found] == [("spec.hostUsers", "FieldValueForbidden")]
    assert found[0]["message"].startswith("Forbidden: user namespaces are not supported by this k3py cluster")
    assert causes(pod(hostUsers=True)) == [] and causes(pod()) == []


def test_host_users_false_also_brings_upstreams_host_namespace_rules() -> None:
    found = messages(pod(hostUsers=False, hostNetwork=True, hostPID=True, hostIPC=True))
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert found[f"spec.{key}"] == "Forbidden: when `hostUsers` is false"
    assert "spec.hostUsers" in found


def test_templates_are_refused_too() -> None:
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("d"),
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"hostUsers": False, "containers": [{"name": "c", "image": "nginx"}]}}},
    }  # fmt: skip
    assert "spec.template.spec.hostUsers" in messages(deployment)


def test_seccomp_profiles_follow_upstream_validation() -> None:
    def container(profile: Any) -> dict[str, Any]:
        return pod(containers=[{"name": "c", "image": "nginx", "securityContext": {"seccompProfile": profile}}])

    for ok in ({"type": "RuntimeDefault"}, {"type": "Unconfined"}, {"type": "Localhost", "localhostProfile": "a/b.json"}):
        assert causes(container(ok)) == [], ok
        assert causes(pod(securityContext={"seccompProfile": ok})) == [], ok
    prefix = "spec.containers[0].securityContext.seccompProfile"
    assert messages(container({"type": "Sometimes"})) == {
        f"{prefix}.type": 'Unsupported value: "Sometimes": supported values: "Localhost", "RuntimeDefault", "Unconfined"'
    }
    assert messages(container({"localhostProfile": "x.json"}))[f"{prefix}.type"] == (
        "Required value: type is required when seccompProfile is set"
    )
    assert messages(container({"type": "Localhost"})) == {
        f"{prefix}.localhostProfile": "Required value: must be set when seccomp type is Localhost"
    }
    # The profile names a file below the kubelet's seccomp dir: no way out of it.
    assert messages(container({"type": "Localhost", "localhostProfile": "../../etc/shadow"})) == {
        f"{prefix}.localhostProfile": "Invalid value: \"../../etc/shadow\": must not contain '..'"
    }
    assert messages(pod(securityContext={"seccompProfile": {"type": "Localhost", "localhostProfile": "/etc/x"}})) == {
        "spec.securityContext.seccompProfile.localhostProfile": 'Invalid value: "/etc/x": must be a relative path'
    }
    wrong = messages(container({"type": "RuntimeDefault", "localhostProfile": "x.json"}))
    assert wrong[f"{prefix}.localhostProfile"].endswith("can only be set when seccomp type is Localhost")


def test_objects_stored_before_the_refusal_still_take_updates() -> None:
    """Ratcheting: a pod that already had hostUsers: false (an older k3py stored it) can still
    get status writes; a new hostUsers: false on an update is refused."""
    stored = pod(hostUsers=False)
    updated = pod(hostUsers=False)
    updated["status"] = {"phase": "Running"}
    assert causes(updated, old=stored) == []
    assert "spec.hostUsers" in [c["field"] for c in causes(pod(hostUsers=False), old=pod())]
